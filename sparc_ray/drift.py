"""Reference distributions (saved at training time) and population stability index (PSI).

Numeric features are binned at the training data's deciles; categorical features use the
training categories plus an ``__other__`` bucket; missing values get a ``__missing__`` bucket.
PSI = sum((p_cur - p_ref) * ln(p_cur / p_ref)) over buckets, with both sides floored at
``EPS`` so empty buckets stay finite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift,
> 0.25 significant shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparc_ray.data import FeatureSpec

N_BINS = 10
EPS = 1e-4
OTHER = "__other__"
MISSING = "__missing__"


def _numeric_reference(values: np.ndarray) -> dict[str, Any]:
    finite = values[~np.isnan(values)]
    edges = (
        np.unique(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1]))
        if len(finite)
        else np.array([])
    )
    counts = numeric_counts(values, edges)
    return {"kind": "numeric", "edges": edges.tolist(), "probs": (counts / counts.sum()).tolist()}


def numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (len(edges)+1 bins) plus a final missing bucket."""
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(float)
    return np.append(counts, float(missing.sum()))


def categorical_counts(values: np.ndarray, categories: list[str]) -> np.ndarray:
    """Counts per category, then ``__other__`` and ``__missing__``."""
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 2)
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            counts[-1] += 1
        else:
            counts[index.get(str(v), len(categories))] += 1
    return counts


def build_reference(
    X: pd.DataFrame, schema: list[FeatureSpec], predicted: np.ndarray, classes: list[Any]
) -> dict[str, Any]:
    """Per-feature bucket probabilities of the training rows and the predicted-class mix."""
    features: dict[str, Any] = {}
    for spec in schema:
        col = X[spec.name]
        if spec.kind == "numeric":
            features[spec.name] = _numeric_reference(col.to_numpy(dtype=float, na_value=np.nan))
        else:
            cats = list(spec.categories)
            counts = categorical_counts(col.to_numpy(dtype=object), cats)
            features[spec.name] = {
                "kind": "categorical",
                "categories": cats,
                "probs": (counts / counts.sum()).tolist(),
            }
    labels = [str(c) for c in classes]
    pred = pd.Series(np.asarray(predicted).astype(str)).value_counts(normalize=True)
    return {
        "method": "psi",
        "features": features,
        "predictions": {"classes": labels, "probs": [float(pred.get(c, 0.0)) for c in labels]},
    }


def psi(reference: np.ndarray | list[float], counts: np.ndarray) -> float:
    """Population stability index of observed ``counts`` against reference probabilities."""
    total = counts.sum()
    if total == 0:
        return 0.0
    ref = np.maximum(np.asarray(reference, dtype=float), EPS)
    cur = np.maximum(counts / total, EPS)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
