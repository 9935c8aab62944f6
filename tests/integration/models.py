"""A published version's scikit-learn pipeline for comparing with what the app answers."""

from __future__ import annotations

from sparc_ray.registry.layout import MODEL_FILE
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import SPARCClassificationModel


def load_verified(
    reg: ModelRegistry, name: str, version: str, public_key: bytes
) -> tuple[SPARCClassificationModel, ModelMetadata]:
    """The pipeline and metadata of ``name``/``version``, unpickled only after the version's
    signature (raw Ed25519 ``public_key``) and the pickle's signed sha256 check out, as the
    Serve app's scikit-learn fallback does (the registry has no unverified load)."""
    signed = reg.verify_signature(name, version, public_key)
    data = signed.read(MODEL_FILE)
    return SPARCClassificationModel.from_bytes(data, signed.metadata.sha256), signed.metadata
