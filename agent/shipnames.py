"""Renders the shipped copy's name: `naming.template` validated once, rendered per
recording. Its counterpart `agent.spoolnames` parses the spool's FreePBX names.

Every value comes from outside (a caller-ID name is whatever the caller's carrier sends),
so each is sanitised on its own before it is substituted, the joined name is cleaned of
the separators that empty fields leave behind, cut to 255 bytes of UTF-8 (caller name
first, never the uniqueid) and checked once more before it is returned. The folder is not
ours: it is always `YYYY/MM/DD/` and the caller adds it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

DEFAULT_TEMPLATE = "{time}_{kind}_{caller_number}_{caller_name}_to_{dst}_{uniqueid}"

# The manifest entry's fields (DESIGN.md) except `file`, which is what we are making.
MANIFEST_FIELDS = (
    *("original", "uniqueid", "linkedid", "kind", "caller_number", "caller_name", "dst"),
    *("did", "started_at", "duration", "billsec", "disposition", "size", "sha256"),
    *("format", "cdr"),
)
PLACEHOLDERS: frozenset[str] = frozenset({*MANIFEST_FIELDS, "date", "time"})

MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS, btrfs... in bytes, not characters
VALUE_CAP = 64  # characters per value: a name is for reading; the manifest has it all
MAX_FIXED_BYTES = 128  # a template's own text; the rest is room for the values
FALLBACK_NAME = "recording"

# Path separators, URL specials (a browser would cut the link at % # ?), Windows-illegal.
_FORBIDDEN = frozenset('/\\%#?<>:"|*')
# Control, format (bidi overrides, zero-width), surrogates, private use, unassigned.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SEPARATOR_RUN = re.compile(r"[-_.]{2,}")
_LABEL = re.compile(r"[^-_.]+[-_.]*\Z")  # the "to_" of "_to_{dst}"
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")
_DATE, _TIME = "%Y%m%d", "%H%M%S"
_SAMPLE_TIME = datetime.fromisoformat("2024-03-15T10:15:02+01:00")
_FOLDER_HINT = (
    "'/' and '\\' are not allowed: the template names the file only, "
    "the folder is always YYYY/MM/DD/"
)


@dataclass(frozen=True)
class _Slot:
    """One placeholder of the template; `spec` is a strftime format (started_at only)."""

    field: str
    spec: str = ""


@dataclass(frozen=True)
class _Fixed:
    """Fixed text of the template; `bare` is it without the label of the next placeholder."""

    text: str
    bare: str


_Segment = _Fixed | _Slot


class NameTemplate:
    """A `naming.template` that has been checked: rendering it cannot fail on its account.

    Raises ValueError (the message names the problem; the config layer adds the key) for
    bad format syntax, an unknown placeholder, positional `{}` or attribute/index access,
    a conversion, a format spec on anything but `started_at`, a character in the fixed
    text that a file name must not hold, or a template without any placeholder.

    Rendering leaves out what an empty value would leave behind: a word right before a
    placeholder is its label (the "to" of "_to_{dst}") and goes with it, and the
    separators around it collapse, so an unknown caller name gives "..._2125550100_to_600_..."
    and a legacy call without a destination "..._201_1213900512.123.wav".
    """

    __slots__ = ("_segments", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self._segments = _parse(template)

    def __repr__(self) -> str:
        return f"NameTemplate({self.template!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)

    @property
    def fields(self) -> frozenset[str]:
        """The placeholders this template uses."""
        return frozenset(s.field for s in self._segments if isinstance(s, _Slot))

    def render(
        self, values: Mapping[str, object], *, extension: str, suffix: int | None = None
    ) -> str:
        """The file name (no folder) for a recording whose manifest fields are `values`.

        Missing keys and None render empty; `started_at` is ISO 8601 (a string or a
        datetime) and `{date}`, `{time}` and strftime specs use its own UTC offset, the
        PBX's wall clock. `suffix` n (>= 1; count from 2) renders `-n` before the
        extension, inside the 255-byte budget, for a name that is already taken. Raises
        ValueError for a bad extension or a uniqueid too long to fit a file name on its own.
        """
        if not _EXTENSION.fullmatch(extension):
            raise ValueError(f"file extension {extension!r}: expected 1-8 letters or digits")
        if suffix is not None and suffix < 1:
            raise ValueError(f"suffix {suffix}: expected a number from 1 up")
        tail = ("" if suffix is None else f"-{suffix}") + "." + extension
        uniqueid = sanitise(values.get("uniqueid"), cap=None)
        texts = {slot: _slot_text(slot, values) for slot in self._slots()}
        name = self._fit(texts, uniqueid, tail)
        problem = unsafe_reason(name)
        if problem:  # a bug here must never turn into a path outside the day folder
            raise RuntimeError(f"naming produced an unsafe name {name!r}: {problem}")
        return name

    def _slots(self) -> list[_Slot]:
        return [s for s in self._segments if isinstance(s, _Slot)]

    def _fit(self, texts: dict[_Slot, str], uniqueid: str, tail: str) -> str:
        # Each round shortens one value by the excess; it ends because values only shrink.
        while True:
            name = self._join(texts, uniqueid) + tail
            excess = len(name.encode()) - MAX_NAME_BYTES
            if excess <= 0:
                return name
            slot = _next_to_cut(texts)
            if slot is None:
                raise ValueError(
                    f"uniqueid {uniqueid[:40]!r}... is too long: with the template's own "
                    f"text and {tail!r} it exceeds {MAX_NAME_BYTES} bytes"
                )
            texts[slot] = _cut_bytes(texts[slot], excess)

    def _join(self, texts: Mapping[_Slot, str], uniqueid: str) -> str:
        if not any(texts.values()):  # the fixed text alone ("to") names nothing
            return uniqueid or FALLBACK_NAME
        stem = "".join(self._pieces(texts))
        stem = _SEPARATOR_RUN.sub(_one_separator, unicodedata.normalize("NFC", stem))
        return stem.strip("_-.") or uniqueid or FALLBACK_NAME

    def _pieces(self, texts: Mapping[_Slot, str]) -> list[str]:
        # A word right before a placeholder labels it ("_to_{dst}"): it goes when the value
        # is empty, so a legacy call without a destination does not read "to <uniqueid>".
        pieces = []
        for seg, following in zip(self._segments, (*self._segments[1:], None), strict=True):
            if isinstance(seg, _Slot):
                pieces.append(texts[seg])
            elif isinstance(following, _Slot) and not texts[following]:
                pieces.append(seg.bare)
            else:
                pieces.append(seg.text)
        return pieces


def sanitise(value: object, *, cap: int | None = VALUE_CAP) -> str:
    """One value made fit to stand inside a file name; None and "" give "".

    NFC; whitespace runs and `/ \\ % # ? < > : " | *` (and look-alikes that NFKC turns
    into them, such as the fullwidth solidus U+FF0F) become "-"; control, format,
    surrogate, private-use and unassigned characters are dropped; separator runs collapse
    ("--" -> "-", ".." -> "."); no leading "." or "-", no trailing "-", "." or "_"; at most
    `cap` characters.
    """
    if value is None:
        return ""
    text = "".join(_clean_char(ch) for ch in unicodedata.normalize("NFC", str(value)))
    # Dropping a zero-width joiner can bring a letter and its accent together again.
    text = _tidy(unicodedata.normalize("NFC", text))
    if cap is not None and len(text) > cap:
        text = _tidy(text[:cap])
    return text


def unsafe_reason(name: str) -> str | None:
    """Why `name` must not be shipped as a file name, or None when it is fine."""
    if not name or name.startswith((".", "-")):
        return "empty, hidden or option-like"
    if len(name.encode("utf-8", errors="replace")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    if ".." in name:
        return "contains '..'"
    if unicodedata.normalize("NFC", name) != name:
        return "not NFC"
    bad = next((ch for ch in name if _clean_char(ch) != ch), None)
    return None if bad is None else f"contains {bad!r}"


@lru_cache(maxsize=4096)
def _clean_char(ch: str) -> str:
    if ch.isspace():
        return "-"
    if unicodedata.category(ch) in _DROPPED:
        return ""
    # A later NFKC (a sync tool, a CRM) would turn a fullwidth solidus into a real "/".
    if ch in _FORBIDDEN or not _FORBIDDEN.isdisjoint(unicodedata.normalize("NFKC", ch)):
        return "-"
    return ch


def _tidy(text: str) -> str:
    """Collapse separator runs ("__", "_-_", "..") and trim the ends a value must not have."""
    return _SEPARATOR_RUN.sub(_one_separator, text).lstrip(".-").rstrip("-._")


def _one_separator(run: re.Match[str]) -> str:
    chars = run.group()
    return "_" if "_" in chars else "-" if "-" in chars else "."


def _slot_text(slot: _Slot, values: Mapping[str, object]) -> str:
    if slot.spec or slot.field in ("date", "time"):
        when = _started(values.get("started_at"))
        if when is None:
            return ""
        fmt = slot.spec or (_DATE if slot.field == "date" else _TIME)
        return sanitise(when.strftime(fmt))
    return sanitise(values.get(slot.field), cap=None if slot.field == "uniqueid" else VALUE_CAP)


def _started(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _next_to_cut(texts: Mapping[_Slot, str]) -> _Slot | None:
    """The caller name first (the least needed to find a call), then the longest value."""
    cuttable = [s for s, text in texts.items() if text and s.field != "uniqueid"]
    callers = [s for s in cuttable if s.field == "caller_name"]
    if callers:
        return callers[0]
    return max(cuttable, key=lambda s: len(texts[s].encode()), default=None)


def _cut_bytes(text: str, excess: int) -> str:
    data = text.encode()
    # errors="ignore" drops a character split by the cut: the cut lands on a boundary.
    return _tidy(data[: max(0, len(data) - excess)].decode("utf-8", errors="ignore"))


# --- validation of the template, once, at config load ---


def _parse(template: str) -> tuple[_Segment, ...]:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"{template!r}: bad format syntax ({exc}); write a placeholder as {{name}} "
            "and a literal brace as {{ or }}"
        ) from None
    segments: list[_Segment] = []
    literal = ""  # "{{" splits one fixed text in two; join them again
    for text, field, spec, conversion in parts:
        literal += text
        if field is not None:
            segments += [_fixed(template, literal)] if literal else []
            segments.append(_slot(template, field, spec or "", conversion))
            literal = ""
    if literal:
        segments.append(_fixed(template, literal))
    if not any(isinstance(s, _Slot) for s in segments):
        raise ValueError(
            f"{template!r} has no placeholder, so every recording would get the same name; "
            f"use some of: {_known()}"
        )
    fixed = sum(len(s.text.encode()) for s in segments if isinstance(s, _Fixed))
    if fixed > MAX_FIXED_BYTES:
        raise ValueError(f"{template!r}: its fixed text is over {MAX_FIXED_BYTES} bytes")
    return tuple(segments)


def _fixed(template: str, literal: str) -> _Fixed:
    _check_fixed_text(template, literal)
    label = _LABEL.search(literal)
    return _Fixed(literal, literal[: label.start()] if label else literal)


def _slot(template: str, field: str, spec: str, conversion: str | None) -> _Slot:
    if field == "" or field.isdigit():
        raise ValueError(f"{template!r}: positional {{{field}}}; name a placeholder: {_known()}")
    if "." in field or "[" in field:
        raise ValueError(
            f"{template!r}: {{{field}}} uses attribute or index access; "
            f"placeholders are plain names: {_known()}"
        )
    if field not in PLACEHOLDERS:
        raise ValueError(f"{template!r}: unknown placeholder {{{field}}}; known: {_known()}")
    if conversion is not None:
        raise ValueError(f"{template!r}: {{{field}!{conversion}}}: conversions are not allowed")
    if spec and field != "started_at":
        raise ValueError(
            f"{template!r}: {{{field}:{spec}}}: only started_at takes a format "
            "(strftime, e.g. {started_at:%Y%m%d-%H%M})"
        )
    if spec:
        _check_strftime(template, spec)
    return _Slot(field, spec)


def _check_strftime(template: str, spec: str) -> None:
    where = f"{template!r}: {{started_at:{spec}}}"
    if "{" in spec or "}" in spec:
        raise ValueError(f"{where}: nested placeholders are not allowed")
    if "/" in spec or "\\" in spec:
        raise ValueError(f"{where}: {_FOLDER_HINT}")
    if "%" not in spec:
        raise ValueError(f"{where}: expected a strftime format such as %Y%m%d-%H%M")
    try:
        _SAMPLE_TIME.strftime(spec)
    except ValueError as exc:
        raise ValueError(f"{where}: not a strftime format ({exc})") from None


def _check_fixed_text(template: str, literal: str) -> None:
    if "/" in literal or "\\" in literal:
        raise ValueError(f"{template!r}: {_FOLDER_HINT}")
    if ".." in literal:
        raise ValueError(f"{template!r}: '..' is not allowed in a file name")
    bad = next((ch for ch in literal if _clean_char(ch) != ch), None)
    if bad is not None:
        what = "whitespace" if bad.isspace() else repr(bad)
        raise ValueError(
            f"{template!r}: {what} is not allowed in a file name; "
            "separate placeholders with '_', '-' or '.'"
        )


def _known() -> str:
    return ", ".join(sorted(PLACEHOLDERS))
