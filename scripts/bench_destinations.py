"""Two destinations against one: `run --once` in process over N sample recordings with a
SQLite CDR row for each, tags on, local destinations; two destinations each preparing its
own (their own CDR connection, their own copy) against the same prepared once (one CDR
connection, shared staged copies). Beside it, the plain copy of the spool to each
destination. Prints figures; asserts nothing (see scripts/bench)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.cdr.shared import Asker  # noqa: E402
from agent.cli import _agent, _fleet  # noqa: E402
from agent.config import Config, from_dict  # noqa: E402
from agent.fleet import Fleet  # noqa: E402
from agent.store.state import Store  # noqa: E402
from scripts.bench import make_spool  # noqa: E402
from tests.support.cdr import SqliteCdrFile, cdr_row  # noqa: E402


def config_of(base: Path, spool: Path, names: list[str], cdr: Path) -> Config:
    tables: dict[str, Any] = {"type": "local", "root": str(base / names[0])}
    for name in names[1:]:
        tables[name] = {"type": "local", "root": str(base / name)}
    for name in names:
        (base / name).mkdir()
    return from_dict(
        {
            "spool": {"path": str(spool), "backfill_days": 100_000},
            "state": {"path": str(base / "state" / "state.db")},
            "cdr": {"type": "sqlite", "path": str(cdr), "wait_seconds": 5},
            "tags": {"enabled": True},
            "index": {"enabled": False},
            "destination": tables,
        },
        base=base,
    )


def each_its_own(config: Config) -> Fleet:
    """The agents as before a recording was prepared once: a CDR source and copy each."""
    agents = []
    for name in config.destinations:
        own = config.for_destination(name)
        agents.append(_agent(own, Store.open(own.state.path), watch=False))
    return Fleet(agents)


def cdr_lookups(fleet: Fleet) -> Callable[[], int]:
    """Lookups that reached the CDR database: the shared source's count, or each agent's
    own source counted around its lookup."""
    first = fleet.primary.pipeline.cdr
    if isinstance(first, Asker):
        return lambda: first.shared.asked
    counted = [0]
    for agent in fleet.agents:
        source = agent.pipeline.cdr
        assert source is not None
        lookup = source.lookup

        def counting(query: Any, _lookup: Any = lookup) -> Any:
            counted[0] += 1
            return _lookup(query)

        source.lookup = counting  # type: ignore[method-assign]
    return lambda: counted[0]


def run(
    base: Path, spool: Path, names: list[str], cdr: Path, build: Callable[[Config], Fleet]
) -> dict[str, Any]:
    fleet = build(config_of(base, spool, names, cdr))
    asked = cdr_lookups(fleet)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fleet.run(once=True)
    finally:
        fleet.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shipped = sum(1 for name in names for _ in (base / name).rglob("*.wav"))
    copies = fleet.primary.pipeline.copies
    made = "-" if copies is None else f"{copies.made} made, {copies.linked} linked"
    return {"wall": wall, "cpu": cpu, "shipped": shipped, "asked": asked(), "copies": made}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        size = make_spool(base / "spool", count)
        cdr = SqliteCdrFile(base / "master.db")
        for n in range(count):  # at the start make_spool's names give
            at = datetime(2024, 3, 10 + n % 5, 10, n // 60 % 60, n % 60)
            cdr.insert(cdr_row(f"1710497702.{n}", at=at, cnam=f"Caller {n}"))
        copy_wall = time.perf_counter()
        for target in ("plain-a", "plain-b"):
            shutil.copytree(base / "spool", base / target)
        copy_wall = time.perf_counter() - copy_wall
        for label, names, build in [
            ("one destination", ["web"], each_its_own),
            ("two, each preparing its own", ["web", "archive"], each_its_own),
            ("two, prepared once", ["web", "archive"], lambda c: _fleet(c, watch=False)),
        ]:
            run_base = base / label.replace(" ", "-").replace(",", "")
            run_base.mkdir()
            results.append((label, run(run_base, base / "spool", names, cdr.path, build)))
    print(f"recordings: {count} ({size / 2**20:.1f} MiB), tags on, a CDR row each")
    print(
        f"{'':30}{'shipped':>8}{'seconds':>9}{'CPU s':>8}{'CPU ms/rec':>11}"
        f"{'CDR asked':>10}  staged copies"
    )
    for label, r in results:
        print(
            f"{label:30}{r['shipped']:8}{r['wall']:9.2f}{r['cpu']:8.2f}"
            f"{1000 * r['cpu'] / count:11.2f}{r['asked']:10}  {r['copies']}"
        )
    print(f"{'baseline: copytree to two':30}{2 * count:8}{copy_wall:9.2f}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
