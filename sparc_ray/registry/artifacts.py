"""How the integrity of a version's files is checked. Kept free of scikit-learn so that
registry tools (``sparc-ray models ...``) stay light; the files' names are in
``sparc_ray.registry.layout``."""

from __future__ import annotations

import hashlib

# Still imported from here by sparc_ray/inference/loader.py; new code imports layout.
from sparc_ray.registry.layout import METADATA_FILE, MODEL_FILE, ONNX_FILE

__all__ = ["METADATA_FILE", "MODEL_FILE", "ONNX_FILE", "IntegrityError", "sha256_bytes"]


class IntegrityError(RuntimeError):
    """A model file does not match the sha256 recorded next to it."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
