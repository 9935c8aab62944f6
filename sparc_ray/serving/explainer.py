"""Explainer deployment: per-row feature contributions (``sparc_ray.inference.explain``) for
requests that ask for them (``"explain": true`` on ``/predict``, ``parameters.explain`` on V2
infer), off the plain prediction path: a request without ``explain`` never reaches it.

Each call names the version that answered the request (Serve model multiplexing, as the Model
deployment does). A version is explained only if it is signed (the signature and the pickle's
signed sha256 are checked before it is unpickled) and its publish-time check passed; otherwise
the answer says why, and the prediction is served without explanations.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from ray import serve

from sparc_ray.inference.columns import Columns
from sparc_ray.inference.explain import ExplanationError, load_explainer
from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.serving.tasks import Failures

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from sparc_ray.inference.explain import Explainer as RowExplainer

logger = logging.getLogger("ray.serve")
EXPLAINERS_PER_REPLICA = 2  # production and the candidate


@dataclass(frozen=True)
class Explained:
    """One request's explanations (a JSON-ready dict per row), or why there are none."""

    rows: list[dict[str, Any]] | None
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        """What the response carries: ``explanations`` (None when unavailable) and, then,
        ``explanation_error``."""
        if self.error is not None:
            return {"explanations": None, "explanation_error": self.error}
        return {"explanations": self.rows}


@serve.deployment(name="Explainer")
class Explainer:
    def __init__(self, loader: RegistryLoader) -> None:
        self.loader = loader

    @serve.multiplexed(max_num_models_per_replica=EXPLAINERS_PER_REPLICA)
    async def get_explainer(self, version: str) -> RowExplainer:
        key = self.loader.public_key
        if key is None:
            raise ExplanationError("explanations need signed versions (the app's public_key)")
        reg, name = self.loader.registry, self.loader.name
        return await asyncio.to_thread(load_explainer, reg, name, version, key)

    async def explain(self, columns: Columns) -> Explained:
        """Explain the rows of ``columns`` with the named version."""
        version = serve.get_multiplexed_model_id()
        try:
            explainer = await self.get_explainer(version)
        except ExplanationError as exc:
            return Explained(None, str(exc))

        def run() -> list[dict[str, Any]]:
            return explainer.explain(pd.DataFrame(columns, copy=False)).to_rows()

        return Explained(await asyncio.to_thread(run))


class Explanations:
    """The Validator's side: one Explainer call per request that asks; a failed call is
    counted and answered as ``explanation_error``, never as a failed prediction."""

    def __init__(self, handle: DeploymentHandle | None, failures: Failures) -> None:
        self.handle, self.failures = handle, failures

    async def explain(self, version: str, columns: Columns) -> dict[str, Any]:
        if self.handle is None:
            return Explained(None, "this app has no Explainer deployment").fields()
        try:
            call = self.handle.options(multiplexed_model_id=version).explain
            explained: Explained = await call.remote(columns)
        except Exception as exc:
            self.failures.record("explainer", exc)
            logger.warning("explaining %s failed: %s", version, exc)
            return Explained(None, f"the explainer failed: {type(exc).__name__}").fields()
        return explained.fields()
