"""Rows as columns: one array per feature, in the model's order, the form every scorer takes
(``Scorer.predict_proba(columns)``) and every path builds (HTTP, batch, tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Columns = dict[str, np.ndarray]


def n_rows(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def take(columns: Columns, rows: np.ndarray | slice) -> Columns:
    """The given rows (an index array, a boolean mask or a slice) of every column."""
    return {name: values[rows] for name, values in columns.items()}


def concat(parts: Sequence[Columns]) -> Columns:
    """Several column sets stacked row-wise (the first one itself when there is one)."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
