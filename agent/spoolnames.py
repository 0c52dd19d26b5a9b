"""Parses the spool's FreePBX/Asterisk file names into a Recording (freepbx-facts.md §1).

Its counterpart `agent.shipnames` renders the name of the shipped copy.

Pure: no filesystem, no clock. The name is all we know before the CDR answers, so it must
give at least a start time; anything we cannot read is refused with a one-line reason
(the pipeline quarantines it) rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from agent.errors import UnparseableName
from agent.model import Recording

DEFAULT_EXTENSIONS: tuple[str, ...] = ("wav", "WAV", "gsm", "ulaw", "alaw", "sln", "g729", "mp3")


@dataclass(frozen=True)
class CustomPattern:
    """An admin's own name pattern (config `spool.patterns`), tried before the built-ins.

    `regex` is matched with fullmatch against the name without its extension; its named
    groups are those of `_CUSTOM_GROUPS`. Build one with `compile_custom_pattern`.
    """

    name: str
    regex: re.Pattern[str]


_CUSTOM_GROUPS = frozenset({"date", "time", "epoch", "dst", "src", "uniqueid", "extension"})


@dataclass(frozen=True)
class _Row:
    """One built-in name form: what it looks like around the `-YYYYMMDD-HHMMSS` anchor."""

    pattern: str  # stable name, shown as Recording.pattern
    kind: str | None  # None: the name's own type word (group "kind")
    era: str
    head: re.Pattern[str]  # fullmatch on the text before the anchor ("" when none)
    tail: re.Pattern[str]  # fullmatch on the text after it; group "uid"


# Digits are spelled [0-9]: \d would also take other scripts' digits, which int() accepts.
_DIGITS = re.compile(r"[0-9]+")
# A uniqueid is "{epoch}.{counter}", "{systemname}-{epoch}.{counter}" (dashes allowed) or
# whatever an originate supplied: anything without whitespace ("/" is refused earlier).
_UID = re.compile(r"(?P<uid>\S+)")
# ConfBridge on Asterisk <= 13 appends "-{epoch}" after the uniqueid; the CDR lacks it.
_AST13_UID = re.compile(r"(?P<uid>\S*[0-9]\.[0-9]+)-[0-9]+")
_MODERN_TYPES = "out|in|internal|external|q|rg|generic|parked|ondemand|exten|force|conf"


def _row(pattern: str, kind: str | None, era: str, head: str, tail: re.Pattern[str] = _UID) -> _Row:
    return _Row(pattern, kind, era, re.compile(head, re.S), tail)


_ROOM = r"(?P<dst>[0-9]+)-(?P=dst)-[A-Za-z]+"  # conference rooms are numbers in FreePBX
_ROWS: tuple[_Row, ...] = (
    # 12-17 and 2.10-2.11: "{type}-{dst}-{src}". FreePBX does not escape dashes inside
    # dst/src, so the pair is kept whole here and split (or not) by _split_pair.
    _row("modern", None, "modern", rf"(?P<kind>{_MODERN_TYPES})-(?P<pair>.*-.*)"),
    # Conference "{room}-{room}-{action}": no type word, action "always" when recording.
    _row("conference-ast13", "conf", "conference", _ROOM, _AST13_UID),
    _row("conference", "conf", "conference", _ROOM),
    # The origin story's DISA plan, Macro(record-enable,{ext},OUT): "OUT-{ext}-{number}".
    _row("disa", "disa", "legacy", r"OUT-(?P<src>[0-9]+)-(?P<dst>[^-]+)"),
    # 2.3-2.9 recordingcheck: prefix glued to the number; inbound has no head at all.
    _row("legacy-out", "legacy-out", "legacy", r"OUT(?P<src>[0-9]+)"),
    _row("legacy-group", "legacy-group", "legacy", r"g(?P<dst>[0-9]+)"),
    _row("legacy-queue", "legacy-queue", "legacy", r"q(?P<dst>[0-9]+)"),
    _row("legacy-in", "legacy-in", "legacy", r""),
)

# Parse from the right: the greedy head makes the LAST "-YYYYMMDD-HHMMSS" the anchor, so a
# dst or src that looks like a date cannot move it. A head, when present, is non-empty.
_ANCHOR = re.compile(
    r"(?:(?P<head>.+)-)?(?P<date>[0-9]{8})-(?P<time>[0-9]{6})(?:-(?P<tail>.*))?", re.S
)
# One-touch automon/automixmon: "auto-{epoch}-{uid}" or "auto-{epoch}-{cid}-{peercid}".
_AUTO = re.compile(r"auto-(?P<epoch>[0-9]+)-(?P<rest>.+)", re.S)
_AUTO_UID = re.compile(r"\S*[0-9]\.[0-9]+|[^-\s]+")  # dotted, or one dash-free token

# Kinds whose src is the calling extension; it counts as one only when it is all digits
# (an outbound src can be a caller ID such as "+41..." or "unknown").
_EXTENSION_KINDS = frozenset(
    {"out", "internal", "exten", "force", "ondemand", "legacy-out", "disa"}
)

# Monitor() writes "{name}-in.{ext}" and "{name}-out.{ext}" halves that a later mix replaces.
_LEG = re.compile(r".*-(?:in|out)\.[A-Za-z0-9]+", re.S)

_NO_MATCH = "does not match any known FreePBX recording name"


def is_leg_file(name: str) -> bool:
    """True for a Monitor() leg half ("...-in.wav", "...-out.WAV"): never shipped."""
    return _LEG.fullmatch(name) is not None


def compile_custom_pattern(name: str, regex: str) -> CustomPattern:
    """Check an admin's pattern once, at config load, so a bad one fails loudly there.

    Raises ValueError naming the problem: the regex does not compile, uses a named group
    other than date, time, epoch, dst, src, uniqueid, extension, or has no way to give a
    start time (neither date + time nor epoch).
    """
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"pattern {name!r}: invalid regular expression: {exc}") from None
    groups = set(compiled.groupindex)
    unknown = sorted(groups - _CUSTOM_GROUPS)
    if unknown:
        allowed = ", ".join(sorted(_CUSTOM_GROUPS))
        raise ValueError(
            f"pattern {name!r}: unknown named group {', '.join(unknown)} (allowed: {allowed})"
        )
    if not ({"date", "time"} <= groups or "epoch" in groups):
        raise ValueError(
            f"pattern {name!r}: needs both (?P<date>...) and (?P<time>...) groups,"
            " or an (?P<epoch>...) group"
        )
    return CustomPattern(name=name, regex=compiled)


def parse(
    name: str,
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    patterns: Sequence[CustomPattern] = (),
    tz: tzinfo | None = None,
) -> Recording:
    """Read a recording's basename; raise UnparseableName(reason) if it is not one.

    `tz` is the PBX's zone, in which the name's date and time are local; None means this
    machine's zone. Custom patterns are tried first, in order, then the built-in forms.
    """
    stem, fmt = _split_extension(name, extensions)
    if is_leg_file(name):
        raise UnparseableName("a Monitor leg file (-in/-out half), never shipped")
    for custom in patterns:
        match = custom.regex.fullmatch(stem)
        if match is not None:
            return _from_custom(custom, match, fmt, tz)
    auto = _AUTO.fullmatch(stem)
    if auto is not None:
        return _from_auto(auto, fmt, tz)
    return _from_anchor(stem, fmt, tz)


def _split_extension(name: str, extensions: Sequence[str]) -> tuple[str, str]:
    if "/" in name or "\0" in name:
        raise UnparseableName("not a file name: contains '/' or NUL")
    parts = name.rsplit(".", 1)  # only the last dot: uniqueids contain dots
    if len(parts) != 2 or not parts[1]:
        raise UnparseableName("no file extension")
    stem, ext = parts
    if ext not in extensions:  # case matters: "wav" is PCM, "WAV" is wav49
        raise UnparseableName(f"unsupported extension {'.' + ext!r}")
    return stem, ext


def _from_anchor(stem: str, fmt: str, tz: tzinfo | None) -> Recording:
    anchor = _ANCHOR.fullmatch(stem)
    if anchor is None:
        raise UnparseableName(_NO_MATCH)
    started_at = _local_time(anchor["date"], anchor["time"], tz)
    tail = anchor["tail"]
    if not tail:
        raise UnparseableName("no uniqueid after the date and time")
    head = anchor["head"] or ""
    for row in _ROWS:
        head_match = row.head.fullmatch(head)
        tail_match = row.tail.fullmatch(tail)
        if head_match is None or tail_match is None:
            continue
        groups = head_match.groupdict()
        kind = groups.get("kind") or row.kind or ""
        dst, src, raw = groups.get("dst"), groups.get("src"), None
        if groups.get("pair") is not None:
            dst, src, raw = _split_pair(groups["pair"])
        return Recording(
            kind=kind,
            dst=dst,
            src=src,
            started_at=started_at,
            uniqueid=tail_match["uid"],
            extension=_calling_extension(kind, src),
            era=row.era,
            pattern=row.pattern,
            format=fmt,
            head=raw,
        )
    raise UnparseableName(_NO_MATCH)


def _from_auto(match: re.Match[str], fmt: str, tz: tzinfo | None) -> Recording:
    started_at = _epoch_time(match["epoch"], tz)
    rest = match["rest"]
    dst: str | None = None
    src: str | None = None
    uid: str | None = None
    raw: str | None = None
    if _AUTO_UID.fullmatch(rest):  # auto-{epoch}-{uid}
        uid, pattern = rest, "auto"
    else:  # auto-{epoch}-{cid}-{peercid}; caller IDs and channel names may hold dashes
        dst, src, raw = _split_pair(rest, reverse=True)
        pattern = "auto-cid"
    return Recording(
        kind="auto",
        dst=dst,
        src=src,
        started_at=started_at,
        uniqueid=uid,
        extension=None,
        era="auto",
        pattern=pattern,
        format=fmt,
        head=raw,
    )


def _from_custom(
    custom: CustomPattern, match: re.Match[str], fmt: str, tz: tzinfo | None
) -> Recording:
    groups = {key: value or None for key, value in match.groupdict().items()}
    date, time, epoch = groups.get("date"), groups.get("time"), groups.get("epoch")
    if date is not None and time is not None:
        started_at = _local_time(date, time, tz)
    elif epoch is not None:
        started_at = _epoch_time(epoch, tz)
    else:  # possible when the groups sit in optional branches of the regex
        raise UnparseableName(f"pattern {custom.name!r} matched but captured no date and time")
    return Recording(
        kind="custom",
        dst=groups.get("dst"),
        src=groups.get("src"),
        started_at=started_at,
        uniqueid=groups.get("uniqueid"),
        extension=groups.get("extension"),
        era="custom",
        pattern=custom.name,
        format=fmt,
    )


def _split_pair(text: str, *, reverse: bool = False) -> tuple[str | None, str | None, str | None]:
    """(dst, src, None) when `text` is exactly "{dst}-{src}", else (None, None, text).

    More fields means a dash inside one of them: the split is ambiguous, so keep the raw
    text and let the CDR decide. `reverse` reads "{src}-{dst}" (one-touch: cid, peercid).
    """
    fields = text.split("-")
    if len(fields) != 2:
        return None, None, text
    first, second = (field or None for field in fields)
    return (second, first, None) if reverse else (first, second, None)


def _calling_extension(kind: str, src: str | None) -> str | None:
    if kind in _EXTENSION_KINDS and src is not None and _DIGITS.fullmatch(src):
        return src
    return None


def _local_time(date: str, time: str, tz: tzinfo | None) -> datetime:
    """The name's wall-clock date and time, in the PBX's zone (this machine's if None)."""
    try:
        if not (re.fullmatch(r"[0-9]{8}", date) and re.fullmatch(r"[0-9]{6}", time)):
            raise ValueError
        year, month, day = int(date[:4]), int(date[4:6]), int(date[6:])
        naive = datetime(year, month, day, int(time[:2]), int(time[2:4]), int(time[4:]))
        return naive.astimezone() if tz is None else naive.replace(tzinfo=tz)
    except (ValueError, OverflowError, OSError):
        raise UnparseableName(f"impossible date {date + '-' + time!r}") from None


def _epoch_time(epoch: str, tz: tzinfo | None) -> datetime:
    try:
        if not _DIGITS.fullmatch(epoch):
            raise ValueError
        return datetime.fromtimestamp(int(epoch), UTC).astimezone(tz)
    except (ValueError, OverflowError, OSError):
        raise UnparseableName(f"impossible date: epoch {epoch!r}") from None
