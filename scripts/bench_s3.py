"""recsync against `rclone copy` into the same local S3 server (a one-node Ceph RADOS
Gateway, tests/support/s3.py), in one run.

recsync runs its whole pipeline (`recsync run --once`: settle, parse, stage, tag, name,
upload with Content-MD5 + signed sha256, HEAD check, state, manifests); rclone copies the
same files (it checks MD5 too). Usage: scripts/bench s3 [SMALL_COUNT LARGE_COUNT]
(1000 x 100 KB and 300 x 2 MB). Prints figures, with each side's CPU per file, then the
idle footprint: VmRSS of `recsync run` (the daemon) once everything is shipped, with the
s3 destination and, beside it, with a local one. Asserts nothing."""

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

from scripts.bench_footprint import rss_kib  # noqa: E402
from scripts.bench_sftp import children_cpu, make_spool, row  # noqa: E402
from tests.support.s3 import REGION, RadosGateway  # noqa: E402

BASELINE = "rclone copy, --transfers 4"
IDLE_SECONDS = 10


def rclone(rgw: RadosGateway, spool: Path, bucket: str) -> None:
    # AWS_CA_BUNDLE (set on some machines) breaks rclone's AWS SDK on a plain-http endpoint.
    env = {
        **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG_RGW_TYPE": "s3",
        "RCLONE_CONFIG_RGW_PROVIDER": "Ceph",
        "RCLONE_CONFIG_RGW_ENDPOINT": rgw.endpoint,
        "RCLONE_CONFIG_RGW_REGION": REGION,
        "RCLONE_CONFIG_RGW_ACCESS_KEY_ID": rgw.credentials.access_key_id,
        "RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY": rgw.credentials.secret_access_key,
    }
    subprocess.run(
        ["rclone", "copy", "--transfers", "4", str(spool), f"rgw:{bucket}/pbx"],
        check=True,
        env=env,
    )


def write_config(spool: Path, work: Path, destination: str) -> Path:
    config = work / "config.toml"
    config.write_text(
        f'[spool]\npath = "{spool}"\nbackfill_days = 100000\n'
        f'[state]\npath = "{work / "state.db"}"\nstaging = "{work / "staging"}"\n'
        '[cdr]\ntype = "none"\n[metrics]\nlisten = ""\n'
        f"[destination]\n{destination}"
    )
    return config


def s3_config(rgw: RadosGateway, spool: Path, bucket: str, work: Path, connections: int) -> Path:
    secret = work / "secret"
    secret.write_text(rgw.credentials.secret_access_key)
    secret.chmod(0o600)
    return write_config(
        spool,
        work,
        f'type = "s3"\nendpoint = "{rgw.endpoint}"\nbucket = "{bucket}"\n'
        f'prefix = "pbx"\naddressing_style = "path"\n'
        f'access_key_id = "{rgw.credentials.access_key_id}"\n'
        f'secret_access_key_file = "{secret}"\nconnections = {connections}\n',
    )


def agent_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--config", str(config), "--log-level", "warning", *args]


def idle_rss_mib(config: Path, seconds: int = IDLE_SECONDS) -> float:
    """The largest VmRSS of `recsync run` over `seconds` with nothing left to ship."""
    proc = subprocess.Popen(agent_command(config, "run"), stdin=subprocess.DEVNULL)
    try:
        peak = 0
        for _ in range(seconds):
            time.sleep(1)
            assert proc.poll() is None, "recsync run stopped"
            peak = max(peak, rss_kib(proc.pid))
        return peak / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def idle_footprint(spool: Path, work: Path) -> None:
    """`work`: where an s3 run shipped `spool` whole."""
    s3 = idle_rss_mib(work / "config.toml")
    (work / "local" / "dest").mkdir(parents=True)
    local = write_config(
        spool, work / "local", f'type = "local"\nroot = "{work / "local" / "dest"}"\n'
    )
    subprocess.run(agent_command(local, "run", "--once"), check=True)
    baseline = idle_rss_mib(local)
    print(
        f"idle recsync run, everything shipped: s3 destination {s3:.1f} MiB,"
        f" local destination {baseline:.1f} MiB (goal: s3 at most 50 MiB)"
    )


def main() -> None:
    small, large = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (1000, 300)
    if shutil.which("rclone") is None:
        sys.exit("bench s3 needs Debian's rclone (apt-get install rclone)")
    print("ratio: the baseline's time over this run's time (above 1.00x is faster)")
    rgw = RadosGateway()
    rgw.start()
    try:
        for count, size in ((small, 100_000), (large, 2_000_000)):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                spool = work / "spool"
                total = make_spool(spool, count, size) / 1e6
                print(f"{count} recordings of {size // 1000} KB ({total:.0f} MB):")
                figures: dict[str, float] = {}
                runs = (
                    (BASELINE, 0),
                    ("recsync run --once, 4 connections", 4),
                    ("recsync run --once, 1 connection", 1),
                )
                for n, (label, connections) in enumerate(runs):
                    bucket = rgw.new_bucket(f"bench-{count}-{n}")
                    scratch = work / f"run{n}"
                    scratch.mkdir()
                    cpu, began = children_cpu(), time.perf_counter()
                    if connections:
                        config = s3_config(rgw, spool, bucket, scratch, connections)
                        subprocess.run(agent_command(config, "run", "--once"), check=True)
                    else:
                        rclone(rgw, spool, bucket)
                    seconds = time.perf_counter() - began
                    per_file_ms = (children_cpu() - cpu) / count * 1000
                    client = rgw.client(bucket)
                    shipped = sum(1 for key, _ in client.list_keys("pbx/") if key.endswith(".wav"))
                    client.close()
                    assert shipped == count, f"{label}: {shipped} of {count} arrived"
                    figures[label] = seconds
                    line = row(label, count, total, seconds, figures[BASELINE])
                    print(f"{line}  CPU {per_file_ms:5.1f} ms/file")
                if size == 100_000:
                    idle_footprint(spool, work / "run1")
    finally:
        rgw.stop()


if __name__ == "__main__":
    main()
