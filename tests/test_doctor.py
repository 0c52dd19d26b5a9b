"""`recsync doctor`: one line per dependency, ✓ or ✗ with what to do; non-zero on any ✗."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agent.cli import cli
from agent.transport.sshkeys import keygen
from tests.conftest import Site
from tests.support.mariadb import MariaDB
from tests.support.sshd import Sshd
from tests.test_destinations import write_toml


def doctor(config: Path) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "doctor"])


def lines(result: Result) -> dict[str, str]:
    """check name -> its line, for the ✓/✗ lines."""
    return {line.split(":")[0][2:]: line for line in result.output.splitlines() if line[:1] in "✓✗"}


def test_healthy_site_passes_every_check(site: Site) -> None:
    result = doctor(site.write_config())
    assert result.exit_code == 0, result.output
    assert set(lines(result)) == {
        "config",
        "spool",
        "recording location",
        "open-file check",
        "state",
        "cdr",
        "destination",
        "service",
        "transcode",
        "webhook",
    }
    assert all(line.startswith("✓") for line in lines(result).values())
    assert "will be created at the first run" in lines(result)["state"]


def test_each_broken_dependency_is_named(site: Site) -> None:
    site.spool.rmdir()
    site.dest.rmdir()
    result = doctor(site.write_config())
    assert result.exit_code != 0
    got = lines(result)
    assert got["spool"].startswith("✗") and "spool.path" in got["spool"]
    assert got["destination"].startswith("✗") and "does not exist" in got["destination"]
    assert got["state"].startswith("✓")


def test_bad_config_is_reported_not_raised(site: Site) -> None:
    site.config_path.write_text("[spool]\nsettle_seconds = 'soon'\n")
    result = doctor(site.config_path)
    assert result.exit_code != 0
    assert lines(result)["config"].startswith("✗")
    assert "spool.settle_seconds" in result.output


def test_mp3_without_ffmpeg_names_the_formats_it_cannot_convert(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = site.write_config(
        transcode={"format": "mp3"}, spool={"path": str(site.spool), "extensions": ["wav", "WAV"]}
    )
    if shutil.which("ffmpeg") is not None:
        with_ffmpeg = lines(doctor(config))["transcode"]
        assert with_ffmpeg.startswith("✓ transcode: mp3 at 16 kbit/s; WAV through /"), with_ffmpeg
    monkeypatch.setenv("PATH", str(tmp_path / "no-ffmpeg-here"))
    result = doctor(config)
    assert result.exit_code != 0
    line = lines(result)["transcode"]
    assert line.startswith("✗ transcode: mp3 at 16 kbit/s, but ffmpeg is not installed: WAV")
    assert "apt-get install ffmpeg" in result.output
    # Formats converted in-process need no ffmpeg.
    only_wav = site.write_config(
        transcode={"format": "mp3"}, spool={"path": str(site.spool), "extensions": ["wav"]}
    )
    assert lines(doctor(only_wav))["transcode"] == "✓ transcode: mp3 at 16 kbit/s"


def test_log_lines_stay_out_of_the_checks_unless_asked(site: Site, tmp_path: Path) -> None:
    """`cdr.type = "auto"` with no FreePBX logs a warning; the cdr check says it already."""
    missing = str(tmp_path / "no-freepbx.conf")
    config = site.write_config(
        cdr={"type": "auto", "freepbx_conf": missing, "amportal_conf": missing}
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert "no FreePBX configuration" in lines(result)["cdr"]
    assert "event=" not in result.output, result.output
    asked = CliRunner().invoke(cli, ["--config", str(config), "--log-level", "info", "doctor"])
    after_cdr = asked.output.split(lines(asked)["cdr"], 1)[1].splitlines()[1]
    assert after_cdr.startswith("    log: warning event=cdr-auto"), asked.output


def mysql_config(site: Site, db: MariaDB, user: str, password: str) -> Path:
    secret = site.root / f"{user}.pw"
    secret.write_text(password)
    os.chmod(secret, 0o600)
    return site.write_config(
        cdr={"type": "mysql", "socket": db.socket, "user": user, "password_file": str(secret)}
    )


def test_cdr_answers_and_a_powerful_user_gets_the_grant_advice(site: Site, cdr_db: MariaDB) -> None:
    cdr_db.create_user("freepbxuser", "pw", grants="ALL PRIVILEGES")
    result = doctor(mysql_config(site, cdr_db, "freepbxuser", "pw"))
    assert result.exit_code == 0, result.output
    assert lines(result)["cdr"].startswith("✓ cdr: mysql freepbxuser@socket")
    assert "GRANT SELECT ON asteriskcdrdb.* TO 'recsync'@'localhost';" in result.output


def test_cdr_login_refused_is_a_failed_check(site: Site, cdr_db: MariaDB) -> None:
    cdr_db.create_user("recsync", "right")
    result = doctor(mysql_config(site, cdr_db, "recsync", "wrong"))
    assert result.exit_code != 0
    assert lines(result)["cdr"].startswith("✗") and "Access denied" in lines(result)["cdr"]
    assert "wrong" not in result.output  # the password never reaches the output


def sftp_doctor(site: Site, sshd: Sshd, root: Path, **destination: str) -> Result:
    return doctor(site.write_config(destination=sshd.destination(root, **destination)))


def test_sftp_destination_healthy(site: Site, sshd: Sshd, sftp_root: Path) -> None:
    result = sftp_doctor(site, sshd, sftp_root)
    assert result.exit_code == 0, result.output
    assert lines(result)["destination"].startswith("✓ destination: sftp")


@pytest.mark.parametrize(
    ("broken", "hint"),
    [
        ("wrong-key", "authorized_keys"),
        ("unknown-host", "trust-host"),
        ("changed-host", "does not match"),
    ],
)
def test_sftp_destination_broken_says_what_to_do(
    site: Site, sshd: Sshd, sftp_root: Path, broken: str, hint: str
) -> None:
    options: dict[str, str] = {}
    if broken == "wrong-key":
        key = site.root / "not-authorized"
        keygen(key, comment="stranger")
        options["key_file"] = str(key)
    elif broken == "unknown-host":
        options["known_hosts"] = str(site.root / "empty_known_hosts")
    else:  # a known_hosts line for this host and port with another key
        other = site.root / "other"
        public = keygen(other, comment="other").split()
        known = site.root / "changed_known_hosts"
        known.write_text(f"[{sshd.host}]:{sshd.port} {public[0]} {public[1]}\n")
        options["known_hosts"] = str(known)
    result = sftp_doctor(site, sshd, sftp_root, **options)
    assert result.exit_code != 0
    line = lines(result)["destination"]
    assert line.startswith("✗") and hint in line, line


def test_unwritable_remote_root_fails(site: Site, unprivileged_sshd: Sshd) -> None:
    root = unprivileged_sshd.new_dir("doctor-readonly")
    root.chmod(0o555)
    result = sftp_doctor(site, unprivileged_sshd, root)
    assert result.exit_code != 0
    assert lines(result)["destination"].startswith("✗")
    assert "ermission" in lines(result)["destination"]


def test_cdr_database_down_fails_the_cdr_check(site: Site, cdr_db: MariaDB) -> None:
    cdr_db.create_user("recsync", "pw")
    config = mysql_config(site, cdr_db, "recsync", "pw")
    cdr_db.stop()
    try:
        result = doctor(config)
    finally:
        cdr_db.start()
    assert result.exit_code != 0
    assert lines(result)["cdr"].startswith("✗") and "CDR database" in lines(result)["cdr"]


# --- several destinations: each one's checks under its name ----------------------------


def blocks(result: Result) -> dict[str | None, dict[str, str]]:
    """destination name (None: the shared checks) -> check name -> its line."""
    found: dict[str | None, dict[str, str]] = {None: {}}
    block: str | None = None
    for line in result.output.splitlines():
        if line.startswith("destination ") and line.endswith(":"):
            block = line.split()[1]
            found[block] = {}
        elif line[:1] in "✓✗!":
            found[block][line.split(":")[0][2:]] = line
    return found


def with_sftp_archive(site: Site, sshd: Sshd, root: Path, **archive: str) -> Path:
    data: dict[str, Any] = site.data()
    data["destination"]["archive"] = sshd.destination(root, **archive)
    return write_toml(site.config_path, data)


def test_every_destination_is_checked_under_its_name(
    site: Site, sshd: Sshd, sftp_root: Path
) -> None:
    result = doctor(with_sftp_archive(site, sshd, sftp_root))
    assert result.exit_code == 0, result.output
    got = blocks(result)
    assert set(got) == {None, "default", "archive"}
    assert {"config", "spool", "cdr", "service", "webhook"} <= set(got[None])
    for name in ("default", "archive"):
        assert set(got[name]) == {"state", "destination", "transcode"}, got[name]
    assert got["default"]["destination"].startswith("✓ destination: local")
    assert got["archive"]["destination"].startswith("✓ destination: sftp")
    assert "destinations/archive/state.db" in got["archive"]["state"]
    assert f"destination archive (sftp {sshd.user}@{sshd.host}" in result.output


def test_a_failing_second_destination_fails_doctor_and_is_named(
    site: Site, sshd: Sshd, sftp_root: Path
) -> None:
    empty = site.root / "empty_known_hosts"
    empty.write_text("")
    result = doctor(with_sftp_archive(site, sshd, sftp_root, known_hosts=str(empty)))
    assert result.exit_code != 0
    got = blocks(result)
    assert got["default"]["destination"].startswith("✓")
    line = got["archive"]["destination"]
    assert line.startswith("✗") and "trust-host" in line, line
    assert "1 check(s) failed; failing: destination archive" in result.output


def test_destination_option_narrows_doctor_to_one(site: Site, sshd: Sshd, sftp_root: Path) -> None:
    empty = site.root / "empty_known_hosts"
    empty.write_text("")
    config = with_sftp_archive(site, sshd, sftp_root, known_hosts=str(empty))
    result = CliRunner().invoke(
        cli, ["--config", str(config), "doctor", "--destination", "default"]
    )
    assert result.exit_code == 0, result.output
    got = blocks(result)
    assert set(got) == {None, "default"} and "spool" in got[None]
    only = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--destination", "archive"])
    assert only.exit_code != 0 and set(blocks(only)) == {None, "archive"}


def test_an_unknown_destination_names_the_configured_ones(site: Site) -> None:
    config = site.write_config()
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--destination", "nas"])
    assert result.exit_code != 0
    assert "no destination named 'nas' (configured: default)" in result.output


def test_one_destination_has_no_block_header(site: Site) -> None:
    result = doctor(site.write_config())
    assert result.exit_code == 0, result.output
    assert not any(line.startswith("destination ") for line in result.output.splitlines())
