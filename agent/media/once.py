"""A recording prepared once for several destinations: where two would ship the same bytes
(the same recipe, the same call fields) the second gets a hard link to the first's staged
copy, in its own staging folder, instead of copying, tagging, converting and hashing
again. Nothing is kept beyond what the first destination's staging holds anyway: once its
copy is uploaded and removed, a destination that comes later prepares its own."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from agent.log import kv
from agent.media.prepare import Prepared, Recipe, prepare
from agent.model import identity_of

log = logging.getLogger(__name__)

KEPT = 256  # recent preparations remembered (only their names: the files are staging's)

_Key = tuple[str, bool, str, int, bool, str]


class PreparedOnce:
    """`prepare` for the agents of several destinations, each with its own staging."""

    def __init__(self) -> None:
        self.made = 0  # copies prepared
        self.linked = 0  # copies another destination had prepared
        self._lock = threading.Lock()
        self._recent: OrderedDict[_Key, Future[Prepared]] = OrderedDict()

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
        local work, never the network) and linked when it is still there and `src` has
        not changed since."""
        which = _key_of(recipe, src, fields, repair_header)
        with self._lock:
            theirs = self._recent.get(which)
            if theirs is not None and theirs.done() and theirs.exception() is None:
                self._recent.move_to_end(which)
            mine: Future[Prepared] | None = None
            if theirs is None or (theirs.done() and theirs.exception() is not None):
                mine = self._recent[which] = Future()
                while len(self._recent) > KEPT:
                    self._recent.popitem(last=False)
        if mine is None:
            assert theirs is not None
            linked = _link(_result(theirs), recipe.staging, key, src)
            if linked is not None:
                with self._lock:
                    self.linked += 1
                log.debug(kv("staged-once", file=src.name, linked=str(linked.path)))
                return linked
            mine = Future()  # theirs failed or is gone: ours, and for whoever comes next
            with self._lock:
                self._recent[which] = mine
        try:
            made = prepare(recipe, src=src, key=key, fields=fields, repair_header=repair_header)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        mine.set_result(made)
        with self._lock:
            self.made += 1
        return made


def _key_of(recipe: Recipe, src: Path, fields: Mapping[str, object], repair_header: bool) -> _Key:
    """What decides the bytes of a prepared copy (the staging folder does not)."""
    transcode = recipe.transcode
    return (
        str(src),
        recipe.tags,
        transcode.format,
        transcode.bitrate,
        repair_header,
        json.dumps(fields, sort_keys=True, default=str),
    )


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
