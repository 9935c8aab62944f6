"""The publish-time check of a version's explanations: ``metadata.json["explanations"]``.

On the holdout rows (at most ``MAX_ROWS``):

* additivity: base value + sum(contributions) equals the model's output in the stated space
  (``sparc_ray.inference.explain``) within ``TOLERANCE`` on every row;
* agreement with the importance the model computed when it was fitted
  (``get_feature_importance()``, the report's chart: permutation importance for hist gradient
  boosting, impurity importance for forests, mean |coefficient| for logistic regression). The
  ``m`` features ranked highest by mean |contribution| (``m = max(3, ceil(F / 3))``; all of
  them when ``F <= 3``, which checks nothing) must hold at least ``MIN_CAPTURED`` of the
  importance that the ``m`` most important features hold. A rank correlation over all
  features or an exact top-3 overlap fails sound models: correlated features trade places,
  and permutation importance on an overfitted booster is zero for most features.

A version whose check fails still publishes; serving does not explain it (``ok`` false, with
the ``reason``). The check never raises: an explainer that cannot be built or run fails it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sparc_ray.inference.explain import Explainer

if TYPE_CHECKING:
    from sparc_ray.training.estimator import SPARCClassificationModel

TOLERANCE = 1e-6
MIN_CAPTURED = 0.75
MAX_ROWS = 500  # enough for additivity and the ranking; every training job pays for them
TOP_RECORDED = 10  # features listed in top_features / mean_abs_contribution
RULE = (
    "the top max(3, ceil(F/3)) features by mean |contribution| hold >= 0.75 of the importance "
    "of the top max(3, ceil(F/3)) features by feature_importance"
)


@dataclass(frozen=True)
class Agreement:
    """Top features by mean |contribution| against the model's feature importance."""

    compared: int  # m: how many top features are compared
    contribution_top_features: tuple[str, ...]
    importance_top_features: tuple[str, ...]
    captured: float  # importance of the contribution top m / importance of the importance top m
    required: float = MIN_CAPTURED

    @property
    def ok(self) -> bool:
        return self.captured >= self.required

    def to_metadata(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "compared": self.compared,
            "contribution_top_features": list(self.contribution_top_features),
            "importance_top_features": list(self.importance_top_features),
            "captured": self.captured,
            "required": self.required,
        }


@dataclass(frozen=True)
class ExplanationCheck:
    """The check's result; ``to_metadata()`` is what ``metadata.json`` records."""

    ok: bool
    space: str | None
    rows_checked: int
    max_additivity_error: float | None
    top_features: tuple[str, ...] = ()
    mean_abs_contribution: dict[str, float] = field(default_factory=dict)  # of top_features
    agreement: Agreement | None = None  # None: the model has no feature importance
    background: dict[str, Any] | None = None  # logistic regression's reference (the explainer's)
    reason: str | None = None  # why not ok

    def to_metadata(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "ok": self.ok,
            "space": self.space,
            "rows_checked": self.rows_checked,
            "tolerance": TOLERANCE,
            "max_additivity_error": self.max_additivity_error,
            "top_features": list(self.top_features),
            "mean_abs_contribution": dict(self.mean_abs_contribution),
            "agreement": self.agreement.to_metadata() if self.agreement else None,
        }
        if self.background is not None:
            entry["background"] = self.background
        if not self.ok:
            entry["reason"] = self.reason
        return entry


def agreement(mean_abs: dict[str, float], importance: dict[str, float]) -> Agreement:
    """``captured``: the importance held by the top ``m`` features by mean |contribution|, as
    a share of the importance held by the top ``m`` features by importance (1.0 when those
    hold none). Ties rank in the model's feature order."""
    names = list(mean_abs)
    m = len(names) if len(names) <= 3 else max(3, math.ceil(len(names) / 3))
    by_contribution = sorted(names, key=lambda f: -mean_abs[f])[:m]
    by_importance = sorted(names, key=lambda f: -importance.get(f, 0.0))[:m]
    best = sum(importance.get(f, 0.0) for f in by_importance)
    held = sum(importance.get(f, 0.0) for f in by_contribution)
    captured = held / best if best > 0 else 1.0
    return Agreement(m, tuple(by_contribution), tuple(by_importance), float(captured))


def check_explanations(
    model: SPARCClassificationModel,
    holdout: pd.DataFrame,
    background: pd.DataFrame | None = None,
    explainer: Explainer | None = None,
) -> ExplanationCheck:
    """Check ``model``'s explanations on ``holdout`` (``background``: the training rows, the
    reference of logistic regression). ``explainer``: the one to check (default: built from
    the model and ``background``)."""
    rows = holdout if len(holdout) <= MAX_ROWS else holdout.sample(MAX_ROWS, random_state=0)
    space: str | None = None
    try:
        explainer = explainer or Explainer.from_model(model, background)
        space = explainer.space
        explanation = explainer.explain(rows)
    except Exception as exc:  # any failure is a failed check: the version still publishes
        reason = f"explainer failed: {type(exc).__name__}: {exc}"
        return ExplanationCheck(False, space, 0, None, reason=reason)
    errors = explanation.additivity_error()
    worst = float(errors.max()) if len(errors) else 0.0
    mean_abs = explanation.mean_abs()
    top = tuple(sorted(mean_abs, key=lambda f: -mean_abs[f])[:TOP_RECORDED])
    importance = model.get_feature_importance()
    agreed = agreement(mean_abs, importance) if importance else None
    reasons = []
    if not len(errors):
        reasons.append("no holdout rows to check")
    if not np.isfinite(worst) or worst > TOLERANCE:
        reasons.append(f"additivity error {worst:.3g} > {TOLERANCE:g}")
    if agreed is not None and not agreed.ok:
        reasons.append(
            f"top features by mean |contribution| {list(agreed.contribution_top_features)} hold "
            f"{agreed.captured:.2f} < {agreed.required} of the importance of the top "
            f"{list(agreed.importance_top_features)}"
        )
    return ExplanationCheck(
        ok=not reasons,
        space=space,
        rows_checked=len(errors),
        max_additivity_error=worst if np.isfinite(worst) else None,
        top_features=top,
        mean_abs_contribution={f: mean_abs[f] for f in top},
        agreement=agreed,
        background=explainer.background_record(),
        reason="; ".join(reasons) or None,
    )
