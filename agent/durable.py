"""What writing a file safely needs wherever it happens (a destination folder, the spool's
move_to): the temporary's name, which the spool scan and the sweeps recognise, and a
folder fsync, so a rename survives a power cut."""

from __future__ import annotations

import os
from pathlib import Path

TEMP_PREFIX = ".recsync-"
TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
