"""Tags on the shipped copy, so a player or tag editor shows who called whom, and when.

ID3v2.4 for PCM `.wav` (an `id3 ` chunk) and `.mp3`; Vorbis comments for FLAC and Ogg.
Standard fields are for people (title, artist = caller, album = destination, date,
comment = call ids); `RECSYNC_<FIELD>` fields hold every value verbatim for programs.
Formats that cannot hold tags get a JSON sidecar instead. Only a copy the caller owns
is ever tagged: never a spool original.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import PermanentError, TransientError

# "WAV" (upper case) is Asterisk's wav49, GSM in RIFF: mutagen could add a chunk, but few
# players decode GSM anyway and no test proves they would skip it, so it gets a sidecar.
TAGGABLE = frozenset({"wav", "mp3", "flac", "ogg", "opus"})
PREFIX = "RECSYNC_"
# Facts of the shipped file itself: tagging changes them, so they cannot be inside it.
_FILE_FACTS = frozenset({"size", "sha256"})
_KIND_LABEL = {
    "q": "queue",
    "legacy-queue": "queue",
    "rg": "ring group",
    "legacy-group": "ring group",
    "conf": "conference",
}
_KEY_UNSAFE = re.compile(r"[^A-Z0-9_]")


def can_hold_tags(fmt: str) -> bool:
    """True when files of `fmt` (the extension as on disk: "wav", "WAV", "mp3" …) get tags."""
    return fmt != "WAV" and fmt.lower() in TAGGABLE


@dataclass(frozen=True)
class Tags:
    """What goes into a file's tags, in the words of no particular tag format."""

    title: str
    artist: str
    album: str
    date: str | None  # "2024-03-15T10:15:02": the PBX's wall clock (ID3 has no UTC offset)
    comment: str | None
    custom: dict[str, str]  # "RECSYNC_CALLER_NUMBER" -> "2125550100"


def tags_for(fields: Mapping[str, object]) -> Tags:
    """The tags of a recording with these manifest entry fields (values may be None)."""
    caller = _caller(fields)
    dest = _destination(fields)
    started = _started(fields.get("started_at"))
    title = f"{caller} to {dest}" + (f", {started:%Y-%m-%d %H:%M}" if started else "")
    ids = [f"{key} {fields[key]}" for key in ("uniqueid", "linkedid") if fields.get(key)]
    custom = {
        _key(name): value_text(value)
        for name, value in fields.items()
        if value is not None and name not in _FILE_FACTS
    }
    return Tags(
        title=_clean(title),
        artist=_clean(caller),
        album=_clean(dest),
        date=f"{started:%Y-%m-%dT%H:%M:%S}" if started else None,
        comment=_clean(", ".join(ids)) if ids else None,
        custom=custom,
    )


def write_tags(path: Path, fmt: str, fields: Mapping[str, object]) -> None:
    """Tag `path` (a copy the caller owns) from the manifest entry `fields`.

    In place, to spare a copy per recording: after an error `path` may be damaged, and the
    caller (who can make it again from the spool) must not ship it. Raises PermanentError
    when the file cannot be tagged (a format mutagen refuses, a damaged file) and
    TransientError when our own disk fails (full, read-only).
    """
    if not can_hold_tags(fmt):
        raise PermanentError(f"{fmt} files cannot hold tags")
    import mutagen  # here, not at the top: an agent that tags nothing never loads it

    tags = tags_for(fields)
    try:
        if fmt.lower() in ("wav", "mp3"):
            _write_id3(path, fmt.lower(), tags)
        else:
            _write_vorbis(path, tags)
    except mutagen.MutagenError as exc:
        if isinstance(exc.__context__, OSError) or (exc.args and isinstance(exc.args[0], OSError)):
            raise TransientError(f"tags {path.name}: {exc}") from exc  # mutagen wraps IO errors
        raise PermanentError(f"tags {path.name}: {exc}") from exc
    except (ValueError, struct.error) as exc:  # what mutagen lets through on odd files
        raise PermanentError(f"tags {path.name}: {exc}") from exc
    except OSError as exc:
        raise TransientError(f"tags {path.name}: {exc.strerror or exc}") from exc


def sidecar(fields: Mapping[str, object]) -> bytes:
    """The fields as JSON, for the file beside a recording whose format cannot hold tags."""
    text = json.dumps(dict(fields), sort_keys=True, ensure_ascii=False, indent=1, default=str)
    # A lone surrogate cannot be UTF-8; as a \\udcxx escape the JSON still reads back equal.
    return (text + "\n").encode("utf-8", "backslashreplace")


def value_text(value: object) -> str:
    """A field's value as tag text: strings verbatim, except NUL (ID3's separator)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    else:
        text = str(value)
    return _clean(text)


def _clean(text: str) -> str:
    # Lone surrogates cannot be stored as UTF-8: they become "?".
    return text.replace("\0", "").encode("utf-8", "replace").decode("utf-8")


def _key(name: str) -> str:
    return PREFIX + _KEY_UNSAFE.sub("_", name.upper())


def _caller(fields: Mapping[str, object]) -> str:
    name, number = fields.get("caller_name"), fields.get("caller_number")
    if name and number and name != number:
        return f"{name} ({number})"
    return str(name or number or "unknown caller")


def _destination(fields: Mapping[str, object]) -> str:
    dst = fields.get("dst") or fields.get("did") or "unknown"
    label = _KIND_LABEL.get(str(fields.get("kind")))
    return f"{label} {dst}" if label else str(dst)


def _started(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _id3_frames(tags: Tags) -> list[Any]:
    from mutagen.id3 import COMM, TALB, TDRC, TIT2, TPE1, TXXX, Encoding

    # mutagen's frame classes carry no annotations; typed here once instead of at each call.
    make: dict[str, Callable[..., Any]] = {
        "TIT2": TIT2,
        "TPE1": TPE1,
        "TALB": TALB,
        "TDRC": TDRC,
        "COMM": COMM,
        "TXXX": TXXX,
    }
    frames = [
        make["TIT2"](encoding=Encoding.UTF8, text=[tags.title]),
        make["TPE1"](encoding=Encoding.UTF8, text=[tags.artist]),
        make["TALB"](encoding=Encoding.UTF8, text=[tags.album]),
    ]
    if tags.date:
        frames.append(make["TDRC"](encoding=Encoding.UTF8, text=[tags.date]))
    if tags.comment:
        comment = make["COMM"](encoding=Encoding.UTF8, lang="eng", desc="", text=[tags.comment])
        frames.append(comment)
    for key, text in tags.custom.items():
        frames.append(make["TXXX"](encoding=Encoding.UTF8, desc=key, text=[text]))
    return frames


def _write_id3(path: Path, fmt: str, tags: Tags) -> None:
    from mutagen.mp3 import MP3
    from mutagen.wave import WAVE

    files: dict[str, Callable[[Path], Any]] = {"wav": WAVE, "mp3": MP3}
    audio = files[fmt](path)
    if audio.tags is None:
        audio.add_tags()
    id3 = audio.tags
    for key in [key for key in id3 if key.startswith(f"TXXX:{PREFIX}")]:
        del id3[key]  # a field that is now None must not survive from an earlier tagging
    for frame in _id3_frames(tags):
        id3[frame.HashKey] = frame  # replaces; ID3.add() would merge into an older frame
    audio.save(v2_version=4)


def wav_tag_chunk(fields: Mapping[str, object]) -> bytes:
    """The RIFF `id3 ` chunk that `write_tags` appends to a PCM WAV without one, made in
    memory: byte for byte what mutagen writes (the same frames and padding), so a copy can
    be composed as header + audio + this chunk in one pass instead of being rewritten."""
    from mutagen.id3 import ID3

    id3: Any = ID3()  # type: ignore[no-untyped-call]
    for frame in _id3_frames(tags_for(fields)):
        id3[frame.HashKey] = frame
    buffer = io.BytesIO()
    id3.save(buffer, v2_version=4)  # into an empty file: the padding mutagen gives a new tag
    data = buffer.getvalue()
    return b"id3 " + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)


def _write_vorbis(path: Path, tags: Tags) -> None:
    import mutagen

    audio = mutagen.File(path)
    if audio is None:
        raise mutagen.MutagenError("not a FLAC or Ogg file mutagen knows")
    if audio.tags is None:
        audio.add_tags()
    comments = audio.tags
    # A VComment is a list of (key, value) pairs: keys() gives the names.
    for key in [key for key in comments.keys() if key.upper().startswith(PREFIX)]:  # noqa: SIM118
        del comments[key]
    standard: dict[str, str | None] = {
        "TITLE": tags.title,
        "ARTIST": tags.artist,
        "ALBUM": tags.album,
    }
    standard |= {"DATE": tags.date, "COMMENT": tags.comment}
    for key, text in (standard | tags.custom).items():
        if text is not None:
            comments[key] = [text]
    audio.save()
