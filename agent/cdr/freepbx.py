"""What a stock FreePBX tells about its CDR: database credentials and CDR batch mode.

The PHP and Asterisk files are read as text, never executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# $amp_conf['AMPDBPASS'] = 'se\'cret';  (single or double quotes, backslash escapes)
_PHP_ASSIGNMENT = re.compile(
    r"""\$amp_conf\[\s*(['"])(?P<key>\w+)\1\s*\]\s*=\s*"""
    r"""(?:'(?P<single>(?:[^'\\]|\\.)*)'|"(?P<double>(?:[^"\\]|\\.)*)"|(?P<bare>[\w.\-]+))\s*;"""
)
_PHP_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_PHP_LINE_COMMENT = re.compile(r"^\s*(//|#)")
_INI_LINE = re.compile(r"^\s*(?P<key>[\w.]+)\s*=>?\s*(?P<value>.*?)\s*$")


@dataclass(frozen=True)
class FreePBXDatabase:
    """FreePBX's own database login (AMPDB*), which it also uses for the CDR by default."""

    user: str
    password: str = field(repr=False)
    host: str = "localhost"
    port: int = 3306
    socket: str | None = None
    source: Path | None = None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def read_php_conf(path: Path) -> dict[str, str]:
    """The `$amp_conf[...] = ...;` assignments of /etc/freepbx.conf."""
    text = _PHP_BLOCK_COMMENT.sub("", path.read_text(errors="replace"))
    code = "\n".join(line for line in text.splitlines() if not _PHP_LINE_COMMENT.match(line))
    values = {}
    for match in _PHP_ASSIGNMENT.finditer(code):
        raw = match["single"] if match["single"] is not None else match["double"]
        values[match["key"]] = _unescape(raw) if raw is not None else match["bare"]
    return values


def read_ini(path: Path, section: str | None = None) -> dict[str, str]:
    """`key=value` (or Asterisk's `key => value`) lines, `;`/`#` comments, optionally
    only those of one `[section]`."""
    values: dict[str, str] = {}
    current: str | None = None
    for line in path.read_text(errors="replace").splitlines():
        line = line.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and "]" in line:
            current = line[1 : line.index("]")].strip()
            continue
        match = _INI_LINE.match(line)
        if match and (section is None or current == section):
            values[match["key"]] = match["value"].strip("'\"")
    return values


def find_database(freepbx_conf: Path, amportal_conf: Path) -> FreePBXDatabase | None:
    """FreePBX's database login from /etc/freepbx.conf, else /etc/amportal.conf."""
    for path, reader in ((freepbx_conf, read_php_conf), (amportal_conf, read_ini)):
        try:
            conf = reader(path)
        except OSError:
            continue
        if conf.get("AMPDBUSER"):
            port = conf.get("AMPDBPORT", "")
            return FreePBXDatabase(
                user=conf["AMPDBUSER"],
                password=conf.get("AMPDBPASS", ""),
                host=conf.get("AMPDBHOST") or "localhost",
                port=int(port) if port.isdigit() else 3306,
                socket=conf.get("AMPDBSOCK") or None,
                source=path,
            )
    return None


def batch_seconds(asterisk_conf_dir: Path) -> float | None:
    """How long CDR batch mode may hold a row (`time`, default 300 s), or None when off.
    FreePBX writes cdr_general_additional.conf; plain Asterisk has cdr.conf."""
    settings: dict[str, str] = {}
    for name in ("cdr.conf", "cdr_general_additional.conf"):  # FreePBX's file wins
        try:
            settings |= read_ini(asterisk_conf_dir / name, section="general")
        except OSError:
            continue
        if name == "cdr_general_additional.conf":  # included without a [general] header
            settings |= read_ini(asterisk_conf_dir / name)
    if settings.get("batch", "no").lower() not in ("yes", "true", "on", "1"):
        return None
    time = settings.get("time", "300")
    return float(time) if time.isdigit() else 300.0
