"""`recsync keygen` and `recsync trust-host`: the two steps an admin takes before SFTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from agent.cli import cli
from tests.conftest import Site
from tests.support.sshd import Sshd
from tests.test_destinations import write_toml


def sftp_config(site: Site, sshd: Sshd, **destination: str) -> Path:
    table = sshd.destination(sshd.root, **destination)
    return site.write_config(destination=table)


def test_keygen_makes_a_private_key_once(site: Site, sshd: Sshd) -> None:
    key = site.root / "keys" / "id_ed25519"
    config = sftp_config(site, sshd, key_file=str(key))
    first = CliRunner().invoke(cli, ["--config", str(config), "keygen"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("ssh-ed25519 ")
    assert key.stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(cli, ["--config", str(config), "keygen"])
    assert again.exit_code == 0
    assert again.stdout == first.stdout  # not overwritten: the same public key
    assert "not overwritten" in again.stderr


def test_trust_host_asks_and_writes_only_when_told(site: Site, sshd: Sshd) -> None:
    known = site.root / "known_hosts"
    config = sftp_config(site, sshd, known_hosts=str(known))
    refused = CliRunner().invoke(cli, ["--config", str(config), "trust-host"], input="n\n")
    assert refused.exit_code != 0
    assert "SHA256:" in refused.output and not known.exists()
    accepted = CliRunner().invoke(cli, ["--config", str(config), "trust-host"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert known.read_text().split()[0] == f"[{sshd.host}]:{sshd.port}"


def test_trust_host_warns_about_a_changed_key(site: Site, sshd: Sshd) -> None:
    known = site.root / "known_hosts"
    other = site.root / "other.pub"
    other.write_text(sshd.client_key.with_suffix(".pub").read_text())  # any other ed25519 key
    known.write_text(f"[{sshd.host}]:{sshd.port} " + " ".join(other.read_text().split()[:2]))
    config = sftp_config(site, sshd, known_hosts=str(known))
    result = CliRunner().invoke(cli, ["--config", str(config), "trust-host", "--yes"])
    assert result.exit_code == 0, result.output
    assert "DIFFERENT key" in result.output
    assert known.read_text().count(f"[{sshd.host}]:{sshd.port}") == 1  # replaced, not added


def test_trust_host_refuses_a_local_destination(site: Site) -> None:
    result = CliRunner().invoke(cli, ["--config", str(site.write_config()), "trust-host"])
    assert result.exit_code != 0 and "'sftp'" in result.output


# --- several destinations: --destination names the SFTP one ------------------------------


def local_then_sftp(site: Site, sshd: Sshd, **archive: str) -> Path:
    """The site's local destination first, then [destination.archive] on the sshd."""
    data: dict[str, Any] = site.data()
    data["destination"]["archive"] = sshd.destination(sshd.root, **archive)
    return write_toml(site.config_path, data)


def recsync(config: Path, *args: str, given: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=given)


def test_trust_host_at_a_named_destination(site: Site, sshd: Sshd) -> None:
    known = site.root / "archive_known_hosts"
    config = local_then_sftp(site, sshd, known_hosts=str(known))
    first = recsync(config, "trust-host", "--yes")
    assert first.exit_code != 0 and not known.exists()
    assert "destination.type is 'local': this is for 'sftp'" in first.output
    assert "sftp destinations: archive (--destination NAME)" in first.output
    named = recsync(config, "trust-host", "--destination", "archive", "--yes")
    assert named.exit_code == 0, named.output
    assert known.read_text().split()[0] == f"[{sshd.host}]:{sshd.port}"
    assert f"trusted: {known}" in named.output


def test_keygen_at_a_named_destination(site: Site, sshd: Sshd) -> None:
    key = site.root / "keys" / "archive_ed25519"
    config = local_then_sftp(site, sshd, key_file=str(key))
    made = recsync(config, "keygen", "--destination", "archive")
    assert made.exit_code == 0, made.output
    assert made.stdout.startswith("ssh-ed25519 ") and key.exists()
    assert f"wrote {key}" in made.stderr
    local = recsync(config, "keygen", "--destination", "default")
    assert local.exit_code != 0
    assert "destination.type is 'local': this is for 'sftp'" in local.output


def test_ssh_commands_name_the_destinations_when_one_is_unknown(site: Site, sshd: Sshd) -> None:
    config = local_then_sftp(site, sshd)
    for args in (["trust-host", "--yes"], ["keygen"]):
        result = recsync(config, *args, "--destination", "web")
        assert result.exit_code != 0
        assert "no destination named 'web' (configured: default, archive)" in result.output
