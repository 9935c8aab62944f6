"""Drift report: what the service captured against what the version was trained on, as one
self-contained HTML page (plots embedded as PNG), readable offline.

    sparc-ray report drift --store model_store --name loans [--since 24h] --out report.html

Per feature: PSI of the captured rows against the version's reference buckets (the training
rows' deciles / categories, ``sparc_ray.monitoring.drift``), and a two-sample chi-square test of
homogeneity between the training rows and the captured rows over the same buckets (the
reference holds bucket shares of ``train_rows`` rows, so both samples are counts). Also the
predicted-class mix, and accuracy where ``/feedback`` labels were captured. With the public key,
the mean |contribution| of each feature over the captured rows (``inference.explain``, the signed
version's explainer), so a drifting feature that matters stands out from one that does not.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sparc_ray.data.captured import parse_since, read_labels, read_predictions, version_metadata
from sparc_ray.monitoring.drift import categorical_counts, numeric_counts, psi
from sparc_ray.registry.layout import ALIAS, capture_root
from sparc_ray.registry.metadata import DriftReference
from sparc_ray.registry.store import ModelRegistry, RegistryError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)
TOP_PLOTS = 6  # features plotted, most drifted first
EXPLAIN_ROWS = 5000  # captured rows explained for the report (a sample when there are more)


@dataclass
class FeatureDrift:
    name: str
    kind: str
    psi: float
    p_value: float
    buckets: list[str]
    reference: np.ndarray  # shares
    current: np.ndarray  # shares


def _chi2_p(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    from scipy.stats import chi2_contingency

    table = np.vstack([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table)[1])


def feature_drift(
    rows: pd.DataFrame, reference: DriftReference, train_rows: int
) -> list[FeatureDrift]:
    """One ``FeatureDrift`` per feature, most drifted (PSI) first."""
    out = []
    for name, ref in reference.features.items():
        if name not in rows:  # the capture has no such column: nothing to compare
            logger.warning("drift report: feature %r is not in the captured rows", name)
            continue
        if ref.kind == "numeric":
            edges = np.asarray(ref.edges, float)
            counts = numeric_counts(rows[name].to_numpy(dtype=float, na_value=np.nan), edges)
            bounds = [f"{e:.3g}" for e in edges]
            buckets = [f"<{bounds[0]}" if bounds else "all"]
            buckets += [f"{a}-{b}" for a, b in itertools.pairwise(bounds)]
            buckets += ([f">={bounds[-1]}"] if bounds else []) + ["missing"]
        else:
            counts = categorical_counts(rows[name].to_numpy(dtype=object), ref.categories)
            buckets = [*ref.categories, "other", "missing"]
        shares = np.asarray(ref.probs, float)
        out.append(
            FeatureDrift(
                name,
                ref.kind,
                psi(shares, counts),
                _chi2_p(np.round(shares * train_rows), counts),
                buckets,
                shares,
                counts / max(counts.sum(), 1),
            )
        )
    return sorted(out, key=lambda f: -f.psi)


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _bars(title: str, labels: list[str], reference: np.ndarray, current: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, reference, 0.4, label="training")
    ax.bar(x + 0.2, current, 0.4, label="captured")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return _png(fig)


def mean_contributions(
    store: str, name: str, version: str, public_key: bytes | None, rows: pd.DataFrame
) -> tuple[dict[str, float] | None, str | None]:
    """Mean |contribution| per feature over (a sample of) the captured rows, or why not."""
    if public_key is None:
        return None, "no public key: explanations load signed versions only"
    from sparc_ray.inference.explain import ExplanationError, load_explainer

    try:
        explainer = load_explainer(ModelRegistry(store), name, version, public_key)
    except ExplanationError as exc:
        return None, str(exc)
    features = list(explainer.feature_names)
    if missing := [f for f in features if f not in rows.columns]:
        return None, f"the captured rows lack {', '.join(missing)} (capture_exclude_features)"
    sample = rows.sample(EXPLAIN_ROWS, random_state=0) if len(rows) > EXPLAIN_ROWS else rows
    return explainer.explain(sample[features]).mean_abs(), None


def _verdict(value: float) -> str:
    return "significant" if value > 0.25 else "moderate" if value > 0.1 else "stable"


def build_report(
    store: str,
    name: str,
    since: float | None = None,
    version: str | None = None,
    public_key: bytes | None = None,
) -> dict[str, Any]:
    """The report's figures (also what the HTML shows); the version's metadata is verified
    with ``public_key`` (raw Ed25519) when one is given."""
    meta = version_metadata(store, name, version or ALIAS, public_key)
    version = meta.version
    if meta.reference is None:
        raise RegistryError(f"{name}/{version} has no reference distributions to compare with")
    root = capture_root(store, name)
    rows = read_predictions(root, since, version)
    if rows.empty:
        raise RegistryError(f"no captured rows of {name}/{version} in {root}")
    reference = meta.reference
    train_rows = (meta.training_data and meta.training_data.train_rows) or 1000
    features = feature_drift(rows, reference, train_rows)
    classes = [str(c) for c in reference.predictions.classes]
    mix = rows["prediction"].astype(str).value_counts(normalize=True)
    current_mix = np.array([mix.get(c, 0.0) for c in classes])
    labels = read_labels(root)
    joined = rows.merge(labels[["prediction_id", "row", "label"]], on=["prediction_id", "row"])
    holdout = meta.metrics and meta.metrics.holdout
    contributions, why_not = mean_contributions(store, name, version, public_key, rows)
    return {
        "model": name,
        "version": version,
        "rows": len(rows),
        "first": float(rows["timestamp"].min()),
        "last": float(rows["timestamp"].max()),
        "features": features,
        "predictions": {
            "classes": classes,
            "reference": np.asarray(reference.predictions.probs, float),
            "current": current_mix,
            "psi": psi(reference.predictions.probs, current_mix * len(rows)),
        },
        "labelled": len(joined),
        "accuracy": float((joined["prediction"] == joined["label"]).mean())
        if len(joined)
        else None,
        "holdout_accuracy": holdout.accuracy if holdout else None,
        "contributions": contributions,  # feature -> mean |contribution| (None: see the note)
        "contributions_note": why_not,
        "contributions_space": meta.explanations.space if meta.explanations else None,
    }


def render_html(report: dict[str, Any]) -> str:
    def when(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    esc = html.escape
    weights = report["contributions"] or {}
    rows = "".join(
        f"<tr class='{_verdict(f.psi)}'><td>{esc(f.name)}</td><td>{f.kind}</td>"
        f"<td>{f.psi:.3f}</td><td>{_verdict(f.psi)}</td><td>{f.p_value:.3g}</td>"
        f"<td class='weight'>{f'{weights[f.name]:.4g}' if f.name in weights else '-'}</td></tr>"
        for f in report["features"]
    )
    weight_note = (
        f"mean |contribution|: how much the feature moved this version's predictions of the "
        f"captured rows ({esc(report['contributions_space'] or '')})"
        if weights
        else f"mean |contribution| not shown: {esc(report['contributions_note'] or '')}"
    )
    plots = "".join(
        f"<h3>{esc(f.name)} (PSI {f.psi:.3f})</h3><img alt='{esc(f.name)}' "
        f"src='data:image/png;base64,{_bars(f.name, f.buckets, f.reference, f.current)}'>"
        for f in report["features"][:TOP_PLOTS]
    )
    p = report["predictions"]
    mix = _bars("predicted classes", p["classes"], p["reference"], p["current"])
    acc = report["accuracy"]
    accuracy = (
        f"{acc:.3f} over {report['labelled']:,} labelled rows (holdout at training: "
        f"{report['holdout_accuracy']:.3f})"
        if acc is not None and report["holdout_accuracy"] is not None
        else f"{acc:.3f} over {report['labelled']:,} labelled rows"
        if acc is not None
        else "no labels captured yet"
    )
    top = report["features"][0] if report["features"] else None
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift report: {esc(report["model"])} {esc(report["version"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1000px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.significant {{ background: #f8d0d0; }} tr.moderate {{ background: #fbecc5; }}
</style></head><body>
<h1>Drift report: {esc(report["model"])} / {esc(report["version"])}</h1>
<p id="summary">{report["rows"]:,} captured rows from {when(report["first"])} to
{when(report["last"])}. Most drifted feature:
<b id="top-feature">{esc(top.name) if top else "-"}</b> (PSI {top.psi if top else 0:.3f}).
Predicted-class mix PSI {p["psi"]:.3f}. Accuracy: {accuracy}.</p>
<p>PSI &lt; 0.1 stable, 0.1-0.25 moderate, &gt; 0.25 significant. p: two-sample chi-square
test (training rows vs captured rows, same buckets). <span id="weights">{weight_note}</span>.</p>
<table id="features"><tr><th>feature</th><th>kind</th><th>PSI</th><th>verdict</th>
<th>p</th><th>mean |contribution|</th></tr>{rows}</table>
<h2>Predicted classes</h2><img alt="predicted classes" src="data:image/png;base64,{mix}">
<h2>Most drifted features</h2>{plots}
</body></html>
"""


def write_report(
    store: str,
    name: str,
    out: str,
    since: str | None = None,
    version: str | None = None,
    public_key: bytes | None = None,
) -> dict[str, Any]:
    report = build_report(store, name, parse_since(since), version, public_key)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(render_html(report))
    return report
