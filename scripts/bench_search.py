"""Search across days: what the search files cost the agent and what they save the browser.

1. Publishing: a state database of DAYS days of PER_DAY shipped calls; a new recording on
   the last day, then its publish (that day's manifest and page, and with search files
   its day's search file and months.json), timed with and without search files, in
   turns, in the same run. In the worst case, a publish per new recording: that is the
   cost per recording.
2. Bytes per call of the search files.
3. The browser (Debian's Chromium, headless): time to first result and to the last for a
   number search over one month and over the whole range, beside a baseline in the same
   page: fetching and parsing the same days' manifests directly.

Usage: .venv/bin/python scripts/bench_search.py [DAYS PER_DAY ROUNDS] (365 2000 15).
Prints figures; asserts nothing."""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import IndexConfig  # noqa: E402
from agent.model import RecordingState  # noqa: E402
from agent.publish import manifest, search  # noqa: E402
from agent.publish.index import STATIC, render_search  # noqa: E402
from agent.publish.site import publish_dirty  # noqa: E402
from agent.store import days as day_index  # noqa: E402
from agent.store.state import Store  # noqa: E402
from agent.store.tx import transaction  # noqa: E402
from agent.transport.local import LocalTransport  # noqa: E402
from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402

LAST = date(2024, 12, 31)
KINDS = ["in", "out", "internal", "q"]
NAMES = ["Alice Anders", "Bob Buyer", "Carol Client", "Zoë Ørsted", None, "Müller & Söhne"]
DISPOSITIONS = ["ANSWERED"] * 8 + ["NO ANSWER", "BUSY", "FAILED"]
TARGET = "2125550142"  # the number searched: one of 10,000, so ~0.01 % of the calls
PAGES = IndexConfig(enabled=True, title="Call recordings")


def values(day: date, i: int, per_day: int, rng: random.Random) -> dict[str, Any]:
    """The done row of call `i` of `day`, as the pipeline leaves it."""
    seconds = i * 86400 // per_day
    hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
    kind = rng.choice(KINDS)
    number = f"212555{rng.randrange(10000):04}"
    uid = f"{int(time.mktime(day.timetuple())) + seconds}.{i}"
    name = f"{kind}-600-{number}-{day:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{uid}.wav"
    duration = rng.randrange(5, 1800)
    return {
        "stem": f"{day:%Y/%m/%d}/{name[:-4]}",
        "path": f"{day:%Y/%m/%d}/{name}",
        "size": duration * 16000,
        "mtime_ns": 0,
        "inode": 0,
        "state": RecordingState.DONE.value,
        "remote_path": f"{day:%Y/%m/%d}/{name}",
        "sha256": f"{rng.getrandbits(256):064x}",
        "shipped_size": duration * 16000,
        "version": 1,
        "seen_at": 0.0,
        "updated_at": 0.0,
        "kind": kind,
        "uniqueid": uid,
        "linkedid": uid,
        "started_at": f"{day:%Y-%m-%d}T{hh:02}:{mm:02}:{ss:02}+01:00",
        "extension": "600",
        "caller_number": f"+1 {number[:3]}-{number[3:6]}-{number[6:]}" if i % 3 else number,
        "caller_name": rng.choice(NAMES),
        "cdr_dst": "600",
        "duration": duration,
        "billsec": max(duration - rng.randrange(0, 30), 0),
        "disposition": rng.choice(DISPOSITIONS),
        "cdr": "found",
    }


def the_days(count: int) -> list[date]:
    return [LAST - timedelta(days=n) for n in reversed(range(count))]


def fill(store: Store, days: list[date], per_day: int, rng: random.Random) -> None:
    for day in days:
        rows = [values(day, i, per_day, rng) for i in range(per_day)]
        store.restore(rows, day=day.strftime("%Y/%m/%d"), now=0.0)


def dirty(store: Store, day: str, now: float) -> None:
    with transaction(store.conn) as tx:
        day_index.mark_dirty(tx, day)
        tx.event(None, now, "bench", day)


def bench_publish(base: Path, days: list[date], per_day: int, rounds: int) -> Store:
    rng = random.Random(1)
    store = Store.open(base / "state.db")
    began = time.perf_counter()
    fill(store, days, per_day, rng)
    print(f"state db: {len(days) * per_day:,} calls in {time.perf_counter() - began:.0f} s")
    (base / "dest").mkdir()
    transport = LocalTransport(root=base / "dest")
    last = days[-1].strftime("%Y/%m/%d")
    dirty(store, last, 1.0)
    publish_dirty(store, transport, 1.0, PAGES)  # the month's parts made once, not timed
    timings: dict[bool, list[float]] = {True: [], False: []}
    for n in range(rounds * 2):
        searchable = n % 2 == 0
        row = values(days[-1], per_day + n, per_day, rng)
        row["stem"] += f"-new{n}"
        row["remote_path"] = row["remote_path"].replace(".wav", f"-new{n}.wav")
        store.restore([row], day=None, now=2.0)
        dirty(store, last, 2.0 + n)
        began = time.perf_counter()
        publish_dirty(store, transport, 2.0 + n, PAGES, searchable=searchable)
        timings[searchable].append((time.perf_counter() - began) * 1000)
    with_search, without = statistics.median(timings[True]), statistics.median(timings[False])
    print(f"\npublish of a new recording on a day of {per_day:,} (median of {rounds}, ms)")
    print(f"  with search files{with_search:12.1f}")
    print(f"  without (baseline){without:11.1f}")
    print(f"  added by search  {with_search - without:12.1f}")
    least = min(timings[True]) - min(timings[False])  # less moved by a busy machine
    print(f"  added, of the fastest runs{least:7.1f}")
    month = search.month_of(last)
    size = sum(
        p.stat().st_size for p in (base / "dest/search").glob(f"{month.replace('-', '/')}/*.json")
    )
    counts = dict(store.days.counts())
    calls = sum(count for day, count in counts.items() if search.month_of(day) == month)
    # Only the last day is published here: its manifest, per call, is the comparison.
    day_manifest = (base / "dest" / last / "manifest.json").stat().st_size
    on_day = counts[last]
    print(
        f"\nsearch files of {month}: {size:,} bytes for {calls:,} calls: {size / calls:.0f} B/call"
    )
    print(f"  (the day manifest of {last}: {day_manifest / on_day:.0f} B/call)")
    return store


def write_site(root: Path, days: list[date], per_day: int) -> None:
    """Day search files and day manifests of the same generated calls, for the browser."""
    rng = random.Random(2)
    for rel, content in STATIC.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / "search.html").write_bytes(render_search(title="Call recordings"))
    for day in days:
        key = day.strftime("%Y/%m/%d")
        part = search.DayPart(key)
        entries = []
        for i in range(per_day):
            row = values(day, i, per_day, rng)
            entry = _entry(row)
            part.add(entry, row["extension"])
            entries.append(entry)
        (root / search.path_of(key)).parent.mkdir(parents=True, exist_ok=True)
        (root / search.path_of(key)).write_bytes(part.data())
        (root / key).mkdir(parents=True)
        (root / key / "manifest.json").write_bytes(manifest.render(key, iter(entries), 0.0))
    listed = [d.strftime("%Y/%m/%d") for d in days]
    (root / "search/months.json").write_bytes(search.render_months(listed))


def _entry(values: dict[str, Any]) -> dict[str, Any]:
    class Row:  # the fields manifest.entry reads
        def __getattr__(self, name: str) -> Any:
            return values.get(name)

    row = Row()
    return manifest.entry(row)  # type: ignore[arg-type]


OURS = """async q => {
  const form = document.getElementById("search");
  form.elements.number.value = q.number;
  form.elements.from.value = q.from;
  form.elements.to.value = q.to;
  const table = document.getElementById("results"), body = table.tBodies[0];
  const t0 = performance.now();
  const first = new Promise(resolve => new MutationObserver((_, o) => {
    if (body.rows.length) { o.disconnect(); resolve(performance.now() - t0); }
  }).observe(body, {childList: true}));
  form.requestSubmit();
  const t1 = await first;
  await new Promise(r => {
    const c = () => table.dataset.done === "1" ? r() : setTimeout(c, 2);
    c();
  });
  return [t1, performance.now() - t0, table.tBodies[0].rows.length];
}"""

BASELINE = """async q => {
  const t0 = performance.now(), digits = q.number.replace(/[^0-9]/g, "");
  let first = null, count = 0;
  const loads = q.days.map(
    d => fetch(d + "/manifest.json", {cache: "no-cache"}).then(r => r.json()));
  for (const load of loads) {
    const m = await load;
    for (let i = m.recordings.length - 1; i >= 0; i--) {
      const e = m.recordings[i];
      if (String(e.caller_number || "").replace(/[^0-9]/g, "").includes(digits)
          || String(e.dst || "").replace(/[^0-9]/g, "").includes(digits)) {
        count++;
        if (first === null) first = performance.now() - t0;
      }
    }
  }
  return [first, performance.now() - t0, count];
}"""


def bench_browser(root: Path, days: list[date], rounds: int) -> None:
    from playwright.sync_api import sync_playwright

    month_days = [d for d in days if (d.year, d.month) == (days[-1].year, days[-1].month)]
    cases = [("one month", month_days), (f"{len(days)} days", days)]
    with serving(root) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(f"\nnumber search in Chromium, {TARGET} (ms: median of {rounds} after a first)")
        print(f"{'':34}{'first result':>14}{'all':>9}{'found':>8}")
        for label, span in cases:
            query = {"number": TARGET, "from": f"{span[0]:%Y-%m-%d}", "to": f"{span[-1]:%Y-%m-%d}"}
            newest_first = [d.strftime("%Y/%m/%d") for d in reversed(span)]
            for name, script, arg in (
                ("search files", OURS, query),
                ("baseline: the day manifests", BASELINE, {**query, "days": newest_first}),
            ):
                runs = []
                for _ in range(rounds + 1):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(f"{url}search.html")
                    runs.append(page.evaluate(script, arg))
                    context.close()
                first = statistics.median(r[0] or 0 for r in runs[1:])
                whole = statistics.median(r[1] for r in runs[1:])
                print(f"  {label}, {name:26}{first:8.0f}{whole:9.0f}{runs[-1][2]:8}")
        browser.close()


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    day_count, per_day, rounds = (args + [365, 2000, 15][len(args) :])[:3]
    days = the_days(day_count)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        store = bench_publish(base, days, per_day, rounds)
        store.close()
        write_site(base / "www", days, per_day)
        bench_browser(base / "www", days, max(3, rounds // 5))
    print(f"\n{day_count} days x {per_day:,} calls; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
