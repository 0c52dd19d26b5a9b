"""A recording prepared once for several destinations: where two would ship the same bytes
(the same recipe, the same call fields) the second gets a hard link to the first's staged
copy, in its own staging folder, instead of copying, tagging, converting and hashing
again. The first's copy is kept (a second link beside it, no second copy on disk) until
every destination of that recipe took it, for a minute and `KEPT` copies (`KEPT_BYTES`) at
most: a destination far behind, or paused, prepares its own and holds no disk meanwhile."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from agent.log import kv
from agent.media.prepare import Prepared, Recipe, prepare
from agent.model import identity_of

log = logging.getLogger(__name__)

KEPT = 64  # copies kept for the destinations still to come to them
KEPT_BYTES = 256 << 20  # hour-long calls are 57 MB as WAV: a PBX's disk is not ours
KEPT_SECONDS = 60.0
REMEMBERED = 1024  # recent preparations (their outcome only)

_Key = tuple[str, bool, str, int, bool, str]


@dataclass
class _Kept:
    path: Path  # the spare link, beside the first destination's copy
    wanted: int  # destinations still to take it
    at: float
    size: int


class PreparedOnce:
    """`prepare` for the agents of several destinations, each with its own staging;
    `recipes` are theirs, to know how many will want each copy."""

    def __init__(
        self, recipes: Sequence[Recipe], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sharing = Counter(_alike(r) for r in recipes)
        self.clock = clock
        self.made = 0  # copies prepared
        self.linked = 0  # copies another destination had prepared
        self._lock = threading.Lock()
        self._recent: OrderedDict[_Key, Future[Prepared]] = OrderedDict()
        self._kept: OrderedDict[_Key, _Kept] = OrderedDict()

    def prepare(
        self,
        recipe: Recipe,
        *,
        src: Path,
        key: str,
        fields: Mapping[str, object],
        repair_header: bool,
    ) -> Prepared:
        """As `prepare`; a copy being made for another destination is waited for (it is
        local work, never the network) and linked when it is still kept and `src` has
        not changed since."""
        which = _key_of(recipe, src, fields, repair_header)
        with self._lock:
            self._drop_old()
            theirs = self._recent.get(which)
            if theirs is not None and theirs.done() and theirs.exception() is not None:
                theirs = None  # it failed there: ours may not
            mine = None if theirs is not None else self._remember(which)
        if mine is None:
            assert theirs is not None
            linked = _link(_result(theirs), recipe.staging, key, src)
            with self._lock:
                if linked is not None:
                    self.linked += 1
                    self._taken(which)
                    log.debug(kv("staged-once", file=src.name, linked=str(linked.path)))
                    return linked
                mine = self._remember(which)  # theirs failed or is gone: ours, for all
        try:
            made = prepare(recipe, src=src, key=key, fields=fields, repair_header=repair_header)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        with self._lock:
            self.made += 1
            mine.set_result(self._keep(which, made, self.sharing[_alike(recipe)] - 1))
        return made

    def tidy(self) -> None:
        """Remove the copies kept longer than KEPT_SECONDS (no call came to do it)."""
        with self._lock:
            self._drop_old()

    def close(self) -> None:
        """Remove every kept copy (nothing is shipped any more)."""
        with self._lock:
            for which in list(self._kept):
                self._release(which)

    def _remember(self, which: _Key) -> Future[Prepared]:
        future = self._recent[which] = Future()
        self._recent.move_to_end(which)
        while len(self._recent) > REMEMBERED:
            self._recent.popitem(last=False)
        return future

    def _keep(self, which: _Key, made: Prepared, wanted: int) -> Prepared:
        """`made` as the others will link it: through a spare link of its own, so the
        first destination removing its copy after its upload does not take it away."""
        self._release(which)  # an earlier copy of it (the spool file changed since)
        if wanted <= 0:
            return made
        spare = made.path.with_name(f"{made.path.name}.kept")
        try:
            spare.unlink(missing_ok=True)
            os.link(made.path, spare)
        except OSError:
            return made  # kept as long as the first destination's upload holds it
        self._kept[which] = _Kept(spare, wanted, self.clock(), made.size)
        while len(self._kept) > KEPT or sum(k.size for k in self._kept.values()) > KEPT_BYTES:
            self._release(next(iter(self._kept)))
        return replace(made, path=spare) if which in self._kept else made

    def _taken(self, which: _Key) -> None:
        kept = self._kept.get(which)
        if kept is not None:
            kept.wanted -= 1
            if kept.wanted <= 0:
                self._release(which)

    def _drop_old(self) -> None:
        now = self.clock()
        while self._kept:
            oldest = next(iter(self._kept))
            if now - self._kept[oldest].at < KEPT_SECONDS:
                return
            self._release(oldest)

    def _release(self, which: _Key) -> None:
        kept = self._kept.pop(which, None)
        if kept is not None:
            kept.path.unlink(missing_ok=True)


def _alike(recipe: Recipe) -> tuple[bool, str, int]:
    """What of a recipe decides the bytes (the staging folder does not)."""
    return recipe.tags, recipe.transcode.format, recipe.transcode.bitrate


def _key_of(recipe: Recipe, src: Path, fields: Mapping[str, object], repair_header: bool) -> _Key:
    fields_json = json.dumps(fields, sort_keys=True, default=str)
    return (str(src), *_alike(recipe), repair_header, fields_json)


def _result(future: Future[Prepared]) -> Prepared | None:
    try:
        return future.result()
    except BaseException:  # theirs failed: it says so in their destination's state
        return None


def _link(theirs: Prepared | None, staging: Path, key: str, src: Path) -> Prepared | None:
    """Their copy, under our name in our staging; None when it cannot be (gone, another
    filesystem) or the spool file changed since it was copied."""
    if theirs is None:
        return None
    target = staging / f"{key}.{theirs.format}"
    if target == theirs.path:
        return None  # our own earlier copy, since removed or about to be
    try:
        if identity_of(os.lstat(src)) != theirs.source:
            return None
        staging.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # a leftover of ours, from before a crash
        os.link(theirs.path, target)
    except OSError:
        return None
    return replace(theirs, path=target)
