"""Model deployment: holds the verified model (ONNX, or the sklearn fallback), scores batches,
swaps versions.

A replica serves the version its target names (``production`` by default, or a version pinned
through ``/reload-model`` / ``user_config.model_version``). It polls the target, loads a new version
completely in a worker thread, and only then swaps it in; if loading or verification fails it
keeps serving the old one and reports the error.

The Validator sends one call per micro-batch (the only batching stage on the request path).
If scoring a batch raises, its requests are scored one by one so that only the culprit fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray import serve

from sparc_ray.serving import metrics
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.loader import LoadedModel, ModelLoader, version_board
from sparc_ray.serving.settings import ModelSettings

logger = logging.getLogger("ray.serve")
MAX_ROWS_SEARCHED = 64  # a failing request up to this size is searched for the failing row


class NoModelError(RuntimeError):
    """No model is loaded yet (nothing promoted, or every load failed)."""


class SchemaMismatchError(RuntimeError):
    """The request was validated against another version's features (a switch in between)."""


@dataclass
class Scored:
    """A batch's probabilities (rows of failed requests are NaN) and what failed, by request
    index: ``{"row": row in that request or None, "message": ...}``."""

    version: str
    proba: np.ndarray
    failed: dict[int, dict[str, Any]] = field(default_factory=dict)


def _slice(columns: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {n: c[a:b] for n, c in columns.items()}


def score_isolated(
    current: LoadedModel, columns: dict[str, np.ndarray], sizes: list[int]
) -> Scored:
    """Score each request alone; a failing one gets NaN rows and an error naming the first
    failing row when the request is small enough to search."""
    parts, failed, start = [], {}, 0
    n_classes = len(current.metadata["classes"])
    for i, size in enumerate(sizes):
        part = _slice(columns, start, start + size)
        try:
            parts.append(current.scorer.predict_proba(part))
        except Exception as exc:
            parts.append(np.full((size, n_classes), np.nan))
            failed[i] = {"row": _failing_row(current, part, size), "message": str(exc)}
        start += size
    return Scored(current.version, np.concatenate(parts), failed)


def _failing_row(current: LoadedModel, part: dict[str, np.ndarray], size: int) -> int | None:
    if size == 1:
        return 0
    for row in range(min(size, MAX_ROWS_SEARCHED)):
        try:
            current.scorer.predict_proba(_slice(part, row, row + 1))
        except Exception:
            return row
    return None


@serve.deployment(name="Model", ray_actor_options={"num_cpus": 0.5})
class Model:
    async def __init__(self, loader: ModelLoader, default_ref: str = "production") -> None:
        self.loader = loader
        self.default_ref = self.config_ref = default_ref
        self.settings = ModelSettings()
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.generation = -1
        self._switch = asyncio.Lock()
        ctx = serve.get_replica_context()
        self.replica_id, self.app_name = ctx.replica_tag, ctx.app_name
        self.board = version_board(self.app_name, default_ref)
        self.batch_size = metrics.batch_size()
        self.version_info = metrics.version_info()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll_forever())
        self._log_flusher = loop.create_task(flush_logs_forever())

    # -- configuration & version switching ------------------------------------------------
    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply ``user_config`` (``ModelSettings``), including an optional pinned version."""
        self.settings = ModelSettings.model_validate(config)
        ref = self.settings.model_version or self.default_ref
        if ref != self.config_ref:
            self.config_ref = ref
            await self.board.set_target.remote(ref)
        await self.sync()

    async def _poll_forever(self) -> None:
        await self.sync()
        last_registry_check = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.settings.poll_interval_s))
            # The board is cheap to ask every second; the registry alias every poll interval.
            try:
                _ref, generation = await self.board.target.remote()
            except ray.exceptions.RayActorError:  # board lost: recreate it with our default
                self.board = version_board(self.app_name, self.config_ref)
                continue
            if self.current is not None:  # Ray drops gauges that are not refreshed
                self._publish_version(None)
            due = time.monotonic() - last_registry_check >= self.settings.poll_interval_s
            if generation != self.generation or due:
                last_registry_check = time.monotonic()
                await self.sync()

    async def sync(self) -> dict[str, Any]:
        """Serve the board's target version; load it first if it is not the current one."""
        async with self._switch:
            ref, generation = await self.board.target.remote()
            try:
                version = await asyncio.to_thread(self.loader.resolve, ref)
                if self.current is None or version != self.current.version:
                    loaded = await asyncio.to_thread(self.loader.load, version)
                    previous, self.current = self.current, loaded
                    self._publish_version(previous)
                    logger.info(
                        "model %s version %s loaded (engine %s%s)",
                        self.loader.name,
                        version,
                        loaded.engine,
                        f": {loaded.engine_reason}" if loaded.engine_reason else "",
                        extra={"model_version": version},
                    )
                self.last_error = None
            except Exception as exc:  # keep serving the old version
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "model %s: could not switch to %r: %s", self.loader.name, ref, self.last_error
                )
            self.generation = generation
            state = self._state()
            await self.board.report.remote(self.replica_id, {**state, "generation": generation})
            return state

    def _publish_version(self, previous: LoadedModel | None) -> None:
        name = self.loader.name
        if previous is not None:
            self.version_info.set(0, tags={"model_name": name, "model_version": previous.version})
        self.version_info.set(1, tags={"model_name": name, "model_version": self.current.version})

    def _state(self) -> dict[str, Any]:
        return {
            "model_loaded": self.current is not None,
            "model_version": self.current.version if self.current else None,
            "engine": self.current.engine if self.current else None,
            "loaded_at": self.current.loaded_at if self.current else None,
            "last_error": self.last_error,
        }

    async def metadata(self) -> dict[str, Any]:
        if self.current is None:
            raise NoModelError(self.last_error or "no model loaded")
        return self.current.describe()

    # -- inference ----------------------------------------------------------------------------
    async def predict(self, columns: dict[str, np.ndarray], sizes: list[int]) -> Scored:
        """Score one micro-batch: ``columns`` stacks the requests' rows, ``sizes`` says how
        many rows each request holds."""
        current = self.current
        if current is None:
            raise NoModelError(self.last_error or "no model loaded")
        if list(columns) != current.scorer.feature_names:
            raise SchemaMismatchError(current.version)
        n_rows = sum(sizes)
        try:
            result = Scored(current.version, current.scorer.predict_proba(columns))
        except Exception as exc:
            logger.warning(
                "batch of %d requests failed (%r); scoring them one by one", len(sizes), exc
            )
            result = score_isolated(current, columns, sizes)
        with contextlib.suppress(Exception):  # monitoring never fails a prediction
            self.batch_size.observe(n_rows, tags={"model_name": self.loader.name})
        return result

    async def check_health(self) -> None:
        if self._poller.done():
            raise RuntimeError(f"version poller stopped: {self._poller.exception()!r}")

    async def __del__(self) -> None:
        self._poller.cancel()
        with contextlib.suppress(Exception):  # the board may already be gone at shutdown
            await self.board.forget.remote(self.replica_id)
