"""`bwlimit_kbps`: a token bucket shared by every connection of a destination, so the
setting caps the total, whether the uploads run as asyncio tasks (SFTP) or threads (S3)."""

from __future__ import annotations

import asyncio
import threading
import time


class RateLimit:
    def __init__(self, bytes_per_second: float, block: int) -> None:
        self.rate = bytes_per_second
        self.burst = max(block, bytes_per_second / 10)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def reserve(self, size: int) -> float:
        """Take `size` bytes' worth of tokens; return how long to wait before sending.
        Tokens may go negative: later callers then wait behind this one (first come,
        first served)."""
        if self.rate <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= size
            return max(0.0, -self.tokens / self.rate)

    async def take(self, size: int) -> None:
        if delay := self.reserve(size):
            await asyncio.sleep(delay)

    def take_blocking(self, size: int) -> None:
        if delay := self.reserve(size):
            time.sleep(delay)
