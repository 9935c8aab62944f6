"""What the deployments load models and read release state through: the registry.

Deployments take a ``ModelLoader`` so tests (and other registries) can inject their own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from sparc_ray.inference.onnx_model import OnnxModel
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.layout import MODEL_FILE
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.releases import (
    GatesFailed,
    Release,
    ReleaseRecords,
    current_release,
    read_records,
)
from sparc_ray.registry.signing import SignatureError, key_id
from sparc_ray.registry.store import ModelRegistry

logger = logging.getLogger("ray.serve")

if TYPE_CHECKING:  # scikit-learn is imported only by the fallback engine
    from sparc_ray.training.estimator import SPARCClassificationModel


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
    metadata: ModelMetadata
    engine: str  # "onnx" | "sklearn"
    engine_reason: str | None = None  # why the sklearn fallback serves this version
    signed_by: str | None = None  # id of the public key that verified the version
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.metadata.version

    def describe(self) -> dict[str, Any]:
        """Metadata as the API shows it (metadata.json's object), with the engine serving
        this version."""
        serving = {"engine": self.engine, "reason": self.engine_reason, "signed_by": self.signed_by}
        return {**self.metadata.to_dict(), "serving": serving}


class ModelLoader(Protocol):
    name: str
    registry: ModelRegistry
    public_key: bytes | None  # raw Ed25519 key every served version must be signed with

    def release_state(self) -> tuple[str | None, Release | None]: ...

    def load(self, version: str) -> LoadedModel: ...

    def load_metadata(self, version: str) -> ModelMetadata: ...


class RegistryLoader:
    """Load a version verified, and read the registry's release records.

    With a ``public_key`` (raw Ed25519 bytes) a version loads only if its signature verifies,
    and every file is checked against the signed digests (``sparc_ray.registry.signing``).
    A version with a parity-checked ONNX export is served by onnxruntime: no pickle is read.
    Otherwise the scikit-learn pipeline serves (``engine_reason`` says why), and only from a
    signed version: unpickling runs code, so without a public key the fallback is refused.
    """

    def __init__(self, store: str, name: str, public_key: bytes | None = None) -> None:
        self.store, self.name, self.public_key = store, name, public_key
        self._registry: ModelRegistry | None = None

    @property
    def registry(self) -> ModelRegistry:  # opened lazily, in the replica, not at bind()
        if self._registry is None:
            self._registry = ModelRegistry(self.store)
        return self._registry

    def release_state(self) -> tuple[str | None, Release | None]:
        """The registry's record of what is served: production and the release in progress."""
        return self.registry.alias(self.name), current_release(self.registry, self.name)

    def release_records(self) -> ReleaseRecords:
        """The release records, each read on its own (a refused one is named, not raised)."""
        return read_records(self.registry, self.name)

    def check_release(self, version: str) -> ModelMetadata:
        """What a version needs to serve through the (unsigned) release records: its
        signature verifies and its signed metadata says its gates passed. A version that
        failed them serves only when pinned (the Validator's ``user_config.model_version``)."""
        meta = self.load_metadata(version)
        if not meta.gates.passed:
            raise GatesFailed(
                f"{version} failed its gates {meta.gates.failed}: it serves only when pinned "
                "(user_config.model_version of the Validator)"
            )
        return meta

    def _warn_unsigned(self, version: str) -> None:
        logger.warning(
            "UNSIGNED: %s/%s is loaded without a signature check (no public_key; "
            "allow_unsigned is for development only)",
            self.name,
            version,
        )

    def load(self, version: str) -> LoadedModel:
        reg, signer = self.registry, key_id(self.public_key) if self.public_key else None
        if self.public_key is not None:
            signed = reg.verify_signature(self.name, version, self.public_key)
            meta, read = signed.metadata, signed.read
        else:
            self._warn_unsigned(version)
            meta = reg.metadata(self.name, version)

            def read(rel: str) -> bytes:
                return reg.read_file(self.name, version, rel)

        onnx = meta.onnx_file()
        if onnx is not None:
            onnx_file, onnx_sha256 = onnx
            data = read(onnx_file)
            names, kinds = meta.feature_names, meta.feature_kinds
            try:
                scorer = OnnxModel.from_bytes(data, onnx_sha256, names, kinds, meta.classes)
                return LoadedModel(scorer, meta, "onnx", signed_by=signer)
            except IntegrityError:
                raise  # a tampered file: refuse the version, do not fall back
            except Exception as exc:  # e.g. an onnxruntime that cannot run this graph
                reason = f"ONNX model did not load: {type(exc).__name__}: {exc}"
        else:
            reason = (meta.onnx and meta.onnx.reason) or "this version has no ONNX export"
        if self.public_key is None:
            raise SignatureError(
                f"{version} needs the sklearn fallback ({reason}), which unpickles "
                f"{MODEL_FILE}: that requires a signed version and `public_key` in the app args"
            )
        from sparc_ray.training.estimator import SPARCClassificationModel

        model = SPARCClassificationModel.from_bytes(read(MODEL_FILE), meta.sha256)
        return LoadedModel(SklearnScorer(model), meta, "sklearn", reason, signer)

    def load_metadata(self, version: str) -> ModelMetadata:
        """metadata.json (as signed, with a public key), for validation and monitoring."""
        if self.public_key is None:
            self._warn_unsigned(version)
            return self.registry.metadata(self.name, version)
        return self.registry.verify_signature(self.name, version, self.public_key).metadata
