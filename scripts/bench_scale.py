"""Costs that grow with history, each beside a baseline in the same run.

(a) `recsync status` on a state database of ROWS done recordings over 3 years (subprocess
`status --json`, and `agent.status.summary` in-process) vs `SELECT count(*)`;
(b) publishing one dirty day (manifest, day page, root page) in that database with
`agent.publish.site.publish_dirty` to a local folder vs `manifest.day_rows` alone;
(c) `recsync run` start-up with FILES tiny recordings of the last 7 days already shipped
(done rows with matching identities): time to READY=1 on a NOTIFY_SOCKET, and to the end
of the first spool scan (`event=started`), vs `os.scandir` over the same folders.
Usage: scripts/bench scale [ROWS FILES] (1000000 100000). Prints figures; asserts nothing.
"""

from __future__ import annotations

import compileall
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import config as agent_config  # noqa: E402
from agent.publish import manifest, site  # noqa: E402
from agent.spool.wavheader import wav_header  # noqa: E402
from agent.status import summary  # noqa: E402
from agent.store.state import Store  # noqa: E402
from agent.transport.local import LocalTransport  # noqa: E402

DAYS = 1095
REPEATS = 7
COLUMNS = (
    "stem, path, size, mtime_ns, inode, state, attempts, next_attempt_at, kind, dst, src,"
    " started_at, uniqueid, extension, era, pattern, format, remote_path, version, sha256,"
    " shipped_size, seen_at, settled_at, uploaded_at, updated_at, cdr, caller_number,"
    " caller_name, cdr_dst, linkedid, duration, billsec, disposition"
)


def row(n: int, day: date, second: int, size: int, mtime_ns: int, inode: int) -> tuple[object, ...]:
    hh, mm, ss = second // 3600, second // 60 % 60, second % 60
    epoch = datetime(day.year, day.month, day.day, hh, mm, ss).timestamp()
    uid = f"{int(epoch)}.{n}"
    number = f"212555{n % 10000:04d}"
    stem = f"{day:%Y/%m/%d}/in-600-{number}-{day:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{uid}"
    remote = f"{day:%Y/%m/%d}/{hh:02}{mm:02}{ss:02}_in_{number}_to_600_{uid}.wav"
    return (
        stem,
        stem + ".wav",
        size,
        mtime_ns,
        inode,
        "done",
        0,
        epoch,
        "in",
        "600",
        number,
        f"{day:%Y-%m-%d}T{hh:02}:{mm:02}:{ss:02}",
        uid,
        "wav",
        "dated",
        "freepbx",
        "wav",
        remote,
        1,
        f"{n:064x}",
        size,
        epoch,
        epoch,
        epoch + 1,
        epoch + 1,
        "found",
        number,
        "Caller",
        "600",
        uid,
        60,
        55,
        "ANSWERED",
    )


def fill(store: Store, rows: Iterator[tuple[object, ...]], days: dict[str, int]) -> None:
    marks = ",".join("?" * len(COLUMNS.split(",")))
    conn = store.conn
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO recordings ({COLUMNS}) VALUES ({marks})", rows)
    conn.executemany("INSERT OR REPLACE INTO days (day, count) VALUES (?, ?)", days.items())
    conn.execute("COMMIT")


def history(total: int) -> tuple[Iterator[tuple[object, ...]], dict[str, int]]:
    """`total` done rows spread evenly over the DAYS days before today."""
    first = date.today() - timedelta(days=DAYS)
    per_day = {
        f"{first + timedelta(days=d):%Y/%m/%d}": total // DAYS + (d < total % DAYS)
        for d in range(DAYS)
    }

    def rows() -> Iterator[tuple[object, ...]]:
        n = 0
        for d, count in enumerate(per_day.values()):
            day = first + timedelta(days=d)
            for i in range(count):
                yield row(n, day, i * 86400 // count, 960_044, 0, 0)
                n += 1

    return rows(), per_day


def timed(action: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median seconds of `repeats` runs."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def line(label: str, seconds: float, goal: float | None = None) -> None:
    goal_text = f"   goal <= {goal * 1000:.0f} ms" if goal else ""
    print(f"  {label:56}{seconds * 1000:10.1f} ms{goal_text}")


def write_config(work: Path, spool: Path, state: Path) -> Path:
    config = work / "config.toml"
    config.write_text(
        f'[spool]\npath = "{spool}"\n'
        f'[state]\npath = "{state}"\nstaging = "{work / "staging"}"\n'
        '[cdr]\ntype = "none"\n'
        f'[destination]\ntype = "local"\nroot = "{work / "dest"}"\n'
        '[metrics]\nlisten = ""\n'
    )
    return config


def status_and_index(work: Path, total: int) -> None:
    state = work / "big.db"
    config_path = write_config(work, work / "spool", state)
    (work / "spool").mkdir(exist_ok=True)
    began = time.perf_counter()
    store = Store.open(state)
    rows, per_day = history(total)
    fill(store, rows, per_day)
    print(
        f"state database: {total:,} done rows over {DAYS} days, filled in "
        f"{time.perf_counter() - began:.1f} s ({state.stat().st_size / 1e6:.0f} MB)"
    )
    config = agent_config.load(config_path)
    command = [sys.executable, "-m", "agent", "--config", str(config_path), "status", "--json"]
    # Installed, the package is byte-compiled (postinst); without its .pyc files (as under
    # PYTHONDONTWRITEBYTECODE) every run would first compile the agent's sources.
    compileall.compile_dir(ROOT / "agent", quiet=1)

    print("(a) status")
    line(
        "recsync status --json (subprocess, incl. Python start)",
        timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL), 5),
        0.1,
    )
    line(
        "python -c pass (interpreter start alone)",
        timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 5),
    )
    line(
        "agent.status.summary (in-process)", timed(lambda: summary(store, config, time.time())), 0.1
    )
    line(
        "baseline: SELECT count(*) FROM recordings",
        timed(lambda: store.conn.execute("SELECT count(*) FROM recordings").fetchone()),
    )

    day = list(per_day)[-1]
    count = per_day[day]
    transport = LocalTransport(root=work / "dest")

    def publish() -> None:
        store.conn.execute("INSERT OR IGNORE INTO dirty_days (day) VALUES (?)", (day,))
        assert site.publish_dirty(store, transport, time.time(), config.index) == 1

    publish()  # the static files once, as on a running agent
    print(f"(b) index update: one dirty day of {count} rows, pages on")
    line("agent.publish.site.publish_dirty", timed(publish), 0.1)
    line("baseline: manifest.day_rows alone", timed(lambda: list(manifest.day_rows(store, day))))
    store.close()


def startup(work: Path, files: int) -> None:
    spool = work / "spool7"
    state = work / "startup.db"
    config_path = write_config(work, spool, state)
    began = time.perf_counter()
    header = wav_header("wav", 2) + b"\0\0"
    today = date.today()
    days = [today - timedelta(days=d) for d in range(7)]
    folders = []
    values = []
    for d, day in enumerate(days):
        folder = spool / f"{day:%Y/%m/%d}"
        folder.mkdir(parents=True)
        folders.append(folder)
        share = files // 7 + (d < files % 7)
        for i in range(share):
            n = len(values)
            second = i * 86400 // share
            hh, mm, ss = second // 3600, second // 60 % 60, second % 60
            epoch = int(datetime(day.year, day.month, day.day, hh, mm, ss).timestamp())
            name = f"in-600-212555{n % 10000:04d}-{day:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{epoch}.{n}"
            path = folder / f"{name}.wav"
            path.write_bytes(header)
            st = os.stat(path)
            values.append(row(n, day, second, st.st_size, st.st_mtime_ns, st.st_ino))
    store = Store.open(state)
    fill(store, iter(values), {})
    store.set_meta("first_start_at", str(time.time() - 30 * 86400), now=time.time())
    store.close()
    print(
        f"(c) start-up: {files:,} shipped files over 7 days, made in "
        f"{time.perf_counter() - began:.1f} s"
    )

    notify_path = work / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    env = os.environ | {"NOTIFY_SOCKET": str(notify_path)}
    command = [
        sys.executable,
        "-m",
        "agent",
        "--config",
        str(config_path),
        "--log-level",
        "info",
        "run",
    ]
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        ready = time.perf_counter() - began
        assert process.stderr is not None
        for text in process.stderr:
            if "event=started" in text:
                break
        started = time.perf_counter() - began
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        notify.close()
    shipped = sum(1 for _ in (work / "dest").rglob("*.wav")) if (work / "dest").exists() else 0
    line("recsync run: start -> READY=1", ready, 5.0)
    line("recsync run: start -> first spool scan done (event=started)", started, 5.0)
    print(f"  {'files shipped again (should be 0)':56}{shipped:10}")
    line(
        "baseline: os.scandir over the 7 day folders",
        timed(lambda: [list(os.scandir(f)) for f in folders], 3),
    )


def main() -> None:
    total, files = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (1_000_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        status_and_index(Path(tmp), total)
        startup(Path(tmp), files)


if __name__ == "__main__":
    main()
