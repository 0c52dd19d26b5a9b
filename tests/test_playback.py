"""Playing calls in headless Chromium: players that seek (the test server answers Range
requests, as Apache and nginx do), one speed for the page, and the keyboard (Space plays
or pauses the call in focus, the arrows seek 5 s) on the day page and the search results,
without taking over typing in the filter and search fields. The calls here have no CDR:
their durations come from the audio."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.publish import search
from agent.publish.index import STATIC, render_day, render_search
from tests.support.chromium import Tab, serving, wait_until
from tests.support.mixmonitor import write_recording

DAY = "2024/03/15"
LENGTHS = {"1710497702.1": 30.0, "1710497702.2": 20.0}


@dataclass
class Site:
    url: str
    ranges: list[str]


def entry(n: int, uid: str, seconds: float, ext: str = "wav") -> dict[str, Any]:
    return {
        "file": f"{DAY}/in-201-2125550{n:03}-20240315-10{n:02}00-{uid}.{ext}",
        "uniqueid": uid,
        "kind": "in",
        "caller_number": f"2125550{n:03}",
        "caller_name": "<script>window.pwned=1</script>" if n == 2 else "Ann",
        "dst": "201",
        "started_at": f"2024-03-15T10:{n:02}:00+01:00",
        "duration": None,
        "billsec": None,
        "disposition": None,
        "audio_seconds": seconds,
        "size": 1,
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("www")
    entries = [entry(n, uid, s) for n, (uid, s) in enumerate(LENGTHS.items(), start=1)]
    entries.append(entry(3, "1710497702.3", 4.0, "gsm"))  # download only: no player
    for rel, content in STATIC.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / DAY).mkdir(parents=True)
    for e in entries:
        fmt = e["file"].rsplit(".", 1)[1]
        write_recording(root / e["file"], seconds=e["audio_seconds"], fmt=fmt, seed=1)
    page = render_day(DAY, entries, title="Calls", generated_at="now")
    (root / DAY / "index.html").write_bytes(page)
    (root / "search.html").write_bytes(render_search(title="Calls"))
    part = search.DayPart(DAY)
    for e in entries:
        part.add(e, "201")
    (root / "search" / DAY).parent.mkdir(parents=True)
    (root / search.path_of(DAY)).write_bytes(part.data())
    (root / "search/months.json").write_bytes(search.render_months([DAY]))
    ranges: list[str] = []
    with serving(root, ranges) as url:
        yield Site(url, ranges)


def audio_state(page: Any, uid: str) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(
        """uid => { const a = document.getElementById(uid).querySelector('audio');
        return {paused: a.paused, time: a.currentTime, rate: a.playbackRate,
                seekable: a.seekable.length ? a.seekable.end(0) : 0}; }""",
        uid,
    )
    return state


def wait_audio(page: Any, uid: str, condition: str) -> None:
    """Wait (10 s at most) until `condition` holds of the call's <audio> element `a`."""
    wait_until(
        page,
        f"uid => {{ const a = document.getElementById(uid).querySelector('audio'); "
        f"return {condition}; }}",
        uid,
    )


def test_the_day_page_plays_seeks_and_speeds_up_from_the_keyboard(site: Site, tab: Tab) -> None:
    page = tab.page
    first, second = LENGTHS
    page.goto(f"{site.url}{DAY}/index.html#{first}")
    wait_until(page, "uid => document.activeElement.id === uid", first)  # the linked call
    assert page.locator("#calls td.dur").all_inner_texts() == ["0:30", "0:20", "0:04"]
    assert page.locator("p.summary").inner_text() == "3 recordings, 54 s in all"

    page.keyboard.press(" ")
    wait_audio(page, first, "!a.paused && a.currentTime > 0")
    page.keyboard.press(" ")
    wait_audio(page, first, "a.paused")
    # The server answered the player's Range request, so all of the file is seekable.
    wait_audio(page, first, "a.seekable.length === 1 && a.seekable.end(0) > 29.9")
    assert any(r.startswith(f"/{DAY}/") and " bytes=" in r for r in site.ranges)

    at = audio_state(page, first)["time"]
    page.keyboard.press("ArrowRight")
    wait_audio(page, first, f"Math.abs(a.currentTime - {at + 5}) < 0.01")
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    wait_audio(page, first, "a.currentTime === 0")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    wait_audio(page, first, "Math.abs(a.currentTime - 25) < 0.01")
    page.keyboard.press(" ")  # plays on from where it was sought: 25 s in
    wait_audio(page, first, "!a.paused && a.currentTime > 25.1")
    page.keyboard.press(" ")
    wait_audio(page, first, "a.paused")

    # One speed for the page, for the players playing and those that start later.
    page.select_option("#speed-rate", "2")
    assert audio_state(page, first)["rate"] == 2
    page.locator(f"tr[id='{second}'] td.time").click()  # focus moves to that call's row
    page.keyboard.press(" ")
    wait_audio(page, second, "!a.paused && a.playbackRate === 2")
    page.locator(f"tr[id='{first}'] audio").focus()  # Tab stops on a player: same keys
    page.keyboard.press(" ")
    wait_audio(page, first, "!a.paused && a.playbackRate === 2")
    wait_audio(page, second, "a.paused")  # one call plays at a time
    page.keyboard.press(" ")
    wait_audio(page, first, "a.paused")

    # Typing a space or an arrow in the filter is typing.
    page.locator("#filter").focus()
    page.keyboard.type("an 1")
    page.keyboard.press("ArrowLeft")
    assert page.locator("#filter").input_value() == "an 1"
    assert audio_state(page, first)["paused"] and audio_state(page, second)["paused"]
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert tab.problems == []


def test_search_results_play_from_the_keyboard_with_their_durations(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{site.url}search.html?number=2125550")
    wait_until(page, "() => document.getElementById('results').dataset.done === '1'")
    assert page.locator("#results td.dur").all_inner_texts() == ["0:04", "0:20", "0:30"]
    assert page.locator("#found").inner_text() == "3 calls, 54 s in all"
    assert page.locator("#results tbody .name").all_inner_texts()[1].startswith("<script>")

    page.locator("#q-name").focus()
    page.keyboard.type("a n")  # spaces typed in a search field stay there
    assert page.locator("#q-name").input_value() == "a n"
    row = page.locator("#results tbody tr").nth(2)
    row.locator("td.time").click()
    page.keyboard.press(" ")
    wait_until(page, "() => !document.querySelectorAll('#results audio')[1].paused")
    page.keyboard.press("ArrowRight")
    wait_until(page, "() => document.querySelectorAll('#results audio')[1].currentTime >= 5")
    page.keyboard.press(" ")
    wait_until(page, "() => document.querySelectorAll('#results audio')[1].paused")
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert tab.problems == []
