"""A wake-up for the main loop that a signal handler may ring: a self-pipe, no locks."""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    """`ring()` is one non-blocking write, safe from a signal handler and any thread
    (`threading.Event.set()` takes a lock the interrupted main thread may hold);
    `wait()` returns at the first ring, or when the timeout runs out."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def ring(self) -> None:
        # A full pipe holds rings enough already; a closed one has no loop to wake.
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def clear(self) -> None:
        """Forget the rings so far; a ring after this wakes the next `wait`."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    def wait(self, timeout: float) -> bool:
        """True when rung (the ring is consumed), False when the timeout ran out."""
        ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        if ready:
            self.clear()
        return bool(ready)

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
