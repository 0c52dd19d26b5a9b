"""Small fakes that inject faults into one layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.transport.local import LocalTransport


class FlakyTransport(LocalTransport):
    """The local transport with faults injected into `put`, one per call, in order."""

    def __init__(self, root: Path, faults: list[Exception]) -> None:
        super().__init__(root=root)
        self.faults = faults

    def put(self, local: Path, remote: str, **kwargs: Any) -> None:
        if self.faults:
            raise self.faults.pop(0)
        super().put(local, remote, **kwargs)
