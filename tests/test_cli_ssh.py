"""`recsync keygen` and `recsync trust-host`: the two steps an admin takes before SFTP."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from tests.conftest import Site
from tests.support.sshd import Sshd


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
