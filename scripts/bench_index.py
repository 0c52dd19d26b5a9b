"""Rendering cost of the index pages: a day of 5,000 calls and a root of 3 years of days,
each beside a baseline run in the same process: `json.dumps` of the same data, as the day's
manifest.json is written. Usage: .venv/bin/python scripts/bench_index.py [REPEATS].
Prints figures; asserts nothing."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.publish.index import render_day, render_root  # noqa: E402

DAY = "2024/03/15"
CALLS = 5000
DAYS = 1095
KINDS = ["in", "out", "internal", "q", "rg", "external"]
DISPOSITIONS = ["ANSWERED"] * 8 + ["NO ANSWER", "BUSY", "FAILED"]
NAMES = ["Alice Anders", "Bob Buyer", "Carol Client", "Zoë Ørsted", "", "Müller & Söhne"]
GENERATED = "2024-03-15T23:59:00+00:00"


def day_entries(count: int, rng: random.Random) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for i in range(count):
        seconds = i * 86400 // count
        hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
        kind = rng.choice(KINDS)
        number = f"212555{rng.randrange(10000):04}"
        uid = f"{1710460800 + seconds}.{i}"
        name = f"{kind}-600-{number}-20240315-{hh:02}{mm:02}{ss:02}-{uid}.wav"
        duration = rng.randrange(5, 1800)
        entries.append(
            {
                "file": f"{DAY}/{name}",
                "original": f"2024/03/15/{name}",
                "uniqueid": uid,
                "linkedid": uid,
                "kind": kind,
                "caller_number": number,
                "caller_name": rng.choice(NAMES) or None,
                "dst": "600",
                "did": "2125550199" if kind == "in" else None,
                "started_at": f"2024-03-15T{hh:02}:{mm:02}:{ss:02}+01:00",
                "duration": duration,
                "billsec": max(duration - rng.randrange(0, 30), 0),
                "disposition": rng.choice(DISPOSITIONS),
                "size": duration * 16000 + 44,
                "sha256": f"{rng.getrandbits(256):064x}",
                "format": "wav",
                "cdr": "found",
            }
        )
    return entries


def root_days(count: int, rng: random.Random) -> list[tuple[str, int]]:
    last = date(2024, 3, 15)
    days = [last - timedelta(days=i) for i in range(count)]
    return [(d.strftime("%Y/%m/%d"), rng.randrange(1, 400)) for d in days]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first call, median of the rest) in ms."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times[1:])


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rng = random.Random(1)
    entries = day_entries(CALLS, rng)
    days = root_days(DAYS, rng)
    cases: list[tuple[str, Callable[[], bytes]]] = [
        (
            f"day page, {CALLS:,} calls",
            lambda: render_day(DAY, entries, title="Call recordings", generated_at=GENERATED),
        ),
        (
            f"  baseline: json.dumps of the {CALLS:,} entries",
            lambda: json.dumps(entries, indent=1, ensure_ascii=False).encode(),
        ),
        (
            f"root page, {DAYS:,} days",
            lambda: render_root(days, title="Call recordings", generated_at=GENERATED),
        ),
        (
            f"  baseline: json.dumps of the {DAYS:,} days",
            lambda: json.dumps(days).encode(),
        ),
    ]
    print(f"{'render (ms)':48}{'first':>9}{'median':>9}{'bytes':>11}")
    for label, fn in cases:
        first, median = timed(fn, repeats)
        print(f"{label:48}{first:9.1f}{median:9.1f}{len(fn()):11,}")
    print(f"(first = cold, templates compiled in it; median of {repeats} warm runs)")


if __name__ == "__main__":
    main()
