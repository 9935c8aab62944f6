"""What the deployments load models through: a registry-backed loader and the version board.

Deployments take a ``ModelLoader`` so tests (and other registries) can inject their own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import ray
from threadpoolctl import ThreadpoolController

from sparc_ray.models import IntegrityError, SPARCClassificationModel
from sparc_ray.onnx_model import OnnxModel
from sparc_ray.registry import ALIAS, ModelRegistry


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

    def resolve(self, ref: str) -> str: ...

    def load(self, version: str) -> LoadedModel: ...

    def load_metadata(self, version: str) -> dict[str, Any]: ...


class RegistryLoader:
    """Resolve ``production`` / ``latest`` / a version id and load it verified.

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

    def resolve(self, ref: str) -> str:
        return self.registry.resolve(self.name, ref)

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


@ray.remote(num_cpus=0)
class VersionBoard:
    """Which version every Model replica should serve, and what each replica reported.

    One named actor per application. ``/reload-model`` sets the target; Model replicas poll it
    (cheap) and report back after loading, so the ingress can wait until all have switched.
    """

    def __init__(self, ref: str) -> None:
        self.ref, self.generation = ref, 0
        self.replicas: dict[str, dict[str, Any]] = {}

    def target(self) -> tuple[str, int]:
        return self.ref, self.generation

    def set_target(self, ref: str) -> int:
        self.ref, self.generation = ref, self.generation + 1
        return self.generation

    def report(self, replica: str, state: dict[str, Any]) -> None:
        self.replicas[replica] = {**state, "reported_at": time.time()}

    def forget(self, replica: str) -> None:
        self.replicas.pop(replica, None)

    def status(self) -> dict[str, Any]:
        return {"ref": self.ref, "generation": self.generation, "replicas": dict(self.replicas)}


def served_version(status: dict[str, Any]) -> str | list[str] | None:
    """What the Model replicas on a board serve: one version, several (mid-switch), or None."""
    versions = sorted(
        {r["model_version"] for r in status["replicas"].values() if r["model_loaded"]}
    )
    return versions[0] if len(versions) == 1 else versions or None


def version_board(app_name: str, default_ref: str = ALIAS) -> ray.actor.ActorHandle:
    """The application's board, created on first use (detached: it outlives any one replica)."""
    return VersionBoard.options(
        name=f"sparc-version-board-{app_name}",
        namespace="sparc-ray",
        get_if_exists=True,
        lifetime="detached",
    ).remote(default_ref)


async def switch_target(
    board: ray.actor.ActorHandle, ref: str, version: str, timeout_s: float
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Point every Model replica at ``ref`` (resolving to ``version``) and wait for their
    reports. Returns the replicas and those that failed; on any failure the previous target
    is restored, so the replicas settle on what still serves."""
    previous = (await board.target.remote())[0]
    generation = await board.set_target.remote(ref)
    deadline = time.monotonic() + timeout_s
    while True:
        replicas = (await board.status.remote())["replicas"]
        done = all(r["generation"] >= generation for r in replicas.values())
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    failed = {
        k: r["last_error"] or f"still serving {r['model_version']}"
        for k, r in replicas.items()
        if r["last_error"] or r["model_version"] != version
    }
    if not replicas:
        failed = {"Model": "no Model replica reported"}
    if failed:
        await board.set_target.remote(previous)
    return replicas, failed
