"""Model deployment: holds the verified pipeline, predicts with ``@serve.batch``, swaps versions.

A replica serves the version its target names (``production`` by default, or a version pinned
through ``/reload-model`` / ``user_config.model_version``). It polls the target, loads a new
version completely in a worker thread, and only then swaps it in; if loading or sha256
verification fails it keeps serving the old one and reports the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray import serve
from threadpoolctl import threadpool_limits

from sparc_ray.serving import metrics
from sparc_ray.serving.loader import LoadedModel, ModelLoader, version_board

logger = logging.getLogger("ray.serve")


class NoModelError(RuntimeError):
    """No model is loaded yet (nothing promoted, or every load failed)."""


class SchemaMismatchError(RuntimeError):
    """The request was validated against another version's features (a switch in between)."""


@serve.deployment(name="Model", ray_actor_options={"num_cpus": 0.5})
class Model:
    def __init__(self, loader: ModelLoader, default_ref: str = "production") -> None:
        threadpool_limits(1)  # one inference thread: replicas hold fractional CPUs
        self.loader = loader
        self.config_ref = default_ref
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self.poll_interval_s = 15.0
        self.generation = -1
        self._switch = asyncio.Lock()
        ctx = serve.get_replica_context()
        self.replica_id, self.app_name = ctx.replica_tag, ctx.app_name
        self.board = version_board(self.app_name, default_ref)
        self.batch_size = metrics.batch_size()
        self.version_info = metrics.version_info()
        self._poller = asyncio.get_event_loop().create_task(self._poll_forever())

    # -- configuration & version switching ------------------------------------------------
    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply ``user_config``: batching, poll interval, optional pinned ``model_version``."""
        self.predict.set_max_batch_size(int(config.get("max_batch_rows", 4000)))
        self.predict.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.005)))
        self.poll_interval_s = float(config.get("poll_interval_s", 15))
        ref = config.get("model_version")
        if ref and ref != self.config_ref:
            self.config_ref = ref
            await self.board.set_target.remote(ref)
        await self.sync()

    async def _poll_forever(self) -> None:
        await self.sync()
        last_registry_check = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.poll_interval_s))
            # The board is cheap to ask every second; the registry alias every poll interval.
            try:
                _ref, generation = await self.board.target.remote()
            except ray.exceptions.RayActorError:  # board lost: recreate it with our default
                self.board = version_board(self.app_name, self.config_ref)
                continue
            if self.current is not None:  # Ray drops gauges that are not refreshed
                self._publish_version(None)
            due = time.monotonic() - last_registry_check >= self.poll_interval_s
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
                    loaded.model.set_n_jobs(1)
                    previous, self.current = self.current, loaded
                    self._publish_version(previous)
                    logger.info(
                        "model %s version %s loaded",
                        self.loader.name,
                        version,
                        extra={"model_version": version},
                    )
                self.last_error = None
            except Exception as exc:  # keep serving the old version
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "model %s: could not switch to %r: %s", self.loader.name, ref, self.last_error
                )
            self.generation = generation
            state = self.state()
            await self.board.report.remote(self.replica_id, {**state, "generation": generation})
            return state

    def _publish_version(self, previous: LoadedModel | None) -> None:
        name = self.loader.name
        if previous is not None:
            self.version_info.set(0, tags={"model_name": name, "model_version": previous.version})
        self.version_info.set(1, tags={"model_name": name, "model_version": self.current.version})

    def state(self) -> dict[str, Any]:
        return {
            "model_loaded": self.current is not None,
            "model_version": self.current.version if self.current else None,
            "loaded_at": self.current.loaded_at if self.current else None,
            "last_error": self.last_error,
        }

    async def metadata(self) -> dict[str, Any]:
        if self.current is None:
            raise NoModelError(self.last_error or "no model loaded")
        return self.current.metadata

    # -- inference ----------------------------------------------------------------------------
    @serve.batch(
        max_batch_size=4000,  # rows (batch_size_fn); >= the Validator's batch_max_rows
        batch_wait_timeout_s=0.005,
        batch_size_fn=lambda batches: sum(len(next(iter(b.values()))) for b in batches),
    )
    async def predict(self, batches: list[dict[str, np.ndarray]]) -> list[tuple]:
        """Score several column batches in one ``predict_proba`` call.

        Each item is ``{feature: column array}``; returns ``(probabilities, version)`` per item.
        """
        current = self.current
        if current is None:
            raise NoModelError(self.last_error or "no model loaded")
        names = current.model.feature_names
        if any(b.keys() != set(names) for b in batches):
            raise SchemaMismatchError(current.version)
        sizes = [len(next(iter(b.values()))) for b in batches]
        frame = pd.DataFrame(
            {
                n: np.concatenate([b[n] for b in batches]) if len(batches) > 1 else batches[0][n]
                for n in names
            }
        )
        proba = current.model.predict_proba(frame)
        self.batch_size.observe(len(frame), tags={"model_name": self.loader.name})
        bounds = np.cumsum([0, *sizes])
        return [(proba[a:b], current.version) for a, b in itertools.pairwise(bounds)]

    async def check_health(self) -> None:
        if self._poller.done():
            raise RuntimeError(f"version poller stopped: {self._poller.exception()!r}")

    async def __del__(self) -> None:
        self._poller.cancel()
        with contextlib.suppress(Exception):  # the board may already be gone at shutdown
            await self.board.forget.remote(self.replica_id)
