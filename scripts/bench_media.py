"""Cost per minute of audio of tagging and of MP3 encoding, each beside a baseline run in
the same process: a plain file copy for tags, the ffmpeg command line for encoding.
Usage: .venv/bin/python scripts/bench_media.py [REPEATS]. Prints figures; asserts nothing."""

from __future__ import annotations

import bisect
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import TranscodeConfig  # noqa: E402
from agent.media import prepare as prepare_module  # noqa: E402
from agent.media.tags import write_tags  # noqa: E402
from agent.media.transcode import ULAW, to_mp3  # noqa: E402
from tests.support.cdr import call_fields  # noqa: E402
from tests.support.mixmonitor import MixMonitorWriter  # noqa: E402

RATE = 8000
SECONDS = 60
FIELDS = call_fields()


def speechlike(seconds: int, seed: int = 1) -> array[int]:
    """Voiced tones that wander in pitch and loudness, pauses and line noise: closer to a
    call than silence (too easy) or white noise (too hard) for an encoder."""
    rng = random.Random(seed)
    out = array("h")
    phase = 0.0
    for block in range(seconds * 10):  # 100 ms syllables
        pitch = rng.uniform(90, 260)
        loud = 0.0 if block % 7 == 6 else rng.uniform(1500, 9000)
        for _ in range(RATE // 10):
            phase += 2 * math.pi * pitch / RATE
            voice = math.sin(phase) + 0.5 * math.sin(3 * phase) + 0.25 * math.sin(5 * phase)
            out.append(max(-32768, min(32767, round(loud * voice / 1.75 + rng.gauss(0, 60)))))
    return out


def ulaw_encode(samples: array[int]) -> bytes:
    """Nearest u-law code of each sample, through the decoder's own table."""
    ranked = sorted(range(256), key=lambda code: ULAW[code])
    values = [ULAW[code] for code in ranked]
    codes = bytearray()
    for sample in samples:
        i = min(bisect.bisect_left(values, sample), 255)
        codes.append(ranked[i])
    return bytes(codes)


def median_ms(
    run: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None
) -> float:
    """Median time of `run`, `before` (untimed) ahead of each."""
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def shipped_copy(wav: Path, work: Path, repeats: int) -> tuple[str, float, str, float]:
    """`prepare` of a tagged WAV: composed in one pass, against copy + mutagen + hash."""
    recipe = prepare_module.Recipe(
        staging=work / "staging", tags=True, transcode=TranscodeConfig(format="none", bitrate=16)
    )
    composing = prepare_module._compose_wav

    def ship(compose: bool) -> Callable[[], None]:
        def run() -> None:
            prepare_module._compose_wav = composing if compose else (lambda *args: None)
            made = prepare_module.prepare(
                recipe, src=wav, key="b", fields=FIELDS, repair_header=False
            )
            made.path.unlink()

        return run

    try:
        composed, copied = median_ms(ship(True), repeats), median_ms(ship(False), repeats)
    finally:
        prepare_module._compose_wav = composing
    return ("shipped copy, composed in one pass", composed, "copy, then tag, then hash", copied)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ffmpeg = shutil.which("ffmpeg")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        samples = speechlike(SECONDS)
        wav = work / "call.wav"
        with MixMonitorWriter(wav, "wav") as writer:
            writer.write(samples.tobytes())
        ulaw = work / "call.ulaw"
        ulaw.write_bytes(ulaw_encode(samples))
        mp3 = to_mp3(wav, "wav", work / "call.mp3")
        assert mp3 is not None
        rows = []
        for name, path, fmt in (("wav", wav, "wav"), ("mp3", mp3, "mp3")):
            target = work / f"tagged.{fmt}"

            def copy(p: Path = path, t: Path = target) -> None:
                shutil.copyfile(p, t)

            copy_ms = median_ms(copy, repeats)
            tag_ms = median_ms(lambda t=target, f=fmt: write_tags(t, f, FIELDS), repeats, copy)
            label = f"tags, {name} ({path.stat().st_size // 1024} KiB)"
            rows.append((label, tag_ms, "file copy", copy_ms))
        out = work / "out.mp3"
        encode_ms = median_ms(lambda: to_mp3(wav, "wav", out), repeats)
        baseline = "ffmpeg (not installed)"
        ffmpeg_ms = float("nan")
        if ffmpeg:
            baseline = "ffmpeg libmp3lame CLI"
            args = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(wav)]
            args += ["-codec:a", "libmp3lame", "-b:a", "16k", "-y", str(work / "ff.mp3")]
            ffmpeg_ms = median_ms(lambda: subprocess.run(args, check=True), repeats)
        rows.append(("MP3 16k from wav, in-process", encode_ms, baseline, ffmpeg_ms))
        ulaw_ms = median_ms(lambda: to_mp3(ulaw, "ulaw", out), repeats)
        rows.append(("MP3 16k from ulaw, in-process", ulaw_ms, "", float("nan")))
        rows.append(shipped_copy(wav, work, repeats))
    print(f"ms per minute of 8 kHz audio, median of {repeats}")
    print(f"{'operation':<34} {'ms':>8}   {'baseline':<24} {'ms':>8}")
    for label, ms, base, base_ms in rows:
        shown = f"{base_ms:8.2f}" if base_ms == base_ms else f"{'':>8}"
        print(f"{label:<34} {ms:8.2f}   {base:<24} {shown}")


if __name__ == "__main__":
    main()
