"""Evaluation report: metrics JSON plus PNG charts (matplotlib's non-interactive Agg backend)."""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from sparc_ray.registry.layout import report_file


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_matrix_png(holdout: dict[str, Any]) -> bytes:
    cm = np.asarray(holdout["confusion_matrix"])
    labels = holdout["labels"]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 3, 1.1 * len(labels) + 2.5))
    im = ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title=f"Holdout confusion matrix (accuracy {holdout['accuracy']:.3f})",
    )
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black"
        )
    fig.colorbar(im, ax=ax)
    return _png(fig)


def curves_png(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> bytes:
    """ROC and precision-recall curves, one-vs-rest per class (positive class if binary)."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    shown = classes[1:] if len(classes) == 2 else classes
    for cls in shown:
        k = classes.index(cls)
        truth = y == cls
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, proba[:, k])
        prec, rec, _ = precision_recall_curve(truth, proba[:, k])
        roc_ax.plot(fpr, tpr, label=f"{cls} (AUC {auc(fpr, tpr):.3f})")
        pr_ax.plot(rec, prec, label=f"{cls} (AUC {auc(rec, prec):.3f})")
    roc_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def importance_png(importance: dict[str, float], top: int = 20) -> bytes:
    items = sorted(importance.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(items) + 1.5))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set(xlabel="relative importance", title=f"Feature importance (top {len(items)})")
    return _png(fig)


def trials_png(trials: list[dict[str, Any]], n_folds: int) -> bytes:
    """CV mean (± std) per trial; early-stopped trials in grey, the best one highlighted."""
    rows = sorted((t for t in trials if t["cv_mean"] is not None), key=lambda t: t["cv_mean"])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.8))
    best = rows[-1] if rows else None
    for i, t in enumerate(rows):
        color = "tab:orange" if t is best else ("lightgrey" if t["folds"] < n_folds else "tab:blue")
        ax.errorbar(t["cv_mean"], i, xerr=t["cv_std"] or 0, fmt="o", color=color)
    ax.set_yticks(range(len(rows)), [f"{t['label']} [{t['folds']}f]" for t in rows], fontsize=7)
    ax.set(
        xlabel="CV score (mean ± std)",
        title=f"CV score per trial (grey: stopped early before {n_folds} folds)",
    )
    return _png(fig)


def build_report(
    summary: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
    classes: list[Any],
    importance: dict[str, float] | None,
    trials: list[dict[str, Any]],
    n_folds: int,
) -> dict[str, bytes]:
    """Files for ``<version>/report/``: ``metrics.json`` and the charts."""
    files = {
        "metrics.json": json.dumps(summary, indent=2, default=str).encode(),
        "confusion_matrix.png": confusion_matrix_png(summary["holdout"]),
        "roc_pr_curves.png": curves_png(y, proba, classes),
        "cv_scores.png": trials_png(trials, n_folds),
    }
    if importance:
        files["feature_importance.png"] = importance_png(importance)
    return {report_file(name): data for name, data in files.items()}
