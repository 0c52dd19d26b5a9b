"""Memory and CPU of a running agent, each beside a baseline in the same run.

(a) idle: `recsync run` on a state database of ROWS done recordings over 3 years, the
default config (tags, readable names, index pages, metrics on; CDR `auto`, which finds no
FreePBX here), a local destination and an empty spool: VmRSS from READY=1 on, sampled every
second for IDLE seconds (start, end, max), and the CPU time (utime + stime) it used; vs
an idle `python -c "import sqlite3 ..."` that opened the same database and counted its rows.
(b) shipping: N tiny recordings (20 ms of PCM each) over the last DAYS days' folders, shipped
by `recsync run` (not --once) with the same config into an empty state database: VmRSS
every second, at READY=1 and when 10 %, 50 % and 100 % are shipped, and the growth.
Usage: scripts/bench footprint [ROWS N [IDLE [DAYS]]] (100000 100000 60 7): N recordings
over DAYS day folders. Prints figures; asserts nothing.
"""

from __future__ import annotations

import compileall
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scale import fill, history  # noqa: E402

from agent.spool.wavheader import wav_header  # noqa: E402
from agent.store.state import Store  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
STALLED_SECONDS = 120  # (b) gives up when nothing more is shipped for this long
AUDIO = 320  # bytes of 8 kHz 16-bit PCM per recording: 20 ms


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(work: Path, spool: Path, state: Path, days: int = 7) -> Path:
    """The defaults but for where things are (a free port for the metrics, and a
    backfill window of `days`)."""
    config = work / "config.toml"
    config.write_text(
        f'[spool]\npath = "{spool}"\nbackfill_days = {days}\n'
        f'[state]\npath = "{state}"\nstaging = "{work / "staging"}"\n'
        f'[destination]\ntype = "local"\nroot = "{work / "dest"}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    (work / "dest").mkdir(exist_ok=True)
    return config


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    ready_after: float  # seconds from the start to READY=1
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def start_agent(work: Path, config: Path) -> Running:
    """`recsync run` with a NOTIFY_SOCKET; returns once it said READY=1."""
    notify_path = work / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(300)
    log = work / "agent.log"
    command = [sys.executable, "-m", "agent", "--config", str(config), "run"]
    began = time.perf_counter()
    with log.open("wb") as err:
        process = subprocess.Popen(
            command, env=os.environ | {"NOTIFY_SOCKET": str(notify_path)}, stderr=err
        )
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
    except BaseException:
        process.kill()
        raise
    finally:
        notify.close()
        notify_path.unlink()
    return Running(process, time.perf_counter() - began, log)


def sample(pid: int, seconds: float, every: float = 1.0) -> list[int]:
    """VmRSS (KiB) every `every` seconds for `seconds`, the first at once."""
    samples = []
    end = time.monotonic() + seconds
    while True:
        samples.append(rss_kib(pid))
        if time.monotonic() >= end:
            return samples
        time.sleep(min(every, max(0.0, end - time.monotonic())))


def table(rows: list[tuple[str, str]]) -> None:
    for label, value in rows:
        print(f"  {label:58}{value:>14}")


def idle(work: Path, rows: int, seconds: float) -> None:
    work.mkdir()
    state = work / "state.db"
    spool = work / "spool"
    spool.mkdir()
    began = time.perf_counter()
    store = Store.open(state)
    fill(store, *history(rows))
    store.set_meta("first_start_at", str(time.time() - 30 * 86400), now=time.time())
    store.close()
    print(
        f"(a) idle: {rows:,} done rows in the state database (made in "
        f"{time.perf_counter() - began:.1f} s, {state.stat().st_size / 1e6:.0f} MB), empty spool"
    )
    config = write_config(work, spool, state)
    agent = start_agent(work, config)
    try:
        pid = agent.process.pid
        cpu_before = cpu_seconds(pid)
        samples = sample(pid, seconds)
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        agent.stop()

    code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
        " c.execute('SELECT count(*) FROM recordings').fetchone();"
        " print('ok', flush=True); time.sleep(600)"
    )
    baseline = subprocess.Popen(
        [sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert baseline.stdout is not None
        baseline.stdout.readline()
        time.sleep(1)
        baseline_rss = rss_kib(baseline.pid)
    finally:
        baseline.kill()
        baseline.wait()
    table(
        [
            ("recsync run: start -> READY=1", f"{agent.ready_after:.2f} s"),
            ("VmRSS at READY=1", mib(samples[0])),
            (f"VmRSS after {seconds:.0f} s idle", mib(samples[-1])),
            (f"VmRSS max over the {seconds:.0f} s", mib(max(samples))),
            (f"CPU time (utime+stime) over {seconds:.0f} s idle", f"{cpu:.2f} s"),
            ("CPU share of one core", f"{100 * cpu / seconds:.2f} %"),
            ("baseline: python -c 'import sqlite3' + count(*) of the db", mib(baseline_rss)),
        ]
    )


def make_spool(spool: Path, count: int, days: int) -> None:
    """`count` finished 20 ms recordings over the last `days` days' folders."""
    data = wav_header("wav", AUDIO) + bytes(AUDIO)
    today = date.today()
    now = time.time()
    n = 0
    for d in range(days):
        day = today - timedelta(days=d)
        folder = spool / f"{day:%Y/%m/%d}"
        folder.mkdir(parents=True)
        share = count // days + (d < count % days)
        midnight = datetime(day.year, day.month, day.day).timestamp()
        span = min(86400.0, now - 600 - midnight)  # today: calls that ended 10 min ago
        for i in range(share):
            epoch = int(midnight + i * span / share)
            at = datetime.fromtimestamp(epoch)
            name = f"in-600-212555{n % 10000:04d}-{at:%Y%m%d-%H%M%S}-{epoch}.{n}.wav"
            path = folder / name
            path.write_bytes(data)
            os.utime(path, (epoch + 60, epoch + 60))
            n += 1


def shipped_counter(state: Path) -> Callable[[], int]:
    conn: sqlite3.Connection | None = None

    def count() -> int:
        nonlocal conn
        try:
            if conn is None:
                conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
            return int(
                conn.execute("SELECT count(*) FROM recordings WHERE state = 'done'").fetchone()[0]
            )
        except sqlite3.OperationalError:  # not created yet, or busy
            return 0

    return count


def shipping(work: Path, count: int, days: int) -> None:
    work.mkdir()
    spool = work / "spool"
    state = work / "state.db"
    began = time.perf_counter()
    make_spool(spool, count, days)
    print(
        f"(b) shipping: {count:,} recordings of 20 ms over {days} day folders (made in "
        f"{time.perf_counter() - began:.1f} s), empty state database"
    )
    config = write_config(work, spool, state, days + 1)
    shipped = shipped_counter(state)
    agent = start_agent(work, config)
    pid = agent.process.pid
    marks = {10: 0, 50: 0, 100: 0}
    at_ready = rss_kib(pid)
    peak = at_ready
    began = time.monotonic()
    cpu_before = cpu_seconds(pid)
    last_change, last_done = began, 0
    done = 0
    try:
        while done < count:
            time.sleep(1)
            rss = rss_kib(pid)
            peak = max(peak, rss)
            done = shipped()
            for percent, value in marks.items():
                if not value and done * 100 >= percent * count:
                    marks[percent] = rss
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            elif time.monotonic() - last_change > STALLED_SECONDS:
                print(f"  stalled at {done:,} shipped; see {agent.log}")
                break
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(pid) - cpu_before
        after = sample(pid, 10)
    finally:
        agent.stop()
    rows = [
        ("recsync run: start -> READY=1", f"{agent.ready_after:.2f} s"),
        (f"shipped {done:,} in (from READY=1)", f"{elapsed:.0f} s"),
        ("files/s", f"{done / elapsed:.0f}"),
        ("CPU time (utime+stime) while shipping", f"{cpu:.1f} s"),
        ("VmRSS at READY=1", mib(at_ready)),
    ]
    rows += [(f"VmRSS at {p} % shipped", mib(v) if v else "-") for p, v in marks.items()]
    rows += [
        ("VmRSS 10 s after the last one", mib(after[-1])),
        ("VmRSS max", mib(max(peak, *after))),
        ("growth: 100 % shipped - READY=1", mib((marks[100] or after[-1]) - at_ready)),
    ]
    table(rows)


def main() -> None:
    args = [int(a) for a in sys.argv[1:5]]
    rows = args[0] if args else 100_000
    count = args[1] if len(args) > 1 else 100_000
    seconds = args[2] if len(args) > 2 else 60
    days = args[3] if len(args) > 3 else 7
    compileall.compile_dir(ROOT / "agent", quiet=1)  # as installed (see bench_scale)
    with tempfile.TemporaryDirectory() as tmp:
        idle(Path(tmp) / "idle", rows, seconds)
        shipping(Path(tmp) / "shipping", count, days)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
