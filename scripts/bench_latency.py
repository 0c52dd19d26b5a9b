"""Close-to-visible latency of `recsync run` under a steady call rate, beside OpenSSH `sftp`.

A real sshd and a real MariaDB (FreePBX CDR schema, a read-only user, the password in a
0600 file, reached through the socket) are started here. `recsync run` ships to the sshd;
a MixMonitor-like writer finishes RATE recordings a second (1 s of audio each, today's
day folder) for SECONDS seconds and inserts each CDR row right after the close. For every
recording: the time from the close to its final name being listed in the server's day
folder (polled every 5 ms). Baseline in the same run: OpenSSH `sftp -b` started right
after a close to put the file under a temporary name and rename it into place, one file at
a time. Usage: scripts/bench latency [SECONDS RATE]. Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cdr import cdr_row  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.mixmonitor import write_recording  # noqa: E402
from tests.support.sshd import Sshd  # noqa: E402

POLL = 0.005
PASSWORD = secrets.token_hex(16)  # the CDR user's, for this run only
BASELINE_FILES = 50


def percentiles(values: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), cuts[94], cuts[98]


def wait_ready(notify: socket.socket, process: subprocess.Popen[bytes], timeout: float) -> None:
    notify.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"recsync run exited with {process.returncode}")
        try:
            if b"READY=1" in notify.recv(4096):
                return
        except TimeoutError:
            continue
    raise SystemExit("recsync run sent no READY=1")


def recsync_run(
    sshd: Sshd, db: MariaDB, work: Path, spool: Path, remote: Path, client: str
) -> list[float]:
    """Latencies (s) of SECONDS * RATE recordings shipped by a running `recsync run`,
    `client` pushing the bytes (destination.sftp_client)."""
    seconds, rate = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (30, 10)
    password = work / "cdr-password"
    password.write_text(PASSWORD)
    password.chmod(0o600)
    config = work / "config.toml"
    config.write_text(
        f'[spool]\npath = "{spool}"\n'
        f'[state]\npath = "{work / "state.db"}"\nstaging = "{work / "staging"}"\n'
        f'[cdr]\ntype = "mysql"\nhost = "localhost"\nsocket = "{db.socket}"\n'
        f'user = "recsync"\npassword_file = "{password}"\nwait_seconds = 30\n'
        f'[destination]\ntype = "sftp"\nroot = "{remote}"\nhost = "{sshd.host}"\n'
        f'port = {sshd.port}\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
        f'known_hosts = "{sshd.known_hosts}"\nsftp_client = "{client}"\n'
        '[metrics]\nlisten = ""\n'
    )
    notify_path = work / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = os.environ | {"NOTIFY_SOCKET": str(notify_path)}
    command = [sys.executable, "-m", "agent", "--config", str(config), "--log-level", "warning"]
    process = subprocess.Popen([*command, "run"], env=env)
    closed: dict[str, float] = {}
    arrived: dict[str, float] = {}
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    day = datetime.now().strftime("%Y/%m/%d")
    remote_day = remote / day
    try:
        wait_ready(notify, process, 30)
        time.sleep(1.0)  # let the first scan and the first SFTP connection settle

        def poll() -> None:
            while writing.is_set() or len(arrived) < len(closed):
                try:
                    names = os.listdir(remote_day)
                except FileNotFoundError:
                    names = []
                now = time.perf_counter()
                with lock:
                    waiting = [uid for uid in closed if uid not in arrived]
                for name in names:
                    if name.startswith("."):
                        continue
                    for uid in waiting:
                        if f"_{uid}." in name or f"-{uid}." in name:
                            arrived[uid] = now
                if not writing.is_set() and time.perf_counter() > last_close[0] + 60:
                    return
                time.sleep(POLL)

        last_close = [time.perf_counter()]
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        folder = spool / day
        folder.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        base = int(time.time())
        for n in range(seconds * rate):
            due = began + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            at = datetime.now().replace(microsecond=0)
            uid = f"{base}.{n}"
            name = f"in-600-2125550{n % 1000:03d}-{at:%Y%m%d-%H%M%S}-{uid}.wav"
            write_recording(folder / name, seconds=1.0, seed=n)
            with lock:
                closed[uid] = last_close[0] = time.perf_counter()
            db.insert_cdr(
                cdr_row(uid, at=at, src=f"2125550{n % 1000:03d}", dst="600", recordingfile=name)
            )
        writing.clear()
        poller.join(timeout=90)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        notify.close()
    manifest = remote_day / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text())["recordings"]
        found = sum(1 for e in entries if e["cdr"] == "found")
        print(f"  manifest: {len(entries)} recordings, {found} with their CDR row")
    missing = [uid for uid in closed if uid not in arrived]
    if missing:
        print(f"  {len(missing)} of {len(closed)} recordings never arrived (within 60 s)")
    return [arrived[uid] - closed[uid] for uid in closed if uid in arrived]


def openssh(sshd: Sshd, spool: Path, remote: Path, work: Path) -> list[float]:
    """Seconds for one `sftp -b` (connect, put to a temporary name, rename) per file."""
    files = sorted(spool.rglob("*.wav"))[:BASELINE_FILES]
    times: list[float] = []
    for path in files:
        batch = work / "batch"
        final = f"{remote}/{path.name}"
        temp = f"{remote}/.{path.name}.tmp"
        batch.write_text(f'put "{path}" "{temp}"\nrename "{temp}" "{final}"\n')
        command = sshd.sftp_command(batch)
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    with Sshd() as sshd, MariaDB() as db, tempfile.TemporaryDirectory() as tmp:
        sshd.start()
        db.start()
        db.create_freepbx_cdr()
        db.create_user("recsync", PASSWORD)
        rows = []
        for client in ("openssh", "asyncssh"):
            work = Path(tmp) / client
            spool = work / "spool"
            spool.mkdir(parents=True)
            latencies = recsync_run(sshd, db, work, spool, sshd.new_dir(client), client)
            rows.append((f"recsync run (sftp by {client}, CDR from MariaDB)", latencies))
        baseline = openssh(sshd, spool, sshd.new_dir("openssh-baseline"), work)
        rows.append((f"OpenSSH sftp -b, one per file (first {BASELINE_FILES})", baseline))
    print("close of the recording -> final name listed on the server (seconds)")
    print(f"  {'':52}{'files':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for label, values in rows:
        p50, p95, p99 = percentiles(values)
        print(f"  {label:52}{len(values):6}{p50:8.3f}{p95:8.3f}{p99:8.3f}{max(values):8.3f}")
    print("  goals at 50 recordings/s: p50 <= 0.050 s, p99 <= 0.250 s")


if __name__ == "__main__":
    main()
