"""Model deployment: holds verified models (ONNX, or the sklearn fallback) and scores batches.

Each call names the version that must answer it (Serve model multiplexing:
``handle.options(multiplexed_model_id=version)``), as routed by the Validator from the
registry's release records. A replica keeps up to ``MAX_VERSIONS_PER_REPLICA`` versions loaded
(LRU); it also reads the records itself every ``poll_interval_s`` and loads production and
the candidate ahead of their first request, so a promotion or a new canary does not wait on a
load. A version that cannot be loaded or verified raises ``VersionUnavailable``; what is
loaded keeps serving.

The Validator sends one call per micro-batch (the only batching stage on the request path).
If scoring a batch raises, the failing rows are isolated (``inference.isolation``) and only
the requests holding them fail.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import numpy as np
from ray import serve

from sparc_ray.inference.columns import Columns
from sparc_ray.inference.isolation import score_isolating
from sparc_ray.inference.loader import LoadedModel, ModelLoader
from sparc_ray.serving import metrics
from sparc_ray.serving.messages import NoModelError, RowFailure, Scored, VersionUnavailable
from sparc_ray.serving.routing import ReleaseWatcher
from sparc_ray.serving.settings import MAX_VERSIONS_PER_REPLICA, ModelSettings
from sparc_ray.serving.tasks import BackgroundTasks, Failures, flush_logs_forever

logger = logging.getLogger("ray.serve")


def score_batch(current: LoadedModel, columns: Columns, sizes: list[int]) -> Scored:
    """Score a micro-batch (``sizes``: rows per request, stacked in ``columns``). A request
    holding a row the model fails on fails, naming its first such row; the others answer."""
    isolated = score_isolating(current.scorer.predict_proba, columns, len(current.metadata.classes))
    failed: dict[int, RowFailure] = {}
    if isolated.failed:
        logger.warning(
            "%d of %d rows failed in a batch of %d requests",
            len(isolated.failed),
            len(isolated.proba),
            len(sizes),
        )
        start = 0
        for request, size in enumerate(sizes):
            rows = [r for r in range(start, start + size) if r in isolated.failed]
            if rows:
                failed[request] = RowFailure(rows[0] - start, isolated.failed[rows[0]])
                isolated.proba[start : start + size] = np.nan  # the request fails whole
            start += size
    return Scored(current.version, isolated.proba, failed)


@serve.deployment(name="Model")
class Model:
    # An async constructor: Serve awaits it (mypy expects __init__ to return None).
    async def __init__(self, loader: ModelLoader) -> None:  # type: ignore[misc]
        self.loader = loader
        self.settings = ModelSettings()
        self.watcher = ReleaseWatcher(loader, self.settings.poll_interval_s)
        self.load_errors: dict[str, str] = {}
        self.loaded: weakref.WeakValueDictionary[str, LoadedModel] = weakref.WeakValueDictionary()
        self.batch_size = metrics.batch_size()
        self.version_info = metrics.version_info()
        self.failures = Failures()
        self.tasks = BackgroundTasks()
        self.tasks.start("preload", self._poll_forever())
        self.tasks.start("log_flush", flush_logs_forever(self.failures))

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply ``user_config`` (``ModelSettings``)."""
        self.settings = ModelSettings.model_validate(config)
        self.watcher.poll_interval_s = self.settings.poll_interval_s

    # -- versions -------------------------------------------------------------------------------
    @serve.multiplexed(max_num_models_per_replica=MAX_VERSIONS_PER_REPLICA)
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
            candidate = view.release.version if view.release else None
            for version in filter(None, (view.production, candidate)):
                if version not in self.loaded and version not in self.load_errors:
                    try:
                        await self.get_model(version)
                    except Exception as exc:  # requests naming it get VersionUnavailable
                        self.load_errors[version] = f"{type(exc).__name__}: {exc}"
                        self.failures.record("preload", exc)
            self._publish_versions()  # Ray drops gauges that are not refreshed
            await asyncio.sleep(min(1.0, self.settings.poll_interval_s))

    def _publish_versions(self) -> None:
        try:
            for version in list(self.loaded):
                self.version_info.set(
                    1, tags={"model_name": self.loader.name, "model_version": version}
                )
        except Exception as exc:
            self.failures.record("version_gauge", exc)

    async def metadata(self) -> dict[str, Any]:
        """The named version's metadata, with the engine serving it."""
        return (await self._named_model()).describe()

    # -- inference ----------------------------------------------------------------------------
    async def predict(self, columns: Columns, sizes: list[int]) -> Scored:
        """Score one micro-batch with the named version: ``columns`` stacks the requests'
        rows, ``sizes`` says how many rows each request holds."""
        current = await self._named_model()
        result = score_batch(current, columns, sizes)
        try:  # monitoring never fails a prediction
            self.batch_size.observe(
                sum(sizes),
                tags={"model_name": self.loader.name, "model_version": current.version},
            )
        except Exception as exc:
            self.failures.record("batch_size_metric", exc)
        return result

    async def check_health(self) -> None:
        self.tasks.check()
