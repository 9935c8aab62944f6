"""Compiled inference at publish time: export a fitted pipeline to ONNX and check parity.

skl2onnx converts the pipeline to a graph with one input per feature (numeric double, categorical
string, shape [None, 1]) and one output, ``probabilities`` (double, class order of the pipeline).
The graph repeats sklearn's arithmetic: numeric NaN -> fitted medians in the graph (IsNaN/Where);
missing categories -> the imputer's fill value *before* the graph (``OnnxModel.predict_proba``;
string tensors hold no NaN); unseen categories -> all-zero one-hot; StandardScaler as Sub/Div in
double. Forests and hist gradient boosting use our converter (``onnx_converters``) to
ai.onnx.ml TreeEnsemble (opset 5) with double thresholds, leaves and output (skl2onnx's own give
float32 probabilities, or fail for boosting): forests see double(float32(x)) like sklearn's
trees, boosting float64, and leaves are summed in sklearn's order (binary and multiclass;
labels str or int).

Measured max |Δp| vs sklearn (breast_cancer; loans with missing values and unseen categories):
random forest 0 (bit-identical), hist gradient boosting <= 2.3e-16, logistic regression
<= 2.3e-16. ``TOLERANCE`` = 1e-9 leaves a wide margin; labels must be identical.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from sparc_ray.data.loading import columns_from_frame, normalize_features
from sparc_ray.inference.onnx_model import META_KEY, OUTPUT, OnnxModel
from sparc_ray.registry.artifacts import sha256_bytes
from sparc_ray.registry.layout import ONNX_FILE
from sparc_ray.training.estimator import SPARCClassificationModel
from sparc_ray.training.onnx_converters import convertible_pipeline, register_converters

TOLERANCE = 1e-9  # max |Δprobability| the parity check accepts (labels must be equal too)
OPSET = 21  # default domain; ai.onnx.ml is 3, or 5 when the graph holds a TreeEnsemble
_UNSEEN = "\x00sparc-unseen-category"
REPORT_KEYS: tuple[str, ...] = ("status", "reason", "labels_equal", "max_abs_diff", "tolerance")
REPORT_KEYS += ("rows_checked", "opset", "versions")


def _finalize(model: Any, feature_names: list[str]) -> None:
    """Restore feature names on inputs (skl2onnx sanitizes them), import ai.onnx.ml 5 for
    TreeEnsemble, keep only the ``probabilities`` output and what it depends on."""
    graph, needed, nodes = model.graph, {OUTPUT}, []
    rename = {i.name: n for i, n in zip(graph.input, feature_names, strict=True) if i.name != n}
    for value in graph.input:
        value.name = rename.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    outputs = [o for o in graph.output if o.name == OUTPUT]
    inits = [i for i in graph.initializer if i.name in needed]
    for field, items in (("node", nodes[::-1]), ("output", outputs), ("initializer", inits)):
        del getattr(graph, field)[:]
        getattr(graph, field).extend(items)
    if any(node.op_type == "TreeEnsemble" for node in graph.node):
        for opset in model.opset_import:
            opset.version = 5 if opset.domain == "ai.onnx.ml" else opset.version


def _to_onnx(model: SPARCClassificationModel) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    register_converters()
    pipe, fill = convertible_pipeline(model._require_fitted())
    kinds = {s.name: s.kind for s in model.schema}
    tensor = {"numeric": DoubleTensorType([None, 1]), "categorical": StringTensorType([None, 1])}
    types = [(n, tensor[kinds[n]]) for n in model.feature_names]
    target = {"": OPSET, "ai.onnx.ml": 3}
    options = {id(pipe.steps[-1][1]): {"zipmap": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = convert_sklearn(pipe, initial_types=types, target_opset=target, options=options)
    _finalize(onx, model.feature_names)
    meta = {"classes": model.classes, "categorical_fill": fill}
    onnx.helper.set_model_props(onx, {META_KEY: json.dumps(meta)})
    onnx.checker.check_model(onx)
    return onx.SerializeToString()


def _probe_frame(X: pd.DataFrame, kinds: list[str]) -> pd.DataFrame:
    """Holdout rows plus rows with missing values and unseen categories (serving sees both)."""
    X = normalize_features(X).reset_index(drop=True)
    base = X.head(max(len(X.columns), 5))
    missing, unseen, empty = base.copy(), base.copy(), base.head(1).copy()
    for i, name in enumerate(X.columns):  # every feature missing in some row
        missing.loc[i % len(missing), name] = np.nan
    for name, kind in zip(X.columns, kinds, strict=True):
        unseen[name] = _UNSEEN if kind == "categorical" else unseen[name]
    empty.loc[:, :] = np.nan
    return pd.concat([X, missing, unseen, empty], ignore_index=True)


def export_onnx(
    model: SPARCClassificationModel, X_check: pd.DataFrame
) -> tuple[bytes | None, dict]:
    """Convert ``model`` to ONNX, then check parity with sklearn on ``X_check`` plus probe rows
    (missing values, unseen categories): identical argmax and max |Δp| <= ``TOLERANCE``.

    Returns ``(onnx_bytes, report)``, or ``(None, report)`` with ``status="fallback"`` and the
    reason; never raises for an unconvertible model. ``report`` is JSON-able (metadata "onnx"),
    and on success names the file (``model.onnx``) and its sha256.
    """
    import onnx
    import skl2onnx

    report: dict[str, Any] = dict.fromkeys(REPORT_KEYS)
    versions = {"skl2onnx": skl2onnx.__version__, "onnxruntime": ort.__version__}
    report.update(status="fallback", tolerance=TOLERANCE, rows_checked=0)
    report["versions"] = {**versions, "onnx": onnx.__version__}
    names, stage = model.feature_names, "conversion"
    try:
        data = _to_onnx(model)
        report["opset"], stage = OPSET, "parity check"
        if len(X_check) == 0:
            raise ValueError("no holdout rows")
        kinds = [next(s.kind for s in model.schema if s.name == n) for n in names]
        probe = _probe_frame(X_check[names], kinds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.asarray(model.predict_proba(probe), dtype=np.float64)
        scorer = OnnxModel.from_bytes(data, sha256_bytes(data), names, kinds, model.classes)
        got = scorer.predict_proba(columns_from_frame(probe, names, kinds))
        if got.shape != want.shape:
            raise ValueError(f"ONNX output shape {got.shape} != sklearn's {want.shape}")
    except Exception as exc:  # unconvertible or failing model: the caller serves sklearn
        report["reason"] = f"{stage} failed: {type(exc).__name__}: {exc}"[:500]
        return None, report
    diff = float(np.max(np.abs(got - want)))
    labels_equal = bool(np.array_equal(got.argmax(axis=1), want.argmax(axis=1)))
    report.update(rows_checked=len(probe), labels_equal=labels_equal)
    report["max_abs_diff"] = diff if np.isfinite(diff) else None
    if not (labels_equal and diff <= TOLERANCE):
        report["reason"] = f"parity: labels_equal={labels_equal}, max |Δp|={diff:.3g} > {TOLERANCE}"
        return None, report
    report.update(status="ok", file=ONNX_FILE, sha256=sha256_bytes(data))
    return data, report
