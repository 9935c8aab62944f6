"""Isolating the rows a model fails on, for serving and batch scoring alike.

A batch is scored in one call. If the call raises, the batch is split in halves until every
failing row is found (bisection: about ``2·k·log2(n)`` calls for ``k`` failing rows out of
``n``), so that only those rows fail and every other row gets its probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sparc_ray.inference.columns import Columns, n_rows, take

PredictProba = Callable[[Columns], np.ndarray]


@dataclass(frozen=True)
class Isolated:
    """Probabilities per row (NaN rows where the model failed) and each failed row's error."""

    proba: np.ndarray
    failed: dict[int, str] = field(default_factory=dict)


def score_isolating(predict_proba: PredictProba, columns: Columns, n_classes: int) -> Isolated:
    """Score ``columns``; if the model raises, find the failing rows by bisection."""
    n = n_rows(columns)
    proba = np.full((n, n_classes), np.nan)
    failed: dict[int, str] = {}
    pending = [(0, n)]
    while pending:
        start, stop = pending.pop()
        try:
            proba[start:stop] = predict_proba(take(columns, slice(start, stop)))
        except Exception as exc:
            if stop - start == 1:
                failed[start] = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            else:
                middle = (start + stop) // 2
                pending += [(middle, stop), (start, middle)]
    return Isolated(proba, dict(sorted(failed.items())))
