"""The files of a published version and how their integrity is checked. Kept free of
scikit-learn so that registry tools (``sparc-ray models ...``) stay light."""

from __future__ import annotations

import hashlib

MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"  # the compiled export, when it converts and passes parity
METADATA_FILE = "metadata.json"


class IntegrityError(RuntimeError):
    """A model file does not match the sha256 recorded next to it."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
