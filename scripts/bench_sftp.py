"""recsync against OpenSSH `sftp -b` over the same loopback sshd, in one run.

Both ship the same generated recordings with a temporary name and a rename per file;
recsync runs its whole pipeline (`recsync run --once`: settle, parse, stage, tag, name,
upload, verify, state, manifests). Usage: scripts/bench sftp [SMALL_COUNT LARGE_COUNT].
Prints figures, with each side's CPU (user + system of its processes) per file; asserts
nothing."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.spool.wavheader import wav_header  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402

BASELINE = "OpenSSH sftp -b, 1 connection"


def children_cpu() -> float:
    """CPU seconds of the finished child processes (sftp and its ssh, or recsync)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_spool(spool: Path, count: int, size: int) -> int:
    """`count` finished .wav recordings of about `size` bytes; returns the bytes written."""
    audio = os.urandom(size - 44)
    for n in range(count):
        name = f"in-600-21255{n:05d}-20240315-1{n // 3600 % 10}{n // 60 % 60:02d}{n % 60:02d}"
        path = spool / "2024/03/15" / f"{name}-1710497702.{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_header("wav", len(audio)) + audio)
    return count * size


def row(label: str, count: int, megabytes: float, seconds: float, baseline: float) -> str:
    """One line of a side-by-side table: files/s, MB/s, seconds, ratio to the baseline."""
    return (
        f"  {label:36}{count / seconds:8.0f} files/s{megabytes / seconds:7.1f} MB/s"
        f"{seconds:8.2f} s{baseline / seconds:7.2f}x"
    )


def openssh(sshd: Sshd, spool: Path, remote: Path, work: Path, fsync: bool = False) -> float:
    """`sftp -b`: one connection, put to a temporary name (with `fsync`: forced to disk,
    as recsync does), rename into place."""
    batch = work / "batch"
    files = sorted(spool.rglob("*.wav"))
    lines = [
        f'-mkdir "{remote}/2024"',
        f'-mkdir "{remote}/2024/03"',
        f'-mkdir "{remote}/2024/03/15"',
    ]
    for path in files:
        final = f"{remote}/2024/03/15/{path.name}"
        temp = f"{remote}/2024/03/15/.{path.name}.tmp"
        put = "put -f" if fsync else "put"
        lines += [f'{put} "{path}" "{temp}"', f'rename "{temp}" "{final}"']
    batch.write_text("\n".join(lines) + "\n")
    command = sshd.sftp_command(batch)
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def recsync(
    sshd: Sshd, spool: Path, remote: Path, work: Path, connections: int, client: str
) -> float:
    config = work / "config.toml"
    config.write_text(
        f'[spool]\npath = "{spool}"\nbackfill_days = 100000\n'
        f'[state]\npath = "{work / "state.db"}"\nstaging = "{work / "staging"}"\n'
        '[cdr]\ntype = "none"\n'
        f'[destination]\ntype = "sftp"\nroot = "{remote}"\nhost = "{sshd.host}"\n'
        f'port = {sshd.port}\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
        f'known_hosts = "{sshd.known_hosts}"\nconnections = {connections}\n'
        f'sftp_client = "{client}"\n'
    )
    began = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "--config",
            str(config),
            "--log-level",
            "warning",
            "run",
            "--once",
        ],
        check=True,
    )
    return time.perf_counter() - began


def main() -> None:
    small, large = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (2000, 300)
    print("ratio: the baseline's time over this run's time (above 1.00x is faster)")
    with Sshd() as sshd:
        sshd.start()
        for count, size in ((small, 100_000), (large, 2_000_000)):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                total = make_spool(work / "spool", count, size) / 1e6
                spool = work / "spool"
                figures: dict[str, float] = {}
                print(f"{count} recordings of {size // 1000} KB ({total:.0f} MB):")
                runs = (
                    (BASELINE, 0, ""),
                    ("OpenSSH sftp -b, put -f (fsync)", 0, "fsync"),
                    ("recsync, 4 connections", 4, "auto"),
                    ("recsync, 8 connections", 8, "auto"),
                    ("recsync, 4 connections, asyncssh", 4, "asyncssh"),
                )
                for label, connections, client in runs:
                    remote = sshd.new_dir(label.split()[0] + str(len(figures)))
                    scratch = work / f"run{len(figures)}"
                    scratch.mkdir()
                    cpu = children_cpu()
                    if connections:
                        seconds = recsync(sshd, spool, remote, scratch, connections, client)
                    else:
                        seconds = openssh(sshd, spool, remote, scratch, fsync=client == "fsync")
                    per_file_ms = (children_cpu() - cpu) / count * 1000
                    shipped = sum(1 for _ in remote.rglob("*.wav"))
                    assert shipped == count, f"{label}: {shipped} of {count} arrived"
                    figures[label] = seconds
                    line = row(label, count, total, seconds, figures[BASELINE])
                    print(f"{line}  CPU {per_file_ms:5.1f} ms/file")
                    shutil.rmtree(remote)


if __name__ == "__main__":
    main()
