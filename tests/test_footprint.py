"""Issue 9 (`status --json` within 100 ms on a million rows, an idle agent within 50 MB):
what a command and an idle agent load, each heavy library only where it is used (asked of
a fresh interpreter, since this test process has imported everything already), and the
state counts taken without a GROUP BY over every row."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import agent
from agent.status import summary
from agent.store.state import Store
from tests.conftest import Site

ROOT = Path(__file__).resolve().parent.parent
# Libraries (or what they drag in) that cost time to import or memory to hold.
HEAVY = {
    "asyncssh",
    "importlib.metadata",
    "jinja2",
    "lameenc",
    "mutagen",
    "prometheus_client",
    "pymysql",
    "rich",
    "ssl",
    "urllib.request",
}


def loaded_by(code: str, tmp_path: Path) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = tmp_path / "modules.txt"
    script = f"{code}\nimport sys\nopen({str(out)!r}, 'w').write('\\n'.join(sys.modules))\n"
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    return set(out.read_text().split())


def test_the_version_is_pyprojects() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert agent.__version__ == pyproject["project"]["version"]


def test_status_json_loads_no_heavy_library(site: Site, tmp_path: Path) -> None:
    config = site.write_config(metrics={"listen": "127.0.0.1:9464"})
    Store.open(site.state / "state.db").close()
    code = (
        "from agent.cli import main\n"
        "try:\n"
        f"    main(['--config', {str(config)!r}, 'status', '--json'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    assert loaded_by(code, tmp_path) & HEAVY == set()


def test_an_idle_agent_loads_only_what_its_config_uses(site: Site, tmp_path: Path) -> None:
    """Tags and pages on (the defaults), metrics off, a local destination, no CDR, nothing
    to ship: none of the heavy libraries (but importlib.metadata, through which
    sqlite-utils, which applies the migrations, looks for its plugins)."""
    config = site.write_config(tags={"enabled": True}, index={"enabled": True})
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from agent import config\n"
        "from agent.cli import _agent\n"
        "from agent.store.state import Store\n"
        f"cfg = config.load(Path({str(config)!r}))\n"
        "store = Store.open(cfg.state.path)\n"
        "agent = _agent(cfg, store, watch=True)\n"
        "agent.start(time.time())\n"
        "agent.run_once(time.time())\n"
        "agent.health.check(time.time())\n"
        "agent.destination.write_status(time.time())\n"
        "agent.close()\n"
        "store.close()\n"
    )
    assert loaded_by(code, tmp_path) & HEAVY == {"importlib.metadata"}


def test_the_state_counts_are_a_group_bys(site: Site) -> None:
    """Counted as all rows minus those not done: the same as a GROUP BY, states the enum
    does not know included."""
    store = Store.open(site.state / "state.db")
    states = ["done"] * 5 + ["pending"] * 2 + ["failed", "skipped", "skipped", "zz", "aa"]
    store.conn.executemany(
        "INSERT INTO recordings (stem, path, size, mtime_ns, inode, state, seen_at,"
        " updated_at) VALUES (?, ?, 0, 0, 0, ?, 0, 0)",
        [(f"r{n}", f"r{n}.wav", state) for n, state in enumerate(states)],
    )
    grouped = dict(store.conn.execute("SELECT state, count(*) FROM recordings GROUP BY state"))
    counts = summary(store, site.config(), 0)["counts"]
    store.close()
    assert counts == {"uploading": 0, "waiting_cdr": 0, "quarantined": 0, "expired": 0} | grouped
    assert counts["done"] == 5
