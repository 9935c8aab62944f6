"""How the integrity of a version's files is checked. Kept free of scikit-learn so that
registry tools (``sparc-ray models ...``) stay light; the files' names are in
``sparc_ray.registry.layout``."""

from __future__ import annotations

import hashlib


class IntegrityError(RuntimeError):
    """A model file does not match the sha256 recorded next to it."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
