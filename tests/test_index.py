"""The index pages: the HTML checked as text, then the pages opened in real headless
Chromium (Debian's, driven by Playwright) from a local HTTP server, as a webserver shows
them: rows, filter, playback, hostile CDR values, download-only formats, the root page.

Set RECSYNC_SCREENSHOT=1 to write docs/day-page.png from the day page."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.publish.index import (
    CSP,
    STATIC,
    DayTotals,
    playable,
    render_day,
    render_root,
    render_search,
)
from agent.sample import tone
from agent.spool.wavheader import wav_header
from tests.support.cdr import call_fields
from tests.support.chromium import Tab, serving, wait_until

RATE = 8000
TITLE = "Call recordings"
OUR_SCRIPTS = ["../../../static/recsync.js", "../../../static/player.js"]  # a day page's
GENERATED = "2024-03-15T23:59:00+00:00"
HOSTILE_IMG = '<img src=x onerror="window.pwned=1">'
HOSTILE_SCRIPT = "<script>window.pwned=2</script>"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def tone_wav(seconds: float, freq: float = 440.0) -> bytes:
    """A real PCM .wav as Asterisk writes it: 8 kHz 16-bit mono, a sine tone."""
    data = tone(seconds, freq)
    return wav_header("wav", len(data)) + data


def entry(file: str, **fields: object) -> dict[str, object]:
    """A manifest entry (DESIGN.md fields) for the recording at root-relative `file`."""
    name = file.rsplit("/", 1)[-1]
    facts = {"size": 1024, "sha256": "0" * 64, "format": name.rsplit(".", 1)[-1].lower()}
    return call_fields(file=file, original=file, **facts) | fields


def day_html(entries: list[dict[str, object]], day: str = "2024/03/15") -> str:
    return render_day(day, entries, title=TITLE, generated_at=GENERATED).decode()


@dataclass
class Parsed:
    """What an HTML parser sees: every start tag with its attributes, and the text."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(html: str) -> Parsed:
    parsed = Parsed()

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            parsed.tags.append((tag, dict(attrs)))

        def handle_data(self, data: str) -> None:
            parsed.text.append(data)

    parser = Parser(convert_charrefs=True)
    parser.feed(html)
    parser.close()
    return parsed


# An event-handler attribute inside a tag ("<" in text is always escaped, so every "<"
# in the output starts a real tag; ">" in attribute values is escaped too).
HANDLER_ATTR = re.compile(r"<[a-zA-Z][^>]*?\son[a-z]+\s*=", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\ssrc=)[^>]*>", re.IGNORECASE)


# ---------------------------------------------------------------- the HTML as text


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("wav", True),
        ("mp3", True),
        ("ogg", True),
        ("opus", True),
        ("flac", True),
        ("WAV", False),  # wav49: GSM in RIFF, Asterisk's ".WAV"
        ("wav49", False),
        ("gsm", False),
        ("ulaw", False),
        ("alaw", False),
        ("sln", False),
        ("g729", False),
    ],
)
def test_playable(fmt: str, expected: bool) -> None:
    assert playable(fmt) is expected


def hostile_entries() -> list[dict[str, object]]:
    return [
        entry(
            "2024/03/15/a.wav",
            caller_name=HOSTILE_IMG,
            caller_number="\"><svg onload='alert(1)'>",
            dst="600<b>",
            did="&amp;",
            disposition="<i>ANSWERED</i>",
            kind="<u>in</u>",
            started_at='"><script>alert(3)</script>',
        ),
        entry("2024/03/15/b.wav", caller_name=HOSTILE_SCRIPT, caller_number="' onmouseover='x"),
    ]


def test_cdr_values_are_escaped_and_shown_as_text() -> None:
    html = day_html(hostile_entries())
    parsed = parse(html)
    assert parsed.all("img") == [] and parsed.all("svg") == []
    assert parsed.all("b") == [] and parsed.all("i") == [] and parsed.all("u") == []
    assert [s["src"] for s in parsed.all("script")] == OUR_SCRIPTS  # ours, from their files
    text = "".join(parsed.text)
    for value in (HOSTILE_IMG, HOSTILE_SCRIPT, "\"><svg onload='alert(1)'>", "600<b>", "&amp;"):
        assert value in text
    # The one attribute a CDR value reaches is quoted and escaped.
    assert {attrs.get("datetime") for attrs in parsed.all("time")} == {
        '"><script>alert(3)</script>',
        "2024-03-15T10:15:02+01:00",
    }


def test_titles_are_escaped() -> None:
    title = "<script>x()</script> & co"
    day = render_day("2024/03/15", [], title=title, generated_at="<b>").decode()
    root = render_root([("2024/03/15", 1)], title=title, generated_at="<b>").decode()
    for html in (day, root):
        parsed = parse(html)
        assert len(parsed.all("script")) == (len(OUR_SCRIPTS) if html is day else 0)
        assert parsed.all("b") == []
        assert title in "".join(parsed.text)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40))
def test_any_caller_name_is_text(name: str) -> None:
    """Whatever the CDR holds, the page has the same elements and shows it verbatim."""
    benign = parse(day_html([entry("2024/03/15/a.wav", caller_name="x")]))
    parsed = parse(day_html([entry("2024/03/15/a.wav", caller_name=name)]))
    assert [tag for tag, _ in parsed.tags] == [tag for tag, _ in benign.tags]
    assert name.strip() in "".join(parsed.text)


@pytest.mark.parametrize(
    "name",
    [
        "in 600 2125550100.wav",
        "call #42.wav",
        "100% done.wav",
        "Zoë Ørsted - 电话.wav",
        "a?b&c=d'e\"f<g>.mp3",
        "javascript:alert(1).wav",
    ],
)
def test_links_are_relative_and_url_encoded(name: str) -> None:
    parsed = parse(day_html([entry(f"2024/03/15/{name}")]))
    links = [a["href"] for a in parsed.all("a") if "download" in a]
    sources = [audio["src"] for audio in parsed.all("audio")]
    assert links == sources == [quote(name, safe="")]
    href = links[0]
    assert href is not None
    assert unquote(href) == name
    assert re.fullmatch(r"[A-Za-z0-9._~%-]+", href)  # no scheme, no "#", "?", "/" or space
    # Resolved against the page, it is the recording's own URL.
    page = "https://pbx.example/rec/2024/03/15/index.html"
    assert unquote(urlsplit(urljoin(page, href)).path) == f"/rec/2024/03/15/{name}"


def test_a_name_that_is_not_utf8_links_to_its_bytes() -> None:
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 on disk
    parsed = parse(day_html([entry(f"2024/03/15/{name}")]))
    assert parsed.all("audio")[0]["src"] == "caf%E9.wav"


def test_every_page_has_the_strict_csp_and_no_inline_code() -> None:
    day = day_html([*hostile_entries(), entry("2024/03/15/c.gsm")])
    root = render_root([("2024/03/15", 3)], title=TITLE, generated_at=GENERATED).decode()
    search = render_search(title=TITLE).decode()
    for html in (day, root, search):
        metas = [m for m in parse(html).all("meta") if m.get("http-equiv")]
        assert metas == [{"http-equiv": "Content-Security-Policy", "content": CSP}]
        assert "default-src 'none'" in CSP and "script-src 'self'" in CSP
        assert HANDLER_ATTR.search(html) is None
        assert INLINE_SCRIPT.search(html) is None
        assert "<style" not in html
        for tag, attrs in parse(html).tags:
            assert not [a for a in attrs if a.startswith("on") or a == "style"], tag
            if tag == "script":
                assert attrs.get("src")
    assert HANDLER_ATTR.search('<img src=x onerror="y">')  # the checks do catch it
    assert INLINE_SCRIPT.search("<script>x</script>")


def test_every_player_waits_to_be_pressed() -> None:
    entries = [entry(f"2024/03/15/{i}.wav") for i in range(50)]
    entries += [entry("2024/03/15/x.mp3"), entry("2024/03/15/y.gsm")]
    audios = parse(day_html(entries)).all("audio")
    assert len(audios) == 51
    assert all(a.get("preload") == "none" and "controls" in a for a in audios)
    assert len(re.findall(r"<audio\b", day_html(entries))) == 51


@pytest.mark.parametrize("name", ["c.gsm", "c.WAV", "c.ulaw", "c.alaw", "c.sln", "c.g729"])
def test_unplayable_formats_are_download_only(name: str) -> None:
    html = day_html([entry(f"2024/03/15/{name}", format=name.rsplit(".", 1)[1].lower())])
    parsed = parse(html)
    assert parsed.all("audio") == []
    assert [a["href"] for a in parsed.all("a") if "download" in a] == [name]
    assert "download only" in "".join(parsed.text)


def cell_text(html: str, cls: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", m) for m in re.findall(rf'<td class="{cls}"[^>]*>(.*?)</td>', html)
    ]


def test_row_fields() -> None:
    html = day_html(
        [
            entry("2024/03/15/a.wav", billsec=62, duration=75),
            entry("2024/03/15/b.wav", billsec=None, duration=3725, kind="out", did=None),
            entry(
                "2024/03/15/c.wav",
                billsec=None,
                duration=None,
                caller_name=None,
                caller_number=None,
                disposition=None,
                kind="q",
                started_at=None,
            ),
        ]
    )
    assert cell_text(html, "dur") == ["1:02", "1:02:05", ""]
    assert cell_text(html, "time") == ["10:15:02", "10:15:02", ""]
    assert cell_text(html, "kind") == ["Incoming", "Outgoing", "Queue"]
    assert cell_text(html, "caller") == ["Bob Buyer 2125550100"] * 2 + [" unknown"]
    assert cell_text(html, "dst") == ["600 via 2125550199", "600", "600 via 2125550199"]
    assert cell_text(html, "disp") == ["ANSWERED", "ANSWERED", ""]
    assert 'title="1:15 with ringing"' in html


def test_a_day_streamed_with_its_totals_is_the_same_page() -> None:
    """How publishing renders a day: entries read once, totals counted beforehand."""
    entries = [entry(f"2024/03/15/call{n}.wav", billsec=n, duration=n + 5) for n in range(50)]
    entries.append(entry("2024/03/15/nocdr.wav", billsec=None, duration=None))
    totals = DayTotals()
    for one in entries:
        totals.add(one)
    assert (totals.count, totals.seconds) == (51, sum(range(50)))
    streamed = render_day(
        "2024/03/15", iter(entries), title=TITLE, generated_at=GENERATED, totals=totals
    )
    assert streamed.decode() == day_html(entries)
    assert "51 recordings, 20 min in all" in streamed.decode()
    empty = render_day(
        "2024/03/15", iter([]), title=TITLE, generated_at=GENERATED, totals=DayTotals()
    )
    assert "No recordings on this day." in empty.decode()


def test_day_page_links_its_assets_relatively() -> None:
    page = "2024/03/15/index.html"
    for html, base in (
        (day_html([entry("2024/03/15/a.wav")]), page),
        (render_root([("2024/03/15", 1)], title=TITLE, generated_at=GENERATED).decode(), ""),
    ):
        parsed = parse(html)
        assets = [link["href"] for link in parsed.all("link")] + [
            script["src"] for script in parsed.all("script")
        ]
        for asset in assets:
            assert asset is not None and "//" not in asset and not asset.startswith("/")
            resolved = urlsplit(urljoin(f"http://h/{base}", asset)).path.lstrip("/")
            assert resolved in STATIC
    assert set(STATIC) == {
        "static/recsync.css",
        "static/recsync.js",
        "static/search.js",
        "static/player.js",
        "static/favicon.svg",
    }
    assert all(content for content in STATIC.values())
    assert b"http" not in STATIC["static/recsync.css"]  # no external fonts or imports


def test_root_lists_days_newest_first_with_counts() -> None:
    html = render_root(
        [("2023/12/31", 1), ("2024/03/15", 3), ("2024/03/14", 1200)],
        title=TITLE,
        generated_at=GENERATED,
    ).decode()
    parsed = parse(html)
    assert [a["href"] for a in parsed.all("a")] == [
        "index.html",
        "search.html",
        "2024/03/15/index.html",
        "2024/03/14/index.html",
        "2023/12/31/index.html",
    ]
    text = " ".join("".join(parsed.text).split())
    assert "Fri 15 3 calls Thu 14 1,200 calls" in text
    assert "December 2023 1 call Sun 31 1 call" in text
    assert "1,204 recordings on 3 days" in text


@pytest.mark.parametrize("day", ["2024-03-15", "2024/3/15", "../../etc", "2024/02/30", ""])
def test_bad_days_are_refused(day: str) -> None:
    with pytest.raises(ValueError):
        render_day(day, [], title=TITLE, generated_at=GENERATED)
    with pytest.raises(ValueError):
        render_root([(day, 1)], title=TITLE, generated_at=GENERATED)


# ---------------------------------------------------------------- in headless Chromium


@dataclass
class Site:
    """The destination folder as a webserver serves it."""

    root: Path
    url: str  # ending in "/"
    day: str  # the day page of three playable calls
    hostile: str  # the day page with hostile CDR values and download-only formats
    lengths: dict[str, float]  # caller name -> seconds of audio


def write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def build_site(root: Path) -> tuple[dict[str, float], list[tuple[str, int]]]:
    """Three playable calls on 2024/03/15, hostile and unplayable ones on 2024/03/14, one
    call on 2023/12/31, the root page and the static files."""
    for rel, content in STATIC.items():
        write(root / rel, content)
    # caller, file, seconds of tone; then the CDR: kind, number, destination, billsec (a
    # real call's figures, not the short test tone's)
    calls = [
        ("Alice Anders", "in-600-2125550101-20240315-091502-1710490502.1.wav", 1.0,
         "in", "2125550101", "600", 62),
        ("Bob Buyer", "out-2125550102-201-20240315-101502-1710494102.2.wav", 1.5,
         "out", "201", "2125550102", 185),
        ("Zoë Ørsted", "Zoë Ørsted #2 100% sure.wav", 2.0,  # a space, "#", "%", non-ASCII
         "internal", "203", "600", 734),
    ]  # fmt: skip
    entries = []
    for i, (caller, name, seconds, kind, number, dst, billsec) in enumerate(calls):
        audio = tone_wav(seconds, 330 + 110 * i)
        write(root / "2024/03/15" / name, audio)
        entries.append(
            entry(
                f"2024/03/15/{name}",
                caller_name=caller,
                caller_number=number,
                kind=kind,
                dst=dst,
                did="2125550199" if kind == "in" else None,
                started_at=f"2024-03-15T{9 + i:02}:15:02+01:00",
                duration=billsec + 9,
                billsec=billsec,
                size=len(audio),
            )
        )
    write(
        root / "2024/03/15/index.html",
        render_day("2024/03/15", entries, title=TITLE, generated_at=GENERATED),
    )

    hostile = [
        entry("2024/03/14/img.wav", caller_name=HOSTILE_IMG, caller_number="666"),
        entry("2024/03/14/script.wav", caller_name=HOSTILE_SCRIPT, caller_number="667"),
        entry("2024/03/14/dave.gsm", caller_name="Dave Dialer", format="gsm"),
        entry("2024/03/14/erin.WAV", caller_name="Erin Early", format="wav"),
    ]
    write(root / "2024/03/14/img.wav", tone_wav(0.5))
    write(root / "2024/03/14/script.wav", tone_wav(0.5))
    write(root / "2024/03/14/dave.gsm", bytes(33 * 50))  # 50 GSM frames: 1 s
    write(root / "2024/03/14/erin.WAV", wav_header("WAV", 65 * 25) + bytes(65 * 25))
    write(
        root / "2024/03/14/index.html",
        render_day("2024/03/14", hostile, title=TITLE, generated_at=GENERATED),
    )

    old = [entry("2023/12/31/old.wav", caller_name="Old Year")]
    write(root / "2023/12/31/old.wav", tone_wav(0.5))
    write(
        root / "2023/12/31/index.html",
        render_day("2023/12/31", old, title=TITLE, generated_at=GENERATED),
    )

    days = [("2023/12/31", 1), ("2024/03/15", 3), ("2024/03/14", 4)]
    write(root / "index.html", render_root(days, title=TITLE, generated_at=GENERATED))
    return {call[0]: call[2] for call in calls}, days


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("www")
    lengths, _ = build_site(root)
    with serving(root) as url:
        yield Site(root, url, f"{url}2024/03/15/index.html", f"{url}2024/03/14/index.html", lengths)


def status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our local server)
        response.read()
        return int(response.status)


def visible_names(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#calls tbody tr:visible .name").all_inner_texts()]


def test_chromium_day_page_lists_calls_and_filters_as_you_type(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(site.day)
    assert visible_names(page) == ["Alice Anders", "Bob Buyer", "Zoë Ørsted"]
    assert page.locator("#calls tbody tr").count() == 3
    # The stylesheet applied (CSP allows our own): the header bar is coloured.
    assert page.eval_on_selector(".bar", "e => getComputedStyle(e).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )
    if os.environ.get("RECSYNC_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        # Bytes, written here: with path= Playwright writes from a thread pool it keeps.
        (DOCS / "day-page.png").write_bytes(page.screenshot(full_page=True))

    box = page.locator("#filter")
    assert box.is_visible()
    box.press_sequentially("bob")
    wait_until(
        page, "() => document.querySelectorAll('#calls tbody tr:not([hidden])').length === 1"
    )
    assert visible_names(page) == ["Bob Buyer"]
    assert page.locator("#shown").inner_text() == "1 of 3"

    box.fill("")
    box.press_sequentially("0102")  # the number Bob called: every visible field counts
    wait_until(
        page, "() => document.querySelectorAll('#calls tbody tr:not([hidden])').length === 1"
    )
    assert visible_names(page) == ["Bob Buyer"]
    box.fill("")
    box.press_sequentially("internal 12:")  # words match anywhere: direction, duration
    wait_until(
        page, "() => document.querySelectorAll('#calls tbody tr:not([hidden])').length === 1"
    )
    assert visible_names(page) == ["Zoë Ørsted"]

    box.fill("")
    box.press_sequentially("nobody at all")
    wait_until(page, "() => !document.getElementById('no-match').hidden")
    assert visible_names(page) == []

    box.fill("")
    wait_until(
        page, "() => document.querySelectorAll('#calls tbody tr:not([hidden])').length === 3"
    )
    assert tab.problems == []


def test_chromium_plays_the_recording(site: Site, tab: Tab) -> None:
    page = tab.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(site.day)
    assert page.locator("audio").count() == 3
    assert not [url for url in requests if url.endswith(".wav")]  # preload="none"

    # Zoë's file name holds a space, "#", "%" and non-ASCII: the encoded src must resolve.
    audio = page.locator("#calls tbody tr", has_text="Zoë Ørsted").locator("audio")
    duration = audio.evaluate(
        """async a => {
            await a.play();
            return a.duration;
        }"""
    )
    assert duration == pytest.approx(site.lengths["Zoë Ørsted"], abs=0.05)
    audio.evaluate(
        """a => new Promise((resolve, reject) => {
            const started = () => a.currentTime > 0 ? resolve(true) : setTimeout(started, 20);
            setTimeout(() => reject(new Error("never played")), 10000);
            started();
        })"""
    )
    assert audio.evaluate("a => a.error") is None

    for href in page.eval_on_selector_all("a[download]", "links => links.map(a => a.href)"):
        assert status(href) == 200
    assert tab.problems == []


def test_chromium_shows_hostile_names_as_text_and_runs_nothing(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(site.hostile)
    wait_until(page, "() => !document.getElementById('filter-box').hidden")  # our JS ran
    assert visible_names(page) == [HOSTILE_IMG, HOSTILE_SCRIPT, "Dave Dialer", "Erin Early"]
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.locator("#calls img, #calls script, #calls svg").count() == 0
    assert page.locator("script").count() == len(OUR_SCRIPTS)

    # Typing the markup filters on it as text.
    page.locator("#filter").press_sequentially("<script>")
    wait_until(
        page, "() => document.querySelectorAll('#calls tbody tr:not([hidden])').length === 1"
    )
    assert visible_names(page) == [HOSTILE_SCRIPT]
    assert page.evaluate("() => typeof window.pwned") == "undefined"

    # gsm and wav49 (".WAV"): no player, marked, and still downloadable.
    for caller, label in (("Dave Dialer", "GSM"), ("Erin Early", "WAV49")):
        row = page.locator("#calls tbody tr", has_text=caller)
        assert row.locator("audio").count() == 0
        assert row.locator(".noplay").inner_text() == f"{label}: download only"
        href = row.locator("a[download]").evaluate("a => a.href")
        assert status(href) == 200
    assert tab.problems == []


@pytest.mark.parametrize("width", [375, 800, 920, 1280])
def test_chromium_pages_fit_the_screen(site: Site, browser: Any, width: int) -> None:
    """No sideways scrolling from a phone up: cards up to 900 px, then a table."""
    context = browser.new_context(viewport={"width": width, "height": 740}, is_mobile=width < 500)
    try:
        page = context.new_page()
        for url in (site.day, site.hostile, site.url):
            page.goto(url)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, url
            for player in page.locator("#calls audio").all():
                bounds = player.bounding_box()
                assert bounds is not None and bounds["x"] + bounds["width"] <= width
        page.goto(site.day)
        assert page.locator("#calls thead").is_visible() is (width > 900)
    finally:
        context.close()


def test_chromium_root_page_lists_days_and_links_resolve(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(site.url)
    days = page.locator(".days a")
    assert [" ".join(t.split()) for t in days.all_inner_texts()] == [
        "Fri 15 3 calls",
        "Thu 14 4 calls",
        "Sun 31 1 call",
    ]
    assert page.locator("h2").all_inner_texts() == ["March 2024 7 calls", "December 2023 1 call"]
    hrefs = page.eval_on_selector_all("a:not([href$='search.html'])", "ls => ls.map(a => a.href)")
    assert len(hrefs) == 4
    for href in hrefs:
        assert href.startswith(site.url) and status(href) == 200
    days.first.click()
    page.wait_for_url(site.day)
    assert page.locator("h1").inner_text() == "Friday 15 March 2024"
    page.locator(".bar a").click()  # and back to the root
    page.wait_for_url(f"{site.url}index.html")
    assert tab.problems == []
