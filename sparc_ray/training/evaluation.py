"""Holdout evaluation and acceptance gates."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from sparc_ray.inference.labels import labels_from_proba


class Classifier(Protocol):
    classes: list[Any]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray: ...


def evaluate(model: Classifier, X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """Accuracy, weighted precision / recall / F1, ROC-AUC (where defined), confusion matrix."""
    proba = model.predict_proba(X)
    return metrics_from_proba(np.asarray(y, dtype=object), proba, model.classes)


def metrics_from_proba(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    # Plain (not object) arrays so scikit-learn recognises numeric labels as classes.
    pred = labels_from_proba(proba, classes)
    y = np.asarray(list(y))
    labels = list(classes)
    out: dict[str, Any] = {
        "n_rows": len(y),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, average="weighted", zero_division=0)),
        "recall": float(skm.recall_score(y, pred, average="weighted", zero_division=0)),
        "f1": float(skm.f1_score(y, pred, average="weighted", zero_division=0)),
        "roc_auc": None,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "labels": [str(c) for c in labels],
    }
    present = set(y.tolist())
    if len(present) >= 2 and present <= set(labels):
        if len(labels) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y == labels[1], proba[:, 1]))
        elif len(present) == len(labels):
            out["roc_auc"] = float(
                skm.roc_auc_score(y, proba, multi_class="ovr", average="weighted", labels=labels)
            )
    return out


def apply_gates(holdout: dict[str, Any], thresholds: dict[str, float]) -> dict[str, Any]:
    """Compare holdout metrics to minimum thresholds; a missing metric fails its gate."""
    results = {}
    for name, minimum in thresholds.items():
        value = holdout.get(name)
        results[name] = {
            "value": value,
            "threshold": float(minimum),
            "passed": value is not None and value >= minimum,
        }
    failed = [n for n, r in results.items() if not r["passed"]]
    return {
        "thresholds": dict(thresholds),
        "results": results,
        "passed": not failed,
        "failed": failed,
    }
