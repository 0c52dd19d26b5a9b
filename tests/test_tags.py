"""Tags on the shipped copy, read back with mutagen and with an independent reader (ffprobe)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

import mutagen
import mutagen.wave
import pytest

from agent.errors import PermanentError, TransientError
from agent.media.tags import TAGGABLE, can_hold_tags, sidecar, tags_for, value_text, write_tags
from agent.media.transcode import to_mp3
from tests.support.cdr import call_fields
from tests.support.mixmonitor import write_recording
from tests.support.servers import require_program

HOSTILE = "<script>alert(1)</script> \x1b[31m\x07\t\r\nBöb\u202e " + "x" * 2048

FIELDS: dict[str, Any] = call_fields(did=None, billsec=70)


def tool(name: str) -> str:
    """The path of a Debian ffmpeg program; a failure in CI, a skip elsewhere."""
    return require_program(name, "ffmpeg")


def ffprobe_tags(path: Path) -> dict[str, str]:
    out = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-show_format", "-show_streams", "-of", "json", path],
        capture_output=True,
        check=True,
    )
    probed = json.loads(out.stdout)
    tags: dict[str, str] = probed["format"].get("tags", {})
    for stream in probed["streams"]:  # Ogg keeps its comments on the stream
        tags |= stream.get("tags", {})
    return {key.lower(): value for key, value in tags.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["wav", "mp3"])
def recording(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A 2-second recording as Asterisk writes it, or that recording as our MP3."""
    wav = tmp_path / "call.wav"
    write_recording(wav, seconds=2)
    if request.param == "wav":
        return wav, "wav"
    mp3 = to_mp3(wav, "wav", tmp_path / "call.mp3")
    assert mp3 is not None
    return mp3, "mp3"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("wav", True),
        ("mp3", True),
        ("MP3", True),
        ("flac", True),
        ("ogg", True),
        ("opus", True),
        ("WAV", False),  # wav49: GSM in RIFF
        ("gsm", False),
        ("ulaw", False),
        ("alaw", False),
        ("sln", False),
        ("g729", False),
    ],
)
def test_which_formats_hold_tags(fmt: str, expected: bool) -> None:
    assert can_hold_tags(fmt) is expected
    assert {"wav", "mp3", "flac", "ogg", "opus"} == TAGGABLE


def test_the_standard_fields_say_who_called_whom_and_when() -> None:
    tags = tags_for(FIELDS)
    assert tags.title == "Bob Buyer (2125550100) to 600, 2024-03-15 10:15"
    assert tags.artist == "Bob Buyer (2125550100)"
    assert tags.album == "600"
    assert tags.date == "2024-03-15T10:15:02"  # the PBX's wall clock, as in the file name
    assert tags.comment == "uniqueid 1710497853.51, linkedid 1710497853.50"
    assert tags.custom["RECSYNC_CALLER_NUMBER"] == "2125550100"
    assert tags.custom["RECSYNC_STARTED_AT"] == "2024-03-15T10:15:02+01:00"
    assert tags.custom["RECSYNC_DURATION"] == "75"
    assert "RECSYNC_DID" not in tags.custom  # None values are left out


@pytest.mark.parametrize(
    ("changes", "artist", "album"),
    [
        ({"kind": "q"}, "Bob Buyer (2125550100)", "queue 600"),
        ({"kind": "legacy-queue"}, "Bob Buyer (2125550100)", "queue 600"),
        ({"kind": "rg"}, "Bob Buyer (2125550100)", "ring group 600"),
        ({"kind": "conf", "dst": "800"}, "Bob Buyer (2125550100)", "conference 800"),
        ({"caller_name": None}, "2125550100", "600"),
        ({"caller_name": "2125550100"}, "2125550100", "600"),
        ({"caller_number": None}, "Bob Buyer", "600"),
        ({"caller_name": None, "caller_number": None}, "unknown caller", "600"),
        ({"dst": None, "did": "2125550199"}, "Bob Buyer (2125550100)", "2125550199"),
        ({"dst": None}, "Bob Buyer (2125550100)", "unknown"),
    ],
)
def test_artist_and_album(changes: dict[str, Any], artist: str, album: str) -> None:
    tags = tags_for(FIELDS | changes)
    assert (tags.artist, tags.album) == (artist, album)
    assert tags.title.startswith(f"{artist} to {album}, ")


def test_without_a_usable_start_time_there_is_no_date() -> None:
    for value in (None, "yesterday"):
        tags = tags_for(FIELDS | {"started_at": value, "uniqueid": None})
        assert tags.date is None
        assert tags.title == "Bob Buyer (2125550100) to 600"
        assert tags.comment == "linkedid 1710497853.50"


def test_values_become_text() -> None:
    assert value_text("a\0b") == "ab"  # NUL separates ID3 values: the only thing removed
    assert value_text(75) == "75"
    assert value_text(True) == "true"
    assert value_text({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert value_text("\ud800x") == "?x"  # a lone surrogate cannot be UTF-8


def test_tags_read_back_with_mutagen(recording: tuple[Path, str]) -> None:
    path, fmt = recording
    write_tags(path, fmt, FIELDS)
    tags = mutagen.File(path).tags
    assert str(tags["TIT2"]) == "Bob Buyer (2125550100) to 600, 2024-03-15 10:15"
    assert str(tags["TPE1"]) == "Bob Buyer (2125550100)"
    assert str(tags["TALB"]) == "600"
    assert str(tags["TDRC"]) == "2024-03-15 10:15:02"  # mutagen's spelling; "T" on disk
    assert str(tags["COMM::eng"]) == "uniqueid 1710497853.51, linkedid 1710497853.50"
    for name, value in FIELDS.items():
        key = f"TXXX:RECSYNC_{name.upper()}"
        assert (str(tags[key]) if key in tags else None) == (None if value is None else str(value))
    assert tags.version == (2, 4, 0)


def test_tags_read_back_with_ffprobe(recording: tuple[Path, str]) -> None:
    path, fmt = recording
    write_tags(path, fmt, FIELDS)
    probed = ffprobe_tags(path)
    assert probed["title"] == "Bob Buyer (2125550100) to 600, 2024-03-15 10:15"
    assert probed["artist"] == "Bob Buyer (2125550100)"
    assert probed["album"] == "600"
    assert probed["date"] == "2024-03-15T10:15:02"
    assert probed["comment"] == "uniqueid 1710497853.51, linkedid 1710497853.50"
    assert probed["recsync_uniqueid"] == "1710497853.51"
    assert probed["recsync_caller_number"] == "2125550100"


def test_hostile_values_are_stored_verbatim(recording: tuple[Path, str]) -> None:
    path, fmt = recording
    write_tags(path, fmt, FIELDS | {"caller_name": HOSTILE + "\0", "dst": "<b>600</b>"})
    tags = mutagen.File(path).tags
    assert str(tags["TXXX:RECSYNC_CALLER_NAME"]) == HOSTILE
    assert str(tags["TPE1"]) == f"{HOSTILE} (2125550100)"
    assert str(tags["TALB"]) == "<b>600</b>"
    probed = ffprobe_tags(path)
    assert probed["recsync_caller_name"] == HOSTILE
    assert probed["artist"] == f"{HOSTILE} (2125550100)"


def test_the_tagged_wav_is_still_the_same_audio(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    write_recording(path, seconds=2)
    with wave.open(str(path), "rb") as before:
        frames = before.readframes(before.getnframes())
        params = before.getparams()
    write_tags(path, "wav", FIELDS)
    with wave.open(str(path), "rb") as after:
        assert after.getparams() == params
        assert after.readframes(after.getnframes()) == frames
    decoded = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", path, "-f", "s16le", "-"],
        capture_output=True,
        check=True,
    )
    assert decoded.stdout == frames  # ffmpeg plays the audio and skips the id3 chunk
    assert decoded.stderr == b""


def test_tagging_again_replaces_the_earlier_tags(recording: tuple[Path, str]) -> None:
    path, fmt = recording
    write_tags(path, fmt, FIELDS | {"did": "2125550199", "caller_name": "Alice"})
    write_tags(path, fmt, FIELDS)
    tags = mutagen.File(path).tags
    assert tags["TPE1"].text == ["Bob Buyer (2125550100)"]  # not merged with "Alice"
    assert "TXXX:RECSYNC_DID" not in tags


@pytest.mark.parametrize(
    ("fmt", "codec"), [("flac", "flac"), ("ogg", "libvorbis"), ("opus", "libopus")]
)
def test_vorbis_comments(tmp_path: Path, fmt: str, codec: str) -> None:
    wav = tmp_path / "call.wav"
    write_recording(wav, seconds=1)
    path = tmp_path / f"call.{fmt}"
    subprocess.run([tool("ffmpeg"), "-v", "error", "-i", wav, "-c:a", codec, path], check=True)
    write_tags(path, fmt, FIELDS | {"caller_name": HOSTILE})
    comments = mutagen.File(path).tags
    assert comments["TITLE"] == [f"{HOSTILE} (2125550100) to 600, 2024-03-15 10:15"]
    assert comments["RECSYNC_CALLER_NAME"] == [HOSTILE]
    probed = ffprobe_tags(path)
    assert probed["album"] == "600"
    assert probed["comment"] == "uniqueid 1710497853.51, linkedid 1710497853.50"


@pytest.mark.parametrize("fmt", ["WAV", "gsm", "ulaw"])
def test_formats_without_tags_get_a_sidecar(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"call.{fmt}"
    write_recording(path, seconds=1, fmt=fmt)
    before = sha256(path)
    assert not can_hold_tags(fmt)
    with pytest.raises(PermanentError):
        write_tags(path, fmt, FIELDS)
    assert sha256(path) == before
    fields = FIELDS | {"caller_name": HOSTILE, "size": 1650, "sha256": before}
    text = sidecar(fields)
    assert json.loads(text) == fields
    assert text.endswith(b"}\n")
    assert "Böb".encode() in text  # UTF-8 as is, not \u escapes
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_a_sidecar_keeps_a_lone_surrogate() -> None:
    fields = {"caller_name": "\udcff"}
    assert json.loads(sidecar(fields)) == fields


def test_a_file_mutagen_refuses_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "call.mp3"
    path.write_bytes(b"this is no mp3 at all" * 100)
    with pytest.raises(PermanentError):
        write_tags(path, "mp3", FIELDS)
    assert path.read_bytes() == b"this is no mp3 at all" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.mp3"]  # no temporary left


def test_our_own_disk_failing_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "call.wav"
    write_recording(path, seconds=1)

    def full(*_args: object, **_kwargs: object) -> None:
        # What mutagen raises when the disk is full: its error wrapping the OSError.
        raise mutagen.MutagenError(OSError(28, "No space left on device"))

    monkeypatch.setattr(mutagen.wave.WAVE, "save", full)
    with pytest.raises(TransientError, match="No space left"):
        write_tags(path, "wav", FIELDS)


def test_tags_only_the_given_file(tmp_path: Path) -> None:
    spool = tmp_path / "spool.wav"
    write_recording(spool, seconds=1)
    original = sha256(spool)
    staged = tmp_path / "staged.wav"
    shutil.copyfile(spool, staged)
    write_tags(staged, "wav", FIELDS)
    assert sha256(spool) == original
    assert sha256(staged) != original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.wav", "staged.wav"]
