"""`run --once` over N sample recordings against a plain copy of the same files, and the
idle RSS of `recsync run`. Prints figures; asserts nothing (see scripts/bench)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.mixmonitor import write_recording  # noqa: E402


def make_spool(spool: Path, count: int) -> int:
    total = 0
    for n in range(count):
        day = 10 + n % 5
        name = (
            f"in-600-21255{n:05d}-202403{day}-10{n // 60 % 60:02d}{n % 60:02d}-1710497702.{n}.wav"
        )
        path = spool / f"2024/03/{day}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        total += len(write_recording(path, seconds=2, seed=n))
    return total


def write_config(base: Path) -> Path:
    config = base / "config.toml"
    config.write_text(
        f'[spool]\npath = "{base / "spool"}"\nbackfill_days = 100000\n'
        f'[state]\npath = "{base / "state.db"}"\nstaging = "{base / "staging"}"\n'
        f'[destination]\ntype = "local"\nroot = "{base / "dest"}"\n'
    )
    (base / "dest").mkdir()
    return config


def recsync(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--config", str(config), "--log-level", "warning", *args]


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        size = make_spool(base / "spool", count)
        config = write_config(base)
        baseline = timed(lambda: shutil.copytree(base / "spool", base / "plain-copy"))
        once = timed(lambda: subprocess.run(recsync(config, "run", "--once"), check=True))
        again = timed(lambda: subprocess.run(recsync(config, "run", "--once"), check=True))
        shipped = sum(1 for _ in (base / "dest").rglob("*.wav"))

        proc = subprocess.Popen(recsync(config, "run"), stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)  # benchmark, not a test: let it settle into its idle loop
            idle = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait()

    mib = size / 2**20
    print(f"recordings: {count} ({mib:.1f} MiB), shipped {shipped}")
    print(f"{'':38}{'seconds':>10}{'files/s':>10}{'MiB/s':>10}")
    for label, secs in [
        ("recsync run --once (first, all new)", once),
        ("recsync run --once (again, nothing due)", again),
        ("baseline: shutil.copytree, same files", baseline),
    ]:
        print(f"{label:38}{secs:10.2f}{count / secs:10.0f}{mib / secs:10.1f}")
    print(f"idle RSS of recsync run: {idle / 1024:.1f} MiB (state db with {count} rows)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
