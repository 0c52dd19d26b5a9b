"""`recsync doctor`: one line per dependency, ✓ or ✗ with what to do; non-zero on any ✗."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result

from agent.cli import cli
from tests.conftest import Site
from tests.support.mariadb import MariaDB


def doctor(config: Path) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "doctor"])


def lines(result: Result) -> dict[str, str]:
    """check name -> its line, for the ✓/✗ lines."""
    return {line.split(":")[0][2:]: line for line in result.output.splitlines() if line[:1] in "✓✗"}


def test_healthy_site_passes_every_check(site: Site) -> None:
    result = doctor(site.write_config())
    assert result.exit_code == 0, result.output
    assert set(lines(result)) == {"config", "spool", "state", "cdr", "destination"}
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
