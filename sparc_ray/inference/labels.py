"""Probabilities to class labels: the one place the rule is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def labels_from_proba(proba: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The label of each probability row: argmax, scikit-learn's own rule (first max wins).

    A plain (not object) array, so scikit-learn's metrics recognise numeric labels."""
    return np.asarray(list(classes))[np.asarray(proba).argmax(axis=1)]
