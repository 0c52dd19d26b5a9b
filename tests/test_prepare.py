"""The shipped copy of a plain PCM WAV is composed in one pass (header, audio, tag chunk
made in memory): it must be byte for byte what copying and then tagging with mutagen
makes, and anything else must still take that slower path."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mutagen.wave
import pytest

from agent.config import TranscodeConfig
from agent.media import prepare as prepare_module
from agent.media.prepare import ChangedWhileCopying, Prepared, Recipe, prepare
from tests.support.cdr import call_fields
from tests.support.mixmonitor import MixMonitorWriter, audio, write_recording

HOSTILE = {
    "caller_name": "../../etc/passwd <script>alert(1)</script>\r\n\x1b[31m" + "é" * 700,
    "caller_number": "'; rm -rf / #",
}


def recipe(tmp_path: Path, *, tags: bool = True) -> Recipe:
    return Recipe(
        staging=tmp_path / "staging",
        tags=tags,
        transcode=TranscodeConfig(format="none", bitrate=16),
    )


def both_ways(
    tmp_path: Path, src: Path, fields: dict[str, Any], *, repair: bool = False
) -> tuple[Prepared, bytes, Prepared, bytes]:
    """(composed, its bytes, copied-then-tagged, its bytes)."""
    composed = prepare(recipe(tmp_path), src=src, key="a", fields=fields, repair_header=repair)
    composed_bytes = composed.path.read_bytes()
    slow = recipe(tmp_path)
    path, source, fmt = prepare_module._copy(slow, src, "b", repair)
    prepare_module.write_tags(path, fmt, fields)
    copied = Prepared(path, source, fmt, *prepare_module._digest(path), needs_sidecar=False)
    return composed, composed_bytes, copied, path.read_bytes()


@pytest.mark.parametrize("seconds", [0.0, 0.3, 1.7, 61.0])
@pytest.mark.parametrize("fields", [{}, HOSTILE], ids=["plain", "hostile"])
def test_composed_wav_equals_copied_then_tagged(
    tmp_path: Path, seconds: float, fields: dict[str, Any]
) -> None:
    src = tmp_path / "in-201-2125550100-20240315-101500-1710497700.1.wav"
    original = write_recording(src, seconds=seconds, seed=3)
    values = call_fields(**fields)
    composed, composed_bytes, copied, copied_bytes = both_ways(tmp_path, src, values)
    assert composed_bytes == copied_bytes
    assert (composed.sha256, composed.size) == (copied.sha256, copied.size)
    assert composed.sha256 == hashlib.sha256(composed_bytes).hexdigest()
    assert composed.source == copied.source
    tags = mutagen.wave.WAVE(composed.path).tags
    assert tags is not None and values["caller_number"] in tags["TPE1"].text[0]
    assert src.read_bytes() == original  # the spool file is only read


def test_a_header_asterisk_never_closed_is_repaired_the_same_way(tmp_path: Path) -> None:
    src = tmp_path / "out-2125550100-201-20240315-101500-1710497700.2.wav"
    writer = MixMonitorWriter(src)
    writer.write(audio(48_000, seed=5))
    writer.crash()  # one 32 KiB burst on disk, the header's sizes still 0
    assert src.stat().st_size > 44
    composed, composed_bytes, _, copied_bytes = both_ways(tmp_path, src, call_fields(), repair=True)
    assert composed_bytes == copied_bytes
    assert mutagen.wave.WAVE(composed.path).info.length > 0


def test_what_is_not_a_plain_wav_takes_the_copy_then_tag_path(tmp_path: Path) -> None:
    src = tmp_path / "in-201-2125550100-20240315-101500-1710497700.1.wav"
    write_recording(src, seconds=0.5, seed=1)
    with src.open("ab") as file:
        file.write(b"LIST\x04\x00\x00\x00INFO")  # a chunk after the audio
    assert prepare_module._compose_wav(recipe(tmp_path), src, "x", call_fields(), False) is None
    _, composed_bytes, _, copied_bytes = both_ways(tmp_path, src, call_fields())
    assert composed_bytes == copied_bytes  # through mutagen, as before
    untagged = recipe(tmp_path, tags=False)
    assert prepare_module._compose_wav(untagged, src, "y", call_fields(), False) is None


def test_a_file_that_grows_while_composed_is_not_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in-201-2125550100-20240315-101500-1710497700.1.wav"
    write_recording(src, seconds=2.0, seed=1)
    real = prepare_module.wav_tag_chunk

    def grow_meanwhile(fields: Any) -> bytes:
        with src.open("ab") as file:
            file.write(b"\0\0")  # Asterisk still writing
        return real(fields)

    monkeypatch.setattr(prepare_module, "wav_tag_chunk", grow_meanwhile)
    with pytest.raises(ChangedWhileCopying):
        prepare(recipe(tmp_path), src=src, key="a", fields=call_fields(), repair_header=False)
    assert list((tmp_path / "staging").iterdir()) == []
