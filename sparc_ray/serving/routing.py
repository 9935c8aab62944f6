"""Which version answers a request: the registry's release records, read by every replica.

Each deployment keeps a ``ReleaseWatcher`` that re-reads ``production`` and
``candidate.json`` every ``poll_interval_s`` (or at once when told, e.g. after
``/reload-model``). A ``ReleaseView`` is a snapshot of those records plus the app's pin
(``user_config.model_version`` of the Validator); ``route`` picks a version per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, replace
from typing import Protocol

from sparc_ray.registry.releases import Release

ROUTE_KEY_HEADER = "x-route-key"  # canary stickiness: same key, same version


class ReleaseSource(Protocol):
    def release_state(self) -> tuple[str | None, Release | None]: ...


@dataclass(frozen=True)
class ReleaseView:
    production: str | None = None
    release: Release | None = None  # only while its version differs from production
    pinned: str | None = None
    error: str | None = None  # the last registry read failed (this view is the one before)

    @property
    def canary(self) -> Release | None:
        r = self.release
        return r if r is not None and r.mode == "canary" and not self.pinned else None

    @property
    def shadow(self) -> Release | None:
        r = self.release
        return r if r is not None and r.mode == "shadow" and not self.pinned else None

    @property
    def serving(self) -> str | None:
        """What answers requests that the canary does not take."""
        return self.pinned or self.production

    def route(self, key: str | None = None) -> str | None:
        """The version for one request: the canary's share by weight (by a hash of ``key``
        when the client sends one, so a key always lands on the same side), else production."""
        if (canary := self.canary) is not None:
            if key is None:
                # B311: a traffic split, not a secret
                point = random.random() * 100  # nosec B311
            else:
                digest = hashlib.sha256(f"{canary.id}:{key}".encode()).digest()
                point = int.from_bytes(digest[:8], "big") / 2**64 * 100
            if point < canary.weight:
                return canary.version
        return self.serving


class ReleaseWatcher:
    """Polls the registry's release records; keeps the last good view when a read fails."""

    def __init__(self, source: ReleaseSource, poll_interval_s: float = 1.0) -> None:
        self.source, self.poll_interval_s = source, poll_interval_s
        self.view = ReleaseView()
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    def pin(self, version: str | None) -> None:
        self.view = replace(self.view, pinned=version)

    async def refresh(self, force: bool = False) -> ReleaseView:
        if not force and time.monotonic() - self._read_at < self.poll_interval_s:
            return self.view
        async with self._lock:
            if force or time.monotonic() - self._read_at >= self.poll_interval_s:
                try:
                    production, release = await asyncio.to_thread(self.source.release_state)
                    if release is not None and release.version == production:
                        release = None
                    self.view = ReleaseView(production, release, self.view.pinned)
                except Exception as exc:  # storage hiccup: keep routing as before
                    self.view = replace(self.view, error=f"{type(exc).__name__}: {exc}")
                self._read_at = time.monotonic()
        return self.view
