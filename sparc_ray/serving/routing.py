"""Which version answers a request: the registry's release records, read by every replica.

Each deployment keeps a ``ReleaseWatcher`` that re-reads ``production`` and
``candidate.json`` every ``poll_interval_s`` (or at once when told, e.g. after
``/reload-model``). A ``ReleaseView`` is a snapshot of those records plus the app's pin
(``user_config.model_version`` of the Validator); ``route`` picks a version per request.

The records are not signed, so a store writer can rewrite them. With a source that checks
versions (``check_release``: signature and passed gates), a version the records name is
served only once it checks out: a refused production leaves the last verified production
(this watcher's, else the newest verified one in the alias history) serving, and a refused
candidate is not routed to. ``ReleaseView.refused`` says what was refused and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from sparc_ray.registry.releases import Release, ReleaseRecords

ROUTE_KEY_HEADER = "x-route-key"  # canary stickiness: same key, same version


REFUSED_RECHECK_S = 10.0  # a refused version is checked again after this long
MAX_CHECKED = 64


class ReleaseSource(Protocol):
    def release_state(self) -> tuple[str | None, Release | None]: ...


@dataclass(frozen=True)
class ReleaseView:
    production: str | None = None
    release: Release | None = None  # only while its version differs from production
    pinned: str | None = None
    error: str | None = None  # the last registry read failed (this view is the one before)
    alias: str | None = None  # what the production record names (``production`` if verified)
    refused: tuple[tuple[str, str], ...] = ()  # versions the records name that were refused

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
    """Polls the registry's release records; keeps the last good view when a read fails, and
    the last verified production when the records name a refused one."""

    def __init__(self, source: ReleaseSource, poll_interval_s: float = 1.0) -> None:
        self.source, self.poll_interval_s = source, poll_interval_s
        self.view = ReleaseView()
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._check: Callable[[str], object] | None = getattr(source, "check_release", None)
        self._records: Callable[[], ReleaseRecords] | None = getattr(
            source, "release_records", None
        )
        self._checked: dict[str, tuple[float, str | None]] = {}  # version -> (when, refusal)

    def refusal(self, version: str) -> str | None:
        """Why ``version`` may not serve through the records (None: it may)."""
        if self._check is None:
            return None
        at, reason = self._checked.get(version, (0.0, "unchecked"))
        if version not in self._checked or (
            reason is not None and time.monotonic() - at >= REFUSED_RECHECK_S
        ):
            try:
                self._check(version)
                reason = None
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if len(self._checked) >= MAX_CHECKED:
                self._checked.clear()
            self._checked[version] = (time.monotonic(), reason)
        return reason

    def _read(self) -> ReleaseView:
        """The records, with every version they name checked (blocking I/O)."""
        if self._records is None:
            production, release = self.source.release_state()
            records = ReleaseRecords(production, release)
        else:
            records = self._records()
        refused: dict[str, str] = {}
        production = records.alias
        if production is not None and (reason := self.refusal(production)):
            refused[production] = reason
        if (production is None and records.error) or production in refused:
            # The last verified production: this watcher's, else the newest in the history.
            earlier = dict.fromkeys(filter(None, (self.view.production, *records.history[::-1])))
            usable = (v for v in earlier if v not in refused and not self.refusal(v))
            production = next(usable, None)
        release = records.release
        if release is not None and (release.version in (production, records.alias)):
            release = None
        if release is not None and (reason := self.refusal(release.version)):
            refused[release.version], release = reason, None
        return ReleaseView(
            production,
            release,
            self.view.pinned,
            error=records.error,
            alias=records.alias,
            refused=tuple(refused.items()),
        )

    def pin(self, version: str | None) -> None:
        self.view = replace(self.view, pinned=version)

    async def refresh(self, force: bool = False) -> ReleaseView:
        if not force and time.monotonic() - self._read_at < self.poll_interval_s:
            return self.view
        async with self._lock:
            if force or time.monotonic() - self._read_at >= self.poll_interval_s:
                try:
                    view = await asyncio.to_thread(self._read)
                    self.view = replace(view, pinned=self.view.pinned)
                except Exception as exc:  # storage hiccup: keep routing as before
                    self.view = replace(self.view, error=f"{type(exc).__name__}: {exc}")
                self._read_at = time.monotonic()
        return self.view
