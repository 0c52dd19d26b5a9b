"""CDR lookup latency per recording against a large FreePBX `cdr` table in a real MariaDB,
side by side with one bare indexed SELECT by uniqueid (the floor any lookup pays).
Usage: scripts/bench cdr [ROWS]. Prints figures; asserts nothing."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.cdr import CdrQuery  # noqa: E402
from agent.cdr.mysql import MysqlCdr  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

BATCH = 5000
SAMPLES = 2000
COLUMNS = (
    "calldate",
    "clid",
    "src",
    "dst",
    "cnum",
    "cnam",
    "uniqueid",
    "linkedid",
    "recordingfile",
    "did",
    "disposition",
    "duration",
    "billsec",
    "sequence",
)


def fill(db: MariaDB, rows: int, rng: random.Random) -> list[tuple[datetime, str, str]]:
    """`rows` CDR rows over a year: calls of 1-3 legs sharing a linkedid, the first leg
    naming the recording. Returns (start, uniqueid, recordingfile) of every call."""
    calls = []
    start = datetime(2025, 1, 1)
    marks = ", ".join(["%s"] * len(COLUMNS))
    sql = f"INSERT INTO cdr ({', '.join(COLUMNS)}) VALUES ({marks})"
    batch: list[tuple[object, ...]] = []
    with db.connect("asteriskcdrdb") as conn, conn.cursor() as cur:
        n = 0
        while n < rows:
            at = start + timedelta(seconds=n * 31_536_000 // rows)
            uid = f"{int(at.timestamp())}.{n}"
            caller = f"2125{rng.randrange(10**6):06d}"
            name = f"in-600-{caller}-{at:%Y%m%d-%H%M%S}-{uid}.wav"
            calls.append((at, uid, name))
            for leg in range(rng.choice((1, 1, 2, 3))):
                leg_uid = f"{int(at.timestamp())}.{n}"  # the first leg's is the call's
                batch.append(
                    (
                        at + timedelta(seconds=leg),
                        f'"Caller {n}" <{caller}>',
                        caller,
                        "600",
                        caller,
                        f"Caller {n}",
                        leg_uid,
                        uid,
                        name if leg == 0 else "",
                        "2125550100",
                        "ANSWERED",
                        60,
                        55,
                        leg,
                    )
                )
                n += 1
            if len(batch) >= BATCH:
                cur.executemany(sql, batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
        cur.execute("ANALYZE TABLE cdr")
    return calls


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100)
    return f"{statistics.median(ms):8.2f}{q[94]:8.2f}{q[98]:8.2f}"


def timed(fn: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(7)
    with MariaDB() as db:
        db.start()
        db.create_freepbx_cdr()
        db.create_user("recsync", "bench")
        began = time.perf_counter()
        calls = fill(db, rows, rng)
        print(
            f"cdr table: {rows} rows, {len(calls)} calls, filled in "
            f"{time.perf_counter() - began:.0f} s (MariaDB, FreePBX indexes)"
        )
        source = MysqlCdr(
            host="localhost",
            port=0,
            socket=db.socket,
            user="recsync",
            password="bench",
            database="asteriskcdrdb",
            table="cdr",
        )
        picks = [rng.choice(calls) for _ in range(SAMPLES)]

        def query(at: datetime, uid: str, name: str, *, by_file: bool) -> CdrQuery:
            files = (name,) if by_file else ("not-in-the-cdr.wav",)
            return CdrQuery(
                recordingfiles=files, uniqueid=uid, started_at=at.astimezone(), src=None, dst="600"
            )

        found = iter([query(*p, by_file=True) for p in picks])
        by_uid = iter([query(*p, by_file=False) for p in picks])
        missing = iter([query(at, uid + "9", "x.wav", by_file=False) for at, uid, _ in picks])
        assert source.lookup(query(*picks[0], by_file=True)) is not None
        conn = db.connect("asteriskcdrdb", user="recsync", password="bench")
        uids = iter([p[1] for p in picks])

        def bare() -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM cdr WHERE uniqueid = %s", (next(uids),))
                cur.fetchall()

        print(f"{'lookup (ms per recording)':44}{'p50':>8}{'p95':>8}{'p99':>8}")
        for label, fn in [
            ("recsync: by recordingfile (+ linkedid group)", lambda: source.lookup(next(found))),
            ("recsync: by uniqueid (+ linkedid group)", lambda: source.lookup(next(by_uid))),
            ("recsync: not there yet (all steps miss)", lambda: source.lookup(next(missing))),
            ("baseline: one bare SELECT by uniqueid", bare),
        ]:
            print(f"{label:44}{percentiles(timed(fn, SAMPLES))}")
        conn.close()
        source.close()


if __name__ == "__main__":
    main()
