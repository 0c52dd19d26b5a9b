"""The CDR pieces that need no database: names, caller ID text, FreePBX's files, config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import config as config_module
from agent.cdr import open_source, recordingfile_variants, split_clid, wait_seconds
from agent.cdr.freepbx import batch_seconds, find_database, read_php_conf
from agent.cdr.mysql import MysqlCdr
from agent.errors import ConfigError
from agent.secrets import read_secret


@pytest.mark.parametrize(
    ("basename", "pattern", "variants"),
    [
        ("out-1-2-20240315-101502-1.2.wav", "modern", ["out-1-2-20240315-101502-1.2.wav"]),
        (
            "ondemand-1-2-20240315-101502-1.2.WAV",
            "modern",
            ["ondemand-1-2-20240315-101502-1.2.WAV", "ondemand-1-2-20240315-101502-1.2.wav49"],
        ),
        (
            "800-800-always-20240315-101502-1710497702.42-1710497702.wav",
            "conference-ast13",
            [
                "800-800-always-20240315-101502-1710497702.42-1710497702.wav",
                "800-800-always-20240315-101502-1710497702.42.wav",
            ],
        ),
    ],
)
def test_recordingfile_variants(basename: str, pattern: str, variants: list[str]) -> None:
    assert list(recordingfile_variants(basename, pattern)) == variants


@pytest.mark.parametrize(
    ("clid", "parts"),
    [
        ('"Bob Buyer" <2125550100>', ("Bob Buyer", "2125550100")),
        ("Bob <2125550100>", ("Bob", "2125550100")),
        ('"" <2125550100>', (None, "2125550100")),
        ("2125550100", (None, "2125550100")),
        ('"a "quoted" name" <1>', ('a "quoted" name', "1")),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_split_clid(clid: str | None, parts: tuple[str | None, str | None]) -> None:
    assert split_clid(clid) == parts


FREEPBX_CONF = r"""<?php
$amp_conf['AMPDBUSER'] = 'freepbxuser';
$amp_conf['AMPDBPASS'] = 'pa\'ss;word';
$amp_conf[ "AMPDBHOST" ] = "localhost";
$amp_conf['AMPDBNAME'] = 'asterisk';
$amp_conf['AMPDBENGINE'] = 'mysql';
// $amp_conf['AMPDBUSER'] = 'commented-out-wins-nothing';
require_once('/var/www/html/admin/bootstrap.php');
"""


def test_freepbx_conf_is_read_as_text(tmp_path: Path) -> None:
    conf = tmp_path / "freepbx.conf"
    conf.write_text(FREEPBX_CONF + "/* $amp_conf['AMPDBHOST'] = 'elsewhere'; */\n")
    values = read_php_conf(conf)
    assert values["AMPDBPASS"] == "pa'ss;word"
    found = find_database(conf, tmp_path / "absent")
    assert found is not None
    assert (found.user, found.password, found.host, found.port) == (
        "freepbxuser",
        "pa'ss;word",
        "localhost",
        3306,
    )
    assert "pa'ss" not in repr(found)  # secrets never in reprs


def test_amportal_conf_is_the_fallback(tmp_path: Path) -> None:
    amportal = tmp_path / "amportal.conf"
    amportal.write_text(
        "# old FreePBX\nAMPDBUSER=asteriskuser\nAMPDBPASS=amp109\n"
        "AMPDBHOST=db.local\nAMPDBPORT=3307\n"
    )
    found = find_database(tmp_path / "absent", amportal)
    assert found is not None
    assert (found.user, found.password, found.host, found.port) == (
        "asteriskuser",
        "amp109",
        "db.local",
        3307,
    )
    assert find_database(tmp_path / "absent", tmp_path / "absent2") is None


@pytest.mark.parametrize(
    ("files", "batch"),
    [
        ({}, None),
        ({"cdr_general_additional.conf": "batch=yes\ntime=300\nsize=200\n"}, 300.0),
        ({"cdr_general_additional.conf": "batch=no\n"}, None),
        ({"cdr.conf": "[general]\nenable=yes\nbatch=yes\ntime=45\n"}, 45.0),
        ({"cdr.conf": "[general]\nbatch=yes\n", "cdr_general_additional.conf": "batch=no\n"}, None),
        ({"cdr.conf": "[general]\nbatch => yes ; comment\n"}, 300.0),
    ],
)
def test_cdr_batch_mode(tmp_path: Path, files: dict[str, str], batch: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert batch_seconds(tmp_path) == batch


def cdr_config(tmp_path: Path, **cdr: object) -> config_module.CdrConfig:
    data = {"destination": {"root": "dest"}, "cdr": {"asterisk_conf_dir": str(tmp_path), **cdr}}
    return config_module.from_dict(data, base=tmp_path).cdr


def test_wait_grows_with_batch_mode_unless_set(tmp_path: Path) -> None:
    assert wait_seconds(cdr_config(tmp_path, type="sqlite")) == 120
    (tmp_path / "cdr_general_additional.conf").write_text("batch=yes\ntime=300\n")
    assert wait_seconds(cdr_config(tmp_path, type="sqlite")) == 360
    assert wait_seconds(cdr_config(tmp_path, type="sqlite", wait_seconds=30)) == 30


def test_auto_without_freepbx_behaves_as_none(tmp_path: Path) -> None:
    config = cdr_config(
        tmp_path, freepbx_conf=str(tmp_path / "no"), amportal_conf=str(tmp_path / "no2")
    )
    assert config.type == "auto"
    assert open_source(config) is None


def test_auto_with_freepbx_uses_its_login_and_the_cdr_database(tmp_path: Path) -> None:
    (tmp_path / "freepbx.conf").write_text(FREEPBX_CONF)
    source = open_source(cdr_config(tmp_path, freepbx_conf=str(tmp_path / "freepbx.conf")))
    assert isinstance(source, MysqlCdr)
    assert (source.user, source.database, source.table) == ("freepbxuser", "asteriskcdrdb", "cdr")
    assert source.socket is not None  # "localhost" means the Unix socket, as in PHP


@pytest.mark.parametrize(
    ("cdr", "message"),
    [
        ({"type": "csv", "table": "cdr"}, "cdr.table does not apply to cdr.type = 'csv'"),
        ({"type": "none", "host": "db"}, "cdr.host does not apply"),
        ({"type": "mysql", "table": "cdr; DROP TABLE x"}, "cdr.table: expected a table"),
        ({"type": "mysql", "port": 70000}, "cdr.port"),
        ({"type": "csv", "columns": "start,src"}, "cdr.columns"),
        ({"type": "oracle"}, "cdr.type"),
    ],
)
def test_cdr_keys_are_checked_per_type(
    tmp_path: Path, cdr: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cdr_config(tmp_path, **cdr)


def test_password_file_must_not_be_world_readable(tmp_path: Path) -> None:
    secret = tmp_path / "cdr-password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o640)
    assert read_secret(secret) == "s3cret"
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        read_secret(secret)
