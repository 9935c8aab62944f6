"""Probabilities to class labels: the one place the rule is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def class_index(proba: np.ndarray) -> np.ndarray:
    """Each probability row's class position: argmax, scikit-learn's own rule (first max
    wins)."""
    return np.asarray(proba).argmax(axis=1)


def labels_from_proba(proba: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The label of each probability row (``class_index`` into ``classes``).

    A plain (not object) array, so scikit-learn's metrics recognise numeric labels."""
    return np.asarray(list(classes))[class_index(proba)]
