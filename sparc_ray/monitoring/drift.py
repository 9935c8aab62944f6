"""Reference distributions (saved at training time) and population stability index (PSI).

Numeric features are binned at the training data's deciles; categorical features use the
training categories plus an ``__other__`` bucket; missing values get a ``__missing__`` bucket.
PSI = sum((p_cur - p_ref) * ln(p_cur / p_ref)) over buckets, with both sides floored at
``EPS`` so empty buckets stay finite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift,
> 0.25 significant shift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from sparc_ray.data.loading import FeatureSpec
from sparc_ray.registry.metadata import DriftReference

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


class DriftMonitor:
    """PSI of the last ``window_rows`` scored rows against a model's reference distributions.

    Bucket indices live in fixed-size ring buffers (memory is bounded by the window), and no
    score is given before ``min_rows`` rows have been seen, so a small sample cannot raise a
    false alarm.
    """

    def __init__(
        self,
        reference: DriftReference | Mapping[str, Any],
        window_rows: int = 2000,
        min_rows: int = 200,
    ):
        self.window, self.min_rows = int(window_rows), int(min_rows)
        if not isinstance(reference, DriftReference):  # as build_reference returns it
            reference = DriftReference.model_validate(reference)
        self.features = reference.features
        self.classes = reference.predictions.classes
        self.class_probs = reference.predictions.probs
        self._edges = {
            n: np.asarray(f.edges) for n, f in self.features.items() if f.kind == "numeric"
        }
        self._cat_index = {
            n: {c: i for i, c in enumerate(f.categories)}
            for n, f in self.features.items()
            if f.kind == "categorical"
        }
        self._buckets = {n: np.zeros(self.window, np.int32) for n in self.features}
        self._preds = np.zeros(self.window, np.int32)
        self.seen = 0

    def _bucket(self, name: str, values: np.ndarray) -> np.ndarray:
        if name in self._edges:
            values = values.astype(np.float64)
            edges = self._edges[name]
            idx = np.searchsorted(edges, values, side="right")
            return np.where(np.isnan(values), len(edges) + 1, idx)
        index = self._cat_index[name]
        other, missing = len(index), len(index) + 1
        return np.array(
            [missing if not isinstance(v, str) else index.get(v, other) for v in values], np.int32
        )

    def update(self, columns: dict[str, np.ndarray], predicted_index: np.ndarray) -> None:
        n = len(predicted_index)
        if n == 0:
            return
        pos = (self.seen + np.arange(n)) % self.window
        if n > self.window:  # only the newest rows fit
            pos, columns = pos[-self.window :], {k: v[-self.window :] for k, v in columns.items()}
            predicted_index = predicted_index[-self.window :]
        for name in self.features:
            if name in columns:
                self._buckets[name][pos] = self._bucket(name, columns[name])
        self._preds[pos] = predicted_index
        self.seen += n

    def scores(self) -> dict[str, Any] | None:
        """``{"features": {name: psi}, "predictions": psi, "rows": n}``, or None if too few."""
        filled = min(self.seen, self.window)
        if filled < self.min_rows:
            return None
        features = {}
        for name, ref in self.features.items():
            counts = np.bincount(self._buckets[name][:filled], minlength=len(ref.probs))
            features[name] = psi(ref.probs, counts.astype(float))
        pred_counts = np.bincount(self._preds[:filled], minlength=len(self.classes))
        return {
            "features": features,
            "predictions": psi(self.class_probs, pred_counts.astype(float)),
            "rows": filled,
        }
