"""What the deployments load models and read release state through: the registry.

Deployments take a ``ModelLoader`` so tests (and other registries) can inject their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from sparc_ray.models import IntegrityError, SPARCClassificationModel
from sparc_ray.onnx_model import OnnxModel
from sparc_ray.registry import ModelRegistry
from sparc_ray.releases import Release, current_release


class Scorer(Protocol):
    """What a Model replica predicts with: probabilities from one array per feature."""

    feature_names: list[str]

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray: ...


class SklearnScorer:
    """The fallback engine: the unpickled scikit-learn pipeline, one inference thread."""

    def __init__(self, model: SPARCClassificationModel) -> None:
        model.set_n_jobs(1)
        self.model, self.feature_names = model, list(model.feature_names)
        self._threads = ThreadpoolController()

    def predict_proba(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        with self._threads.limit(limits=1):  # scoped: no process-wide limit stays in force
            return self.model.predict_proba(pd.DataFrame(columns, copy=False))


@dataclass
class LoadedModel:
    scorer: Scorer
    metadata: dict[str, Any]
    engine: str  # "onnx" | "sklearn"
    engine_reason: str | None = None  # why the sklearn fallback serves this version
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def describe(self) -> dict[str, Any]:
        """Metadata as the API shows it, with the engine serving this version."""
        return {**self.metadata, "serving": {"engine": self.engine, "reason": self.engine_reason}}


class ModelLoader(Protocol):
    name: str
    registry: ModelRegistry

    def release_state(self) -> tuple[str | None, Release | None]: ...

    def load(self, version: str) -> LoadedModel: ...

    def load_metadata(self, version: str) -> dict[str, Any]: ...


class RegistryLoader:
    """Load a version verified, and read the registry's release records.

    A version with a parity-checked ONNX export is served by onnxruntime: the file is
    sha256-verified and no pickle is read. Otherwise the sha256-verified scikit-learn pipeline
    serves, and ``engine_reason`` says why.
    """

    def __init__(self, store: str, name: str) -> None:
        self.store, self.name = store, name
        self._registry: ModelRegistry | None = None

    @property
    def registry(self) -> ModelRegistry:  # opened lazily, in the replica, not at bind()
        if self._registry is None:
            self._registry = ModelRegistry(self.store)
        return self._registry

    def release_state(self) -> tuple[str | None, Release | None]:
        """The registry's record of what is served: production and the release in progress."""
        return self.registry.alias(self.name), current_release(self.registry, self.name)

    def load(self, version: str) -> LoadedModel:
        meta = self.registry.metadata(self.name, version)
        onnx = meta.get("onnx") or {}
        if onnx.get("status") == "ok":
            data = self.registry.read_file(self.name, version, onnx["file"])
            kinds = [f["kind"] for f in meta["features"]]
            names = [f["name"] for f in meta["features"]]
            try:
                scorer = OnnxModel.from_bytes(data, onnx["sha256"], names, kinds, meta["classes"])
                return LoadedModel(scorer, meta, "onnx")
            except IntegrityError:
                raise  # a tampered file: refuse the version, do not fall back
            except Exception as exc:  # e.g. an onnxruntime that cannot run this graph
                reason = f"ONNX model did not load: {type(exc).__name__}: {exc}"
        else:
            reason = onnx.get("reason") or "this version has no ONNX export"
        model, meta = self.registry.load(self.name, version)
        return LoadedModel(SklearnScorer(model), meta, "sklearn", reason)

    def load_metadata(self, version: str) -> dict[str, Any]:
        return self.registry.metadata(self.name, version)
