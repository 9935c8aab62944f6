"""Model deployment: holds verified models (ONNX, or the sklearn fallback) and scores batches.

Each call names the version that must answer it (Serve model multiplexing:
``handle.options(multiplexed_model_id=version)``), as routed by the Validator from the
registry's release records. A replica keeps up to ``MAX_VERSIONS`` versions loaded (LRU);
it also reads the records itself every ``poll_interval_s`` and loads production and the
candidate ahead of their first request, so a promotion or a new canary does not wait on a
load. A version that cannot be loaded or verified raises ``VersionUnavailable``; what is
loaded keeps serving.

The Validator sends one call per micro-batch (the only batching stage on the request path).
If scoring a batch raises, its requests are scored one by one so that only the culprit fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from sparc_ray.inference.loader import LoadedModel, ModelLoader
from sparc_ray.serving import metrics
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.routing import ReleaseWatcher
from sparc_ray.serving.settings import ModelSettings

logger = logging.getLogger("ray.serve")
MAX_ROWS_SEARCHED = 64  # a failing request up to this size is searched for the failing row
MAX_VERSIONS = 3  # production, candidate, and the one being replaced


class NoModelError(RuntimeError):
    """No model is loaded yet (nothing promoted, or every load failed)."""


class VersionUnavailable(RuntimeError):
    """The version a call names cannot be loaded or verified here."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(version, reason)
        self.version, self.reason = version, reason

    def __str__(self) -> str:
        return f"version {self.version} is unavailable: {self.reason}"


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
    n_classes = len(current.metadata.classes)
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
    async def __init__(self, loader: ModelLoader) -> None:
        self.loader = loader
        self.settings = ModelSettings()
        self.watcher = ReleaseWatcher(loader, self.settings.poll_interval_s)
        self.load_errors: dict[str, str] = {}
        self.loaded: weakref.WeakValueDictionary[str, LoadedModel] = weakref.WeakValueDictionary()
        self.batch_size = metrics.batch_size()
        self.version_info = metrics.version_info()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll_forever())
        self._log_flusher = loop.create_task(flush_logs_forever())

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply ``user_config`` (``ModelSettings``)."""
        self.settings = ModelSettings.model_validate(config)
        self.watcher.poll_interval_s = self.settings.poll_interval_s

    # -- versions -------------------------------------------------------------------------------
    @serve.multiplexed(max_num_models_per_replica=MAX_VERSIONS)
    async def get_model(self, version: str) -> LoadedModel:
        """Load and verify one version (Serve keeps the most recently used ones)."""
        loaded = await asyncio.to_thread(self.loader.load, version)
        self.loaded[version] = loaded
        self.load_errors.pop(version, None)
        self._publish_versions()
        logger.info(
            "model %s version %s loaded (engine %s%s)",
            self.loader.name,
            version,
            loaded.engine,
            f": {loaded.engine_reason}" if loaded.engine_reason else "",
            extra={"model_version": version},
        )
        return loaded

    async def _named_model(self) -> LoadedModel:
        version = serve.get_multiplexed_model_id()
        if not version:
            raise NoModelError("the call names no model version")
        try:
            return await self.get_model(version)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.load_errors[version] = reason
            raise VersionUnavailable(version, reason) from None

    async def _poll_forever(self) -> None:
        """Load production and the candidate before their first request."""
        while True:
            view = await self.watcher.refresh()
            for version in filter(None, (view.production, view.release and view.release.version)):
                if version not in self.loaded and version not in self.load_errors:
                    try:
                        await self.get_model(version)
                    except Exception as exc:  # requests naming it get VersionUnavailable
                        self.load_errors[version] = f"{type(exc).__name__}: {exc}"
                        logger.warning("could not load %s: %s", version, exc)
            self._publish_versions()  # Ray drops gauges that are not refreshed
            await asyncio.sleep(min(1.0, self.settings.poll_interval_s))

    def _publish_versions(self) -> None:
        with contextlib.suppress(Exception):
            for version in list(self.loaded):
                self.version_info.set(
                    1, tags={"model_name": self.loader.name, "model_version": version}
                )

    async def metadata(self) -> dict[str, Any]:
        """The named version's metadata, with the engine serving it."""
        return (await self._named_model()).describe()

    # -- inference ----------------------------------------------------------------------------
    async def predict(self, columns: dict[str, np.ndarray], sizes: list[int]) -> Scored:
        """Score one micro-batch with the named version: ``columns`` stacks the requests'
        rows, ``sizes`` says how many rows each request holds."""
        current = await self._named_model()
        try:
            result = Scored(current.version, current.scorer.predict_proba(columns))
        except Exception as exc:
            logger.warning(
                "batch of %d requests failed (%r); scoring them one by one", len(sizes), exc
            )
            result = score_isolated(current, columns, sizes)
        with contextlib.suppress(Exception):  # monitoring never fails a prediction
            self.batch_size.observe(
                sum(sizes),
                tags={"model_name": self.loader.name, "model_version": current.version},
            )
        return result

    async def check_health(self) -> None:
        if self._poller.done():
            raise RuntimeError(f"version poller stopped: {self._poller.exception()!r}")
