"""One set of inotify watches for several destinations' agents: each feed sees every
path, each agent is woken, and the watcher thread ends with the last feed."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.spool.shared import SharedWatcher
from tests.support.daemon import wait_for


def test_every_feed_sees_every_path_and_is_woken(tmp_path: Path) -> None:
    (tmp_path / "2024").mkdir()
    shared = SharedWatcher(tmp_path)
    rung = [threading.Event(), threading.Event()]
    feeds = [shared.feed(rung[0].set), shared.feed(rung[1].set)]
    for feed in feeds:
        feed.watch_only(["", "2024"])
        feed.start()
    try:
        assert shared.watched == {"", "2024"}  # one set, however many agents ask
        (tmp_path / "2024" / "a.wav").write_bytes(b"x")
        (tmp_path / "b.wav").write_bytes(b"y")
        seen: list[set[str]] = [set(), set()]

        def both_saw() -> bool:
            for n, feed in enumerate(feeds):
                seen[n] |= set(feed.drain()[0])
            return all({"2024/a.wav", "b.wav"} <= s for s in seen)

        wait_for(both_saw, "both feeds to see both files")
        assert all(event.is_set() for event in rung)
    finally:
        before = threading.active_count()
        feeds[0].stop()
        feeds[0].stop()  # twice: still one stop of its own, the other feed watches on
        assert threading.active_count() == before
        feeds[1].stop()  # the last: the watcher's threads end (the autouse fixture checks)
