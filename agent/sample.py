"""A realistic sample spool and CDR for the demo: `python -m agent.sample SPOOL_DIR CDR_DB`.

FreePBX 12-17 recordings under YYYY/MM/DD, a few 2.x names in the flat root, an
unanswered call (header only), Monitor() leg halves and a name no pattern knows; CDR rows
(SQLite, FreePBX's columns) for all modern calls but one, which ships with cdr "missing".
"""

from __future__ import annotations

import math
import os
import sqlite3
import struct
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from agent.spool.wavheader import wav_header

RATE = 8000


def tone(seconds: float, hz: float) -> bytes:
    """16-bit mono PCM: a quiet tone, so the demo files are playable and distinct."""
    count = int(seconds * RATE)
    return b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / RATE))) for i in range(count)
    )


def write_wav(path: Path, audio: bytes, ended_at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header("wav", len(audio)) + audio)
    os.utime(path, (ended_at, ended_at))


# kind, dst, src (as the file name has them), caller name in the CDR (None: no CDR row).
CALLS = [
    ("out", "18005551234", "1001", "Front Desk"),
    ("in", "2125550100", "2125550199", "Bob Buyer"),
    ("in", "s", "+441632960001", "Pat O'Brien <UK>"),
    ("q", "600", "2125550142", "Dana Customer"),
    ("rg", "601", "unknown", None),
    ("internal", "1002", "1001", "Front Desk"),
    ("external", "15555550123", "1003", "Sales 3"),
    ("ondemand", "1004", "1001", "Front Desk"),
]


def call_name(n: int, at: datetime) -> str:
    kind, dst, src, _ = CALLS[n]
    return f"{kind}-{dst}-{src}-{at:%Y%m%d-%H%M%S}-{int(at.timestamp())}.{40 + n}.wav"


def make_cdr(path: Path, now: float | None = None) -> int:
    """The CDR rows of the sample calls, as FreePBX would write them; returns how many."""
    start = _start(now)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS cdr (calldate TEXT, clid TEXT, src TEXT, dst TEXT,"
            " cnum TEXT, cnam TEXT, did TEXT, uniqueid TEXT, linkedid TEXT,"
            " recordingfile TEXT, disposition TEXT, duration INTEGER, billsec INTEGER,"
            " sequence INTEGER)"
        )
        rows = 0
        for n, (kind, dst, src, name) in enumerate(CALLS):
            if name is None:
                continue
            at = start + timedelta(minutes=17 * n)
            uid = f"{int(at.timestamp())}.{40 + n}"
            number = "2125550100" if src in ("unknown", "s") else src
            conn.execute(
                "INSERT INTO cdr VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f"{at:%Y-%m-%d %H:%M:%S}",
                    f'"{name}" <{number}>',
                    number,
                    dst,
                    number,
                    name,
                    dst if kind == "in" else "",
                    uid,
                    uid,
                    call_name(n, at),
                    "ANSWERED",
                    95,
                    90,
                    n,
                ),
            )
            rows += 1
    conn.close()
    return rows


def _start(now: float | None) -> datetime:
    now = time.time() if now is None else now
    return datetime.fromtimestamp(now).replace(microsecond=0) - timedelta(hours=3)


def make_spool(spool: Path, now: float | None = None) -> list[Path]:
    """Write the sample spool; return the files written."""
    start = _start(now)
    written = []
    for n in range(len(CALLS)):
        at = start + timedelta(minutes=17 * n)
        path = spool / at.strftime("%Y/%m/%d") / call_name(n, at)
        write_wav(path, tone(1.5 + n % 3, 300 + 40 * n), at.timestamp() + 90)
        written.append(path)
    legacy_at = start - timedelta(minutes=30)
    stamp, epoch = f"{legacy_at:%Y%m%d-%H%M%S}", int(legacy_at.timestamp())
    for name in (
        f"OUT201-{stamp}-{epoch}.123.wav",  # FreePBX 2.3-2.9 outbound
        f"{stamp}-{epoch}.124.wav",  # 2.3-2.9 inbound: no prefix
        f"OUT-000-4178575309-{stamp}-{epoch}.125.wav",  # the DISA dialplan
    ):
        write_wav(spool / name, tone(1.0, 440), epoch + 60.0)
        written.append(spool / name)
    day = spool / start.strftime("%Y/%m/%d")
    unanswered = day / f"out-18005550000-1001-{start:%Y%m%d-%H%M%S}-{int(start.timestamp())}.90.wav"
    write_wav(unanswered, b"", start.timestamp() + 30)
    for leg in ("in", "out"):
        write_wav(day / f"monitor-call-1001-{leg}.wav", tone(1.0, 500), start.timestamp() + 60)
    mystery = day / "voicemail-greeting-copy.wav"
    write_wav(mystery, tone(1.0, 600), start.timestamp())
    return [
        *written,
        unanswered,
        day / "monitor-call-1001-in.wav",
        day / "monitor-call-1001-out.wav",
        mystery,
    ]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m agent.sample SPOOL_DIR CDR_DB")
    now = time.time()
    files = make_spool(Path(sys.argv[1]), now)
    rows = make_cdr(Path(sys.argv[2]), now)
    print(f"wrote {len(files)} sample recordings under {sys.argv[1]}, {rows} CDR rows")


if __name__ == "__main__":
    main()
