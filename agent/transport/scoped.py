"""One site's folder of a shared root (destination.layout = "sites"), as a whole Transport.

Every caller (shipping, pages, manifests, status.json, retention, rebuild) goes on naming
paths as they were under a root of its own; this wrapper alone puts `<site>/` before them.
So the state database's remote paths and the manifests' `file` values are the same in
both layouts, and nothing this agent writes through it can land outside its folder.
The shared root itself (the page listing every site) is reached through `shared_root`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from agent.transport import Features, RemoteFile, Transport, check_remote


class SiteTransport:
    """`inner` seen from `<site>/`: "2024/03/15/x.wav" is "<site>/2024/03/15/x.wav" there."""

    def __init__(self, inner: Transport, *, site: str) -> None:
        self.inner = inner
        self.site = check_remote(site)
        if "/" in site:
            raise ValueError(f"a site is one folder name: {site!r}")

    def __repr__(self) -> str:
        return f"SiteTransport({self.inner!r}, site={self.site!r})"

    @property
    def shared_root(self) -> Transport:
        """The whole root, for the root page and the listing of every site's status.json."""
        return self.inner

    def path(self, remote: str) -> str:
        """The path under the root of `remote` under the site folder."""
        return f"{self.site}/{check_remote(remote)}"

    def _folder(self, folder: str) -> str:
        return self.site if folder == "" else self.path(folder)

    @property
    def features(self) -> Features:
        features = self.inner.features
        create = features.create_bytes
        if create is None:
            return features
        return dataclasses.replace(
            features, create_bytes=lambda remote, data: create(self.path(remote), data)
        )

    def probe(self) -> None:
        self.inner.probe()  # the root answers; the site folder is made by the first write

    def put(
        self,
        local: Path,
        remote: str,
        *,
        sha256: str,
        should_stop: Callable[[], bool] = lambda: False,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.inner.put(
            local, self.path(remote), sha256=sha256, should_stop=should_stop, metadata=metadata
        )

    def write_bytes(self, remote: str, data: bytes) -> None:
        self.inner.write_bytes(self.path(remote), data)

    def read_bytes(self, remote: str) -> bytes | None:
        return self.inner.read_bytes(self.path(remote))

    def listdir(self, folder: str = "") -> list[str]:
        return self.inner.listdir(self._folder(folder))

    def stat_remote(self, remote: str) -> RemoteFile | None:
        return self.inner.stat_remote(self.path(remote))

    def remove(self, remote: str) -> None:
        self.inner.remove(self.path(remote))

    def sweep(self, folders: Iterable[str]) -> int:
        return self.inner.sweep([self._folder(folder) for folder in folders])

    def close(self) -> None:
        self.inner.close()
