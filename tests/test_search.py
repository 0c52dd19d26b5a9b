"""Search across days (search.html over the day files under search/) and the link per
call (`YYYY/MM/DD/index.html#<uniqueid>`), in headless Chromium.

The calls are generated: 48 days over two months (February and March 2024), 50 a day, so
2,400 calls, 48 day files; a year of days (a few calls each) for the fetching of
hundreds of day files in order; and two months of 2,000 a day (search files only) for a
busy PBX's volume. The point is that the browser finds exactly what a Python filter of
the same data finds; a year of 2,000 a day is what `scripts/bench search` times."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from agent.publish import search
from agent.publish.index import anchor, kind_label, render_day, render_root, render_search
from tests.support.chromium import Tab, serving, wait_until

TITLE = "Call recordings"
GENERATED = "2024-03-31T23:59:00+00:00"
FIRST_DAY = date(2024, 2, 12)
DAYS = 48
PER_DAY = 50
HOSTILE_IMG = '<img src=x onerror="window.pwned=1">'
HOSTILE_SCRIPT = "<script>window.pwned=2</script>"
NAMES = ["Alice Anders", "Bob Buyer", "Zoë Ørsted", None, HOSTILE_IMG, HOSTILE_SCRIPT]
KINDS = ["in", "out", "internal", "q"]
DISPOSITIONS = ["ANSWERED", "ANSWERED", "ANSWERED", "NO ANSWER", "BUSY"]
# numbers as CDRs write them: with and without "+", spaces and dashes
FORMS = ["{}", "+1{}", "{0[0]}{0[1]}{0[2]}-{0[3]}{0[4]}{0[5]}-{0[6]}{0[7]}{0[8]}{0[9]}"]


@dataclass
class Call:
    day: str
    entry: dict[str, Any]
    extension: str | None
    order: int  # position in its day page (the state db's order)


def generate() -> list[Call]:
    rng = random.Random(19)
    calls: list[Call] = []
    for d in range(DAYS):
        when = FIRST_DAY + timedelta(days=d)
        day = when.strftime("%Y/%m/%d")
        for i in range(PER_DAY):
            seconds = 8 * 3600 + i * 600 + rng.randrange(600)
            hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
            number = f"212555{rng.randrange(100, 300):04}"
            kind = rng.choice(KINDS)
            extension = rng.choice(["201", "202", "600"])
            uid = f"{1707700000 + d * 86400 + seconds}.{d * PER_DAY + i}"
            file = (
                f"{day}/{kind}-{extension}-{number}-{when:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{uid}.wav"
            )
            caller, dst = (number, extension) if kind in ("in", "q") else (extension, number)
            billsec = rng.choice([0, 5, 30, 61, 120, 600])
            entry = {
                "file": file,
                "uniqueid": uid,
                "kind": kind,
                "caller_number": rng.choice(FORMS).format(caller) if caller == number else caller,
                "caller_name": rng.choice(NAMES),
                "dst": dst,
                "started_at": f"{when:%Y-%m-%d}T{hh:02}:{mm:02}:{ss:02}+01:00",
                "duration": billsec + 7,
                "billsec": billsec,
                "disposition": rng.choice(DISPOSITIONS),
                "size": 1000,
                "format": "wav",
            }
            calls.append(Call(day, entry, extension, i))
    return calls


def digits(value: object) -> str:
    return re.sub(r"[^0-9]", "", str(value or ""))


def expected(calls: list[Call], **query: str) -> list[str]:
    """What the search must show, as Python reads the same data: the day page links of the
    matching calls, newest first."""
    number, name = digits(query.get("number")), query.get("name", "").lower()
    first, last = query.get("from", "0000-00-00"), query.get("to", "9999-99-99")
    matching = []
    for call in calls:
        e = call.entry
        if number and number not in digits(e["caller_number"]) and number not in e["dst"]:
            continue
        if name and name not in (e["caller_name"] or "").lower():
            continue
        ext = query.get("ext")  # the extension took part: calling, or called
        if ext and ext not in (call.extension, digits(e["caller_number"]), e["dst"]):
            continue
        if "dir" in query and kind_label(e["kind"])[1] != query["dir"]:
            continue
        if "disp" in query and e["disposition"] != query["disp"]:
            continue
        if "min" in query and e["billsec"] < int(query["min"]):
            continue
        if not first <= call.day.replace("/", "-") <= last:
            continue
        matching.append(call)
    matching.sort(key=lambda c: (c.day, c.order), reverse=True)
    return [f"{c.day}/index.html#{anchor(c.entry['uniqueid'])}" for c in matching]


@dataclass
class Site:
    root: Path
    url: str
    calls: list[Call]

    def search(self, **query: str) -> str:
        return f"{self.url}search.html?{urlencode(query)}"


def build(root: Path, calls: list[Call]) -> None:
    from agent.publish.index import STATIC

    def write(rel: str, content: bytes) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)

    for rel, content in STATIC.items():
        write(rel, content)
    write("search.html", render_search(title=TITLE))
    by_day: dict[str, list[Call]] = {}
    for call in calls:
        by_day.setdefault(call.day, []).append(call)
    for day, day_calls in by_day.items():
        entries = [c.entry for c in day_calls]
        write(f"{day}/index.html", render_day(day, entries, title=TITLE, generated_at=GENERATED))
    for day, day_calls in by_day.items():
        part = search.DayPart(day)
        for call in day_calls:
            part.add(call.entry, call.extension)
        write(search.path_of(day), part.data())
    counts = [(day, len(day_calls)) for day, day_calls in by_day.items()]
    write("search/months.json", search.render_months(by_day))
    write("index.html", render_root(counts, title=TITLE, generated_at=GENERATED))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("www")
    calls = generate()
    build(root, calls)
    with serving(root) as url:
        yield Site(root, url, calls)


def results(page: Any) -> list[str]:
    """The day page link of every result, in the order shown, once the search is done."""
    wait_until(page, "() => document.getElementById('results').dataset.done === '1'")
    links = page.eval_on_selector_all(
        "#results tbody td.day a", "links => links.map(a => a.getAttribute('href'))"
    )
    return [str(link) for link in links]


def submit(page: Any, **fields: str) -> None:
    for name, value in fields.items():
        control = page.locator(f"#search [name={name}]")
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    page.locator("#search button[type=submit]").click()


@pytest.mark.parametrize(
    ("uniqueid", "link"),
    [
        ("1710497702.42", "2024/03/15/index.html#1710497702.42"),
        ('"><script>x()</script>', "2024/03/15/index.html"),
        ("a b", "2024/03/15/index.html"),
        (None, "2024/03/15/index.html"),
    ],
)
def test_only_a_plain_uniqueid_becomes_a_row_id(uniqueid: str | None, link: str) -> None:
    from agent.publish.index import link as link_of

    assert link_of("2024/03/15", uniqueid) == link
    entry = {"file": "2024/03/15/a.wav", "uniqueid": uniqueid}
    page = render_day("2024/03/15", [entry], title=TITLE, generated_at=GENERATED).decode()
    ids = re.findall(r'<tr id="([^"]*)"', page)
    assert ids == ([uniqueid] if "#" in link else [])


def test_no_name_breaks_a_day_file_line() -> None:
    part = search.DayPart("2024/03/15")
    for name in ("line\nbreak", "carriage\rreturn", "sep\u2028arator", "para\u2029graph"):
        part.add({"file": "2024/03/15/a\nb.wav", "caller_name": name}, "201")
    data = part.data()
    lines = data.decode().split("\n")
    assert len(lines) == 4 and lines[-1] == ""  # head, the calls, the end: no break inside
    document = json.loads(data)
    assert (document["v"], document["day"]) == (2, "2024/03/15")
    assert [row[3] for row in document["rows"]] == [
        "line\nbreak",
        "carriage\rreturn",
        "sep\u2028arator",
        "para\u2029graph",
    ]
    assert document["rows"][0][8] == "a%0Ab.wav"


def test_a_day_made_again_is_what_a_fresh_making_gives() -> None:
    """The rows kept from the last time a day was written are used only where nothing
    they are made of changed: a late caller name, a new length, a new call all show."""
    from agent.publish.search import _made

    calls = [c for c in generate() if c.day == "2024/03/01"]

    def made(entries: list[dict[str, Any]]) -> bytes:
        part = search.DayPart("2024/03/01")
        for entry in entries:
            part.add(entry, "201")
        return part.data()

    entries = [dict(c.entry) for c in calls]
    first = made(entries)
    assert len(_made["2024/03/01"]) == len(entries)
    entries[3]["caller_name"] = "Came Later"
    entries[7] = {**entries[7], "billsec": None, "duration": None, "audio_seconds": 12.6}
    entries.append({**entries[0], "uniqueid": "1709300000.999", "file": "2024/03/01/new.wav"})
    again = made(entries)
    _made.clear()
    assert again == made(entries) != first
    rows = json.loads(again)["rows"]
    assert (rows[3][3], rows[7][7], rows[-1][9]) == ("Came Later", 13, "1709300000.999")
    assert search.DayPart("2024/03/01").data() == b'{"v":2,"day":"2024/03/01","rows":[\n\n]}\n'


def test_the_listing_gives_every_month_and_day_newest_first() -> None:
    days = ["2024/02/28", "2024/03/15", "2024/03/01"]
    listing = json.loads(search.render_months(days, site="pbx-north"))
    assert listing["site"] == "pbx-north" and listing["kinds"]["in"] == ["Incoming", "in"]
    assert listing["months"] == [
        {
            "month": "2024-03",
            "first": "2024/03/01",
            "last": "2024/03/15",
            "days": ["2024/03/15", "2024/03/01"],
        },
        {"month": "2024-02", "first": "2024/02/28", "last": "2024/02/28", "days": ["2024/02/28"]},
    ]


def test_the_day_files_are_compact(site: Site) -> None:
    sizes = sum(p.stat().st_size for p in (site.root / "search").rglob("??.json"))
    assert sizes / len(site.calls) < 160  # bytes per call, the file name half of it
    months = json.loads((site.root / "search/months.json").read_bytes())["months"]
    assert [(m["month"], len(m["days"])) for m in months] == [("2024-03", 30), ("2024-02", 18)]


def test_a_number_search_finds_exactly_the_matching_calls_across_days(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{site.url}index.html")
    page.locator("a[href='search.html']").click()
    page.wait_for_url(f"{site.url}search.html")
    submit(page, number="999 999")
    assert results(page) == []
    assert page.locator("#found").inner_text() == "No call matches."
    page.locator("#search [name=number]").fill("")
    submit(page, number="+1 212 555-0142")  # digits compared: only the CDRs with the 1
    with_country = results(page)
    assert with_country == expected(site.calls, number="+1 212 555-0142")
    assert 0 < len(with_country) < len(expected(site.calls, number="2125550142"))

    for typed in ("212 555-0142", "(212) 555 0142", "2125550142", "555014"):
        page.locator("#search [name=number]").fill("")
        submit(page, number=typed)
        found = results(page)
        assert found == expected(site.calls, number=typed), typed
        assert len({link[:10] for link in found}) > 5  # across days, and both months
        assert {link[:7] for link in found} == {"2024/02", "2024/03"}
    talk = sum(
        c.entry["billsec"]
        for c in site.calls
        if f"{c.day}/index.html#{c.entry['uniqueid']}" in found
    )
    hours, minutes = divmod(talk // 60, 60)
    assert (
        page.locator("#found").inner_text()
        == f"{len(found)} calls, {hours} h {minutes:02} min in all"
    )
    # each result has its player, the recording's URL beside its day page
    row = page.locator("#results tbody tr").first
    src = row.locator("audio").get_attribute("src")
    assert src is not None and src.startswith(found[0][:11]) and src.endswith(".wav")
    assert row.locator("audio").get_attribute("preload") == "none"
    assert tab.problems == []


def test_every_criterion_narrows_like_the_python_filter(site: Site, tab: Tab) -> None:
    page = tab.page
    queries: list[dict[str, str]] = [
        {"number": "55502", "dir": "in", "min": "60"},
        {"name": "bob", "disp": "NO ANSWER", "from": "2024-02-20", "to": "2024-03-05"},
        {"number": "5550", "dir": "out", "from": "2024-03-10"},
        {"ext": "201", "disp": "ANSWERED", "min": "100", "from": "2024-02-25", "to": "2024-03-02"},
    ]
    for query in queries:
        page.goto(site.search(**query))
        found = results(page)
        assert found == expected(site.calls, **query), query
        assert 0 < len(found) <= 500
    assert tab.problems == []


def test_only_the_days_asked_are_fetched(site: Site, tab: Tab) -> None:
    page = tab.page
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    span = {"from": "2024-03-10", "to": "2024-03-12"}
    page.goto(site.search(number="21255501", **span))
    assert results(page) == expected(site.calls, number="21255501", **span)
    files = sorted(u.split("/search/", 1)[1] for u in fetched if "/search/" in u)
    assert files == ["2024/03/10.json", "2024/03/11.json", "2024/03/12.json", "months.json"]


def test_an_older_day_in_first_is_shown_at_its_place(site: Site, tab: Tab) -> None:
    """A day's matches are shown as soon as its file is in, below those of the newer days
    shown and above the older ones, while a newer day is still loading; once it is in,
    the order and the count are those of a search in order."""
    page = tab.page
    held: list[Any] = []
    # the second newest day held back: the newest is in first, then the day awaited and six
    # ahead are asked, and no more until the one awaited is in
    page.route("**/search/2024/03/29.json", lambda route: held.append(route))
    query = {"number": "21255501", "from": "2024-03-20", "to": "2024-03-30"}
    page.goto(site.search(**query))
    days = ["2024/03/30", *(f"2024/03/{d}" for d in range(23, 29))]
    every_day_shown = "ds => ds.every(d => document.querySelector(`#results a[href^='${d}/']`))"
    wait_until(page, every_day_shown, days)
    shown = page.eval_on_selector_all(
        "#results tbody td.day a", "links => links.map(a => a.getAttribute('href'))"
    )
    everything = expected(site.calls, **query)
    assert shown == [link for link in everything if "2024/03/23" <= link[:10] != "2024/03/29"]
    assert {link[:10] for link in shown} == set(days)
    summary = page.locator("#found").inner_text()
    assert summary.startswith(f"{len(shown)} calls, ") and summary.endswith(" so far…")
    assert page.locator("#results").get_attribute("data-done") is None
    held[0].continue_()
    assert results(page) == everything
    assert page.locator("#found").inner_text().startswith(f"{len(everything)} calls, ")
    assert tab.problems == []


def test_a_bookmarked_query_url_gives_the_same_results(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{site.url}search.html")
    assert page.locator("#results").is_hidden()
    submit(page, number="555-0123", dir="in", **{"from": "2024-02-15"})
    typed = results(page)
    assert typed == expected(site.calls, number="555-0123", dir="in", **{"from": "2024-02-15"})
    bookmark = page.url
    assert "number=555-0123" in bookmark and "dir=in" in bookmark and "from=2024-02-15" in bookmark

    other = page.context.new_page()  # as if opened from a bookmark or a message
    other.goto(bookmark)
    assert results(other) == typed
    assert other.locator("#search [name=number]").input_value() == "555-0123"
    assert other.locator("#search [name=dir]").input_value() == "in"

    page.go_back()  # the empty query again: the URL holds the state
    page.wait_for_url(f"{site.url}search.html")
    page.go_forward()
    assert results(page) == typed
    assert tab.problems == []


def test_hostile_caller_names_are_shown_as_text(site: Site, tab: Tab) -> None:
    page = tab.page
    for name in (HOSTILE_IMG, HOSTILE_SCRIPT):
        page.goto(site.search(name=name, **{"from": "2024-03-01"}))
        found = results(page)
        assert found == expected(site.calls, name=name, **{"from": "2024-03-01"})
        names = set(page.locator("#results tbody .name").all_inner_texts())
        assert names == {name}
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.locator("#results img, #results script").count() == 0
    assert page.locator("script").count() == 2  # search.js and player.js
    assert tab.problems == []


def test_the_uniqueid_link_highlights_the_call(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(site.search(number="2125550142", **{"to": "2024-02-29"}))
    found = results(page)
    target = found[-1]  # the oldest: far down its day, so the page has to scroll to it
    page.locator(f"#results td.day a[href='{target}']").click()
    page.wait_for_url(f"{site.url}{target}")
    uid = target.split("#", 1)[1]
    row = page.locator(f"#calls tbody tr[id='{uid}']")
    assert row.evaluate("r => r.matches(':target')")
    other = page.locator("#calls tbody tr:not(:target)").first
    background = "r => getComputedStyle(r).backgroundColor"
    assert row.evaluate(background) != other.evaluate(background)
    assert row.evaluate(
        "r => { const b = r.getBoundingClientRect(); return b.top >= 0 && b.bottom <= innerHeight }"
    )
    assert uid in row.inner_text() or row.locator("audio").get_attribute("src")
    assert tab.problems == []


@pytest.mark.parametrize("width", [375, 1280])
def test_the_search_page_fits_the_screen(site: Site, browser: Any, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 740}, is_mobile=width < 500)
    try:
        page = context.new_page()
        page.goto(site.search(number="2125550142"))
        assert results(page)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        assert page.locator("#results thead").is_visible() is (width > 900)
    finally:
        context.close()


def test_a_year_of_days_is_searched_whole_and_in_order(
    tmp_path_factory: pytest.TempPathFactory, tab: Tab
) -> None:
    """366 day files (2024), fetched six ahead: every match, newest first, across every
    month, and a range that starts and ends inside months."""
    root = tmp_path_factory.mktemp("year")
    rng = random.Random(2024)
    calls = []
    for d in range(366):
        when = date(2024, 1, 1) + timedelta(days=d)
        day = when.strftime("%Y/%m/%d")
        for i in range(3):
            seconds = 9 * 3600 + i * 3600 + rng.randrange(3600)
            hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
            uid = f"{1704067200 + d * 86400 + seconds}.{d * 3 + i}"
            number = f"212555{rng.randrange(100, 110):04}"
            entry = {
                "file": f"{day}/in-201-{number}-{when:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{uid}.wav",
                "uniqueid": uid,
                "kind": "in",
                "caller_number": number,
                "caller_name": rng.choice(NAMES),
                "dst": "201",
                "started_at": f"{when:%Y-%m-%d}T{hh:02}:{mm:02}:{ss:02}+01:00",
                "billsec": 30,
                "disposition": "ANSWERED",
            }
            calls.append(Call(day, entry, "201", i))
    build(root, calls)
    with serving(root) as url:
        page = tab.page
        for query in (
            {"number": "2125550105"},
            {"number": "2125550103", "from": "2024-02-10", "to": "2024-11-20"},
        ):
            page.goto(f"{url}search.html?{urlencode(query)}")
            found = results(page)
            assert found == expected(calls, **query), query
            assert len({link[:7] for link in found}) >= 10  # across the months
    assert tab.problems == []


def test_older_rows_shown_early_give_way_to_the_newest_500(
    tmp_path_factory: pytest.TempPathFactory, tab: Tab
) -> None:
    """Days of 100 calls, the second newest held back: the days after it fill the 500
    rows; when it comes in, its calls take their place and the oldest shown go."""
    root = tmp_path_factory.mktemp("full")
    calls = []
    for d in range(12):
        when = date(2024, 5, 1) + timedelta(days=d)
        day = when.strftime("%Y/%m/%d")
        for i in range(100):
            hh, mm = divmod(8 * 60 + i * 5, 60)
            uid = f"{1714550400 + d * 86400 + i}.{d * 100 + i}"
            entry = {
                "file": f"{day}/in-201-2125550100-{when:%Y%m%d}-{hh:02}{mm:02}00-{uid}.wav",
                "uniqueid": uid,
                "kind": "in",
                "caller_number": "2125550100",
                "dst": "201",
                "started_at": f"{when:%Y-%m-%d}T{hh:02}:{mm:02}:00+01:00",
                "billsec": 30,
                "disposition": "ANSWERED",
            }
            calls.append(Call(day, entry, "201", i))
    build(root, calls)
    held: list[Any] = []
    with serving(root) as url:
        page = tab.page
        page.route("**/search/2024/05/11.json", lambda route: held.append(route))
        page.goto(f"{url}search.html?number=2125550100")
        wait_until(page, "() => document.getElementById('found').textContent.startsWith('The')")
        wait_until(page, "() => document.querySelectorAll('#results tbody tr').length === 500")
        held[0].continue_()
        everything = expected(calls, number="2125550100")
        assert results(page) == everything[:500]
        summary = page.locator("#found").inner_text()
        assert summary.startswith("The newest 500 of 1,200 calls, ")
    assert tab.problems == []


def test_two_months_of_2000_calls_a_day_are_searched_exactly(
    tmp_path_factory: pytest.TempPathFactory, tab: Tab
) -> None:
    """The volume of a busy PBX: 2,000 calls a day over two months (120,000 calls, 60 day
    files of ~290 KB), only the search files (no day pages, which the results only link
    to): a number search, a partial one and one narrowed to a range find exactly what the
    Python filter finds. A year at this volume is `scripts/bench search`'s."""
    from agent.publish.index import STATIC

    root = tmp_path_factory.mktemp("busy")
    rng = random.Random(2000)
    calls: list[Call] = []
    parts: dict[str, search.DayPart] = {}
    for d in range(60):
        when = date(2024, 2, 1) + timedelta(days=d)
        day = when.strftime("%Y/%m/%d")
        part = parts[day] = search.DayPart(day)
        for i in range(2000):
            seconds = 8 * 3600 + i * 18 + rng.randrange(18)
            hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
            uid = f"{1706745600 + d * 86400 + seconds}.{d * 2000 + i}"
            number = f"212555{rng.randrange(10_000):04}"
            entry = {
                "file": f"{day}/in-201-{number}-{when:%Y%m%d}-{hh:02}{mm:02}{ss:02}-{uid}.wav",
                "uniqueid": uid,
                "kind": "in",
                "caller_number": number,
                "caller_name": rng.choice(NAMES),
                "dst": "201",
                "started_at": f"{when:%Y-%m-%d}T{hh:02}:{mm:02}:{ss:02}+01:00",
                "billsec": 30,
                "disposition": "ANSWERED",
            }
            part.add(entry, "201")
            calls.append(Call(day, entry, "201", i))
    files = dict(STATIC)
    files["search.html"] = render_search(title=TITLE)
    files["search/months.json"] = search.render_months(parts)
    files |= {search.path_of(day): part.data() for day, part in parts.items()}
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    with serving(root) as url:
        page = tab.page
        for query in (
            {"number": "2125550142"},
            {"number": "5550142"},
            {"number": "212555014", "from": "2024-02-20", "to": "2024-03-10"},
        ):
            page.goto(f"{url}search.html?{urlencode(query)}")
            found = results(page)
            want = expected(calls, **query)
            assert 0 < len(want) <= 500, query  # all shown: the comparison is whole
            assert found == want, query
            assert len({link[:10] for link in found}) > 3, query  # across days
    assert tab.problems == []
