"""`recsync doctor`: walk every dependency and say for each what is wrong and what to do."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.cdr import open_source
from agent.cdr.freepbx import read_ini
from agent.config import Config
from agent.errors import AgentError
from agent.media.transcode import ffmpeg_formats
from agent.service_unit import UNIT, Sandbox, writable_folders
from agent.spool.settle import open_files_under
from agent.transport import open_transport, s3_transport
from agent.transport.s3 import S3Transport
from agent.transport.s3survey import Support, clock_skew, survey


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    advice: list[str] = field(default_factory=list)
    warning: bool = False  # passed, but something an admin should fix (shown as "!")


def check_spool(config: Config) -> Check:
    path = config.spool.path
    if not path.is_dir():
        return Check(
            "spool",
            False,
            f"{path} is not a folder (spool.path; FreePBX's"
            " 'Override Call Recording Location' may have moved it)",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        return Check("spool", False, f"{path} is not readable by this user (uid {os.getuid()})")
    return Check("spool", True, f"{path} readable")


def check_spool_location(config: Config) -> Check:
    """FreePBX records under Asterisk's astspooldir/monitor unless an admin moved it."""
    asterisk_conf = config.cdr.asterisk_conf_dir / "asterisk.conf"
    try:
        spooldir = read_ini(asterisk_conf, section="directories").get("astspooldir")
    except OSError:
        return Check("recording location", True, f"{asterisk_conf} not found: not checked")
    if not spooldir:
        return Check("recording location", True, f"{asterisk_conf} sets no astspooldir")
    monitor = Path(spooldir) / "monitor"
    if monitor.resolve() == config.spool.path.resolve():
        return Check("recording location", True, f"spool.path is Asterisk's {monitor}")
    return Check(
        "recording location",
        True,
        f"spool.path {config.spool.path} is not Asterisk's {monitor}",
        [
            f"if FreePBX records to {monitor}, set spool.path to it (or"
            " check Advanced Settings > Override Call Recording Location)"
        ],
    )


def check_open_files(config: Config) -> Check:
    """Can the "is Asterisk still writing it" check see Asterisk's open files?"""
    if not config.spool.path.is_dir():
        return Check("open-file check", True, "not checked (no spool)")
    if open_files_under(config.spool.path) is None:
        return Check(
            "open-file check",
            False,
            f"cannot read the Asterisk process's open files (/proc/PID/fd) as uid {os.getuid()}",
            [
                "run recsync as the asterisk user (the package's service does); until"
                " then, finished recordings also wait a quiet period"
            ],
        )
    return Check("open-file check", True, "sees which spool files a process holds open")


def check_service(config: Config) -> Check:
    """Can the installed service write what the config names? Its sandbox decides, not
    this shell's permissions."""
    sandbox = Sandbox.load()
    if sandbox is None:
        return Check("service", True, f"no {UNIT} installed: not checked")
    folders = writable_folders(config)
    refused = [(key, folder, r) for key, folder in folders if (r := sandbox.refuses(folder))]
    if not refused:
        shown = ", ".join(dict.fromkeys(str(folder) for _, folder in folders))
        return Check("service", True, f"{UNIT} may write {shown}")
    advice = []
    if any(refusal.fixable for _, _, refusal in refused):
        advice.append(
            "sudo recsync unit-paths --install  (a drop-in opening them), then"
            " sudo systemctl restart recsync"
        )
    detail = "; ".join(f"{key} {folder} is {r.reason}" for key, folder, r in refused)
    return Check("service", False, detail, advice)


def check_transcode(config: Config) -> Check:
    if config.transcode.format == "none":
        return Check("transcode", True, "off (recordings ship in their own format)")
    wanted = f"{config.transcode.format} at {config.transcode.bitrate} kbit/s"
    needing = ffmpeg_formats(config.spool.extensions)
    if not needing:
        return Check("transcode", True, wanted)
    found = shutil.which("ffmpeg")
    if found is not None:
        return Check("transcode", True, f"{wanted}; {', '.join(needing)} through {found}")
    return Check(
        "transcode",
        False,
        f"{wanted}, but ffmpeg is not installed: {', '.join(needing)} recordings"
        " (spool.extensions) would ship unconverted",
        ["apt-get install ffmpeg  (or remove those from spool.extensions)"],
    )


def check_webhook(config: Config) -> Check:
    url = config.webhook.url
    if url is None:
        return Check("webhook", True, "not configured")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            pass
    except OSError as exc:
        return Check("webhook", False, f"cannot connect to {parts.hostname}:{port}: {exc}")
    return Check("webhook", True, f"{parts.scheme}://{parts.hostname}:{port} accepts connections")


def check_state(config: Config) -> Check:
    path = config.state.path
    if not path.exists():
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        if os.access(folder, os.W_OK):
            return Check("state", True, f"{path} will be created at the first run")
        return Check("state", False, f"{path} does not exist and {folder} is not writable")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
            count = conn.execute("SELECT count(*) FROM recordings").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check("state", False, f"{path}: {exc}")
    if result[0] != "ok":
        return Check("state", False, f"{path} is damaged: {result[0]}")
    return Check("state", True, f"{path} ({count} recordings)")


def check_cdr(config: Config) -> Check:
    # A scratch folder for what a store keeps (the CSV index): doctor, often run as
    # root, leaves nothing in the state folder the agent could not write.
    with tempfile.TemporaryDirectory(prefix="recsync-doctor-") as scratch:
        return _check_cdr(config, Path(scratch))


def _check_cdr(config: Config, scratch: Path) -> Check:
    try:
        source = open_source(config.cdr, state_folder=scratch)
    except AgentError as exc:
        return Check("cdr", False, str(exc))
    if source is None:
        why = (
            "caller ID off"
            if config.cdr.type == "none"
            else (
                f"no FreePBX configuration at {config.cdr.freepbx_conf} or"
                f" {config.cdr.amportal_conf}: caller ID off (set cdr.type to choose a source)"
            )
        )
        return Check("cdr", True, f"{config.cdr.type}: {why}")
    try:
        return Check("cdr", True, source.check(), source.advice())
    except AgentError as exc:
        return Check("cdr", False, str(exc))
    finally:
        source.close()


def check_destination(config: Config) -> Check:
    transport = open_transport(config.destination)
    try:
        transport.probe()
        features = transport.features  # after the probe: some are learned at connect
    except AgentError as exc:
        return Check("destination", False, str(exc))
    finally:
        transport.close()
    where = f"{config.destination.type} {config.destination.where}"
    return Check("destination", True, f"{where} writable; {features.describe()}")


SKEW_WARN = 60.0  # seconds off: recording times in logs and manifests disagree with the server
SKEW_FAIL = 900.0  # S3 refuses a request signed more than 15 minutes off the server's clock
NTP_ADVICE = "timedatectl status  (NTP on: timedatectl set-ntp true)"


def check_s3(config: Config) -> list[Check]:
    """What the S3 server makes of recsync's headers, asked with a probe object; and the
    clock, which SigV4 needs within 15 minutes of the server's. S3 destinations only."""
    if config.destination.type != "s3":
        return []
    transport = s3_transport(config.destination)
    try:
        checks = [check_clock(transport)]
        try:
            support = survey(transport)
        except AgentError as exc:
            return [*checks, Check("s3 server", False, f"not surveyed: {exc}")]
        return [*checks, *support_checks(support, object_tags=config.destination.object_tags)]
    finally:
        transport.close()


def check_clock(transport: S3Transport) -> Check:
    try:
        skew = clock_skew(transport)
    except AgentError as exc:
        return Check("s3 clock", False, str(exc))
    if skew is None:
        return Check("s3 clock", True, "the server sends no Date: not compared")
    side = "behind" if skew > 0 else "ahead of"
    off = f"this machine's clock is {abs(skew):.0f} s {side} the server's"
    if abs(skew) > SKEW_FAIL:
        return Check("s3 clock", False, f"{off}: S3 refuses requests 15 min off", [NTP_ADVICE])
    if abs(skew) > SKEW_WARN:
        return Check("s3 clock", True, f"{off} (refused past 15 min)", [NTP_ADVICE], warning=True)
    return Check("s3 clock", True, f"within {SKEW_WARN:.0f} s of the server's ({round(skew):+d} s)")


def support_checks(support: Support, *, object_tags: bool) -> list[Check]:
    return [
        Check("s3 checksum", True, _checksum_detail(support)),
        Check(
            "s3 conditional write",
            True,
            "If-None-Match: * refused on an existing key: two agents cannot both claim the prefix"
            if support.conditional
            else "If-None-Match: * ignored: the owner check reads status.json, so start no"
            " second agent on this prefix",
        ),
        _tagging(support, object_tags=object_tags),
    ]


def _checksum_detail(support: Support) -> str:
    sha = {
        "verified": "x-amz-checksum-sha256 verified (a wrong one is refused)",
        "stored": "x-amz-checksum-sha256 stored, not verified (a wrong one is kept)",
        "ignored": "x-amz-checksum-sha256 ignored",
    }[support.checksum]
    if support.checksum == "verified":
        return sha + ("; Content-MD5 verified" if support.md5 else "")
    if support.md5:
        return f"{sha}: Content-MD5 is the check"
    return f"{sha}, and Content-MD5 is not verified either: the ETag read back is the check"


def _tagging(support: Support, *, object_tags: bool) -> Check:
    if support.tagging:
        return Check("s3 tagging", True, "kept (x-amz-tagging, read back with ?tagging)")
    if object_tags:
        return Check(
            "s3 tagging",
            True,
            "not kept, but destination.object_tags is on",
            ["set destination.object_tags = false"],
            warning=True,
        )
    return Check("s3 tagging", True, "not kept (destination.object_tags is off)")


# The checks of what every destination shares (the spool, the CDR, the service, the
# webhook: only the first destination sends it), then those each destination answers
# for itself with its own config (Config.for_destination): its state, the server, codec.
SHARED: tuple[Callable[[Config], Check | list[Check]], ...] = (
    check_spool,
    check_spool_location,
    check_open_files,
    check_cdr,
    check_service,
    check_webhook,
)
PER_DESTINATION: tuple[Callable[[Config], Check | list[Check]], ...] = (
    check_state,
    check_destination,
    check_s3,
    check_transcode,
)


def run_checks(config: Config, *, only: str | None = None) -> Iterator[tuple[str | None, Check]]:
    """(None, check) for the shared checks, then (destination name, check) for each
    destination's (`only`: that one's)."""
    for check in SHARED:
        for result in _each(check(config)):
            yield None, result
    names = list(config.destinations) if only is None else [only]
    for name in names:
        own = config.for_destination(name)
        for check in PER_DESTINATION:
            for result in _each(check(own)):
                yield name, result


def _each(result: Check | list[Check]) -> list[Check]:
    return [result] if isinstance(result, Check) else result
