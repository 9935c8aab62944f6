"""Compiled inference at publish time: export a fitted pipeline to ONNX and check parity.

skl2onnx converts the pipeline to a graph with one input per feature (numeric double, categorical
string, shape [None, 1]) and one output, ``probabilities`` (double, class order of the pipeline).
The graph repeats sklearn's arithmetic: numeric NaN -> fitted medians in the graph (IsNaN/Where);
missing categories -> the imputer's fill value *before* the graph (``OnnxModel.predict_proba``;
string tensors hold no NaN); unseen categories -> all-zero one-hot; StandardScaler as Sub/Div in
double. Forests and hist gradient boosting use our converter to ai.onnx.ml TreeEnsemble (opset 5)
with double thresholds, leaves and output (skl2onnx's own give float32 probabilities, or fail for
boosting): forests see double(float32(x)) like sklearn's trees, boosting float64, and leaves are
summed in sklearn's order (binary and multiclass; labels str or int).

Measured max |Δp| vs sklearn (breast_cancer; loans with missing values and unseen categories):
random forest 0 (bit-identical), hist gradient boosting <= 2.3e-16, logistic regression
<= 2.3e-16. ``TOLERANCE`` = 1e-9 leaves a wide margin; labels must be identical.
"""

from __future__ import annotations

import copy
import json
import warnings
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from sparc_ray.data.loading import normalize_features
from sparc_ray.inference.onnx_model import META_KEY, OUTPUT, OnnxModel, columns_from_frame
from sparc_ray.registry.artifacts import ONNX_FILE, sha256_bytes
from sparc_ray.training.estimator import SPARCClassificationModel

TOLERANCE = 1e-9  # max |Δprobability| the parity check accepts (labels must be equal too)
OPSET = 21  # default domain; ai.onnx.ml is 3, or 5 when the graph holds a TreeEnsemble
_UNSEEN = "\x00sparc-unseen-category"
REPORT_KEYS = ("status", "reason", "labels_equal", "max_abs_diff", "tolerance", "rows_checked")
REPORT_KEYS += ("opset", "versions")


class _NumericFill(TransformerMixin, BaseEstimator):
    """Stand-in for the numeric SimpleImputer: NaN -> fitted statistics, in double."""

    def __init__(self, statistics: np.ndarray | None = None) -> None:
        self.statistics = statistics


class _Trees(ClassifierMixin, BaseEstimator):
    """Stand-in for a fitted forest / boosting classifier, converted by ``_convert_trees``."""

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator
        self.classes_ = getattr(estimator, "classes_", None)


def _shape_fill(operator: Any) -> None:
    operator.outputs[0].type = type(operator.inputs[0].type)(operator.inputs[0].type.shape)


def _shape_trees(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = Int64TensorType([n])  # class index; pruned by _finalize
    operator.outputs[1].type = DoubleTensorType([n, len(operator.raw_operator.classes_)])


def _add(scope: Any, container: Any, op_type: str, inputs: list, outputs: list, **kw: Any) -> None:
    container.add_node(op_type, inputs, outputs, name=scope.get_unique_operator_name(op_type), **kw)


def _convert_fill(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    stats = np.asarray(operator.raw_operator.statistics, dtype=np.float64)
    med, nan = scope.get_unique_variable_name("median"), scope.get_unique_variable_name("isnan")
    x = operator.inputs[0].full_name
    container.add_initializer(med, TensorProto.DOUBLE, [len(stats)], stats.tolist())
    _add(scope, container, "IsNaN", [x], [nan])
    _add(scope, container, "Where", [nan, med, x], [operator.outputs[0].full_name])


def _tree_list(est: Any) -> tuple[list[tuple], int]:
    """(target, feature, threshold, left, right, value) per tree, in sklearn's summation order."""
    if isinstance(est, RandomForestClassifier):  # a leaf has one target: one tree copy per class
        n_classes = len(est.classes_)
        targets = [1] if n_classes == 2 else range(n_classes)  # binary: p0 = 1 - p1
        trees = [
            (i, t.feature, t.threshold, t.children_left, t.children_right, t.value[:, 0, c])
            for i, c in enumerate(targets)
            for t in (e.tree_ for e in est.estimators_)
        ]
        return trees, len(targets)
    if getattr(est, "_preprocessor", None) is not None:
        raise NotImplementedError("native categorical features are not supported")
    k_out = int(est.n_trees_per_iteration_)
    base = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()
    trees = [(k, [0], [0.0], [-1], [-1], base[k : k + 1]) for k in range(k_out)]  # baseline first
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            n = predictor.nodes
            if n["is_categorical"].any():
                raise NotImplementedError("native categorical splits are not supported")
            left, right = (
                np.where(n["is_leaf"], -1, n[s].astype(np.int64)) for s in ("left", "right")
            )
            trees.append((k, n["feature_idx"], n["num_threshold"], left, right, n["value"]))
    return trees, k_out


def _ensemble_attrs(trees: list[tuple], n_targets: int) -> dict[str, Any]:
    """Attributes of one ``ai.onnx.ml`` TreeEnsemble (opset 5): BRANCH_LEQ, SUM, double."""
    from onnx import numpy_helper

    keys = ("tree_roots", "nodes_featureids", "nodes_splits", "nodes_truenodeids")
    keys += ("nodes_trueleafs", "nodes_falsenodeids", "nodes_falseleafs", "leaf_targetids")
    cols: dict[str, list] = {k: [] for k in (*keys, "leaf_weights")}
    n_nodes = n_leaves = 0
    for target, *arrays in trees:
        feature, threshold, left, right, value = map(np.asarray, arrays)
        if left[0] < 0:  # a lone leaf: a root split whose two branches both reach it
            feature, threshold, value = np.zeros(2, int), np.zeros(2), np.r_[0.0, value[0]]
            left = right = np.array([1, -1])
        leaf = left < 0
        inner, leaves = np.flatnonzero(~leaf), np.flatnonzero(leaf)
        pos = np.empty(len(leaf), np.int64)
        pos[inner], pos[leaves] = n_nodes + np.arange(len(inner)), n_leaves + np.arange(len(leaves))
        lc, rc = left[inner], right[inner]
        parts = ([n_nodes], feature[inner], threshold[inner], pos[lc], leaf[lc], pos[rc], leaf[rc])
        parts += (np.full(len(leaves), target), value[leaves])
        for key, part in zip(cols, parts, strict=True):
            cols[key].append(np.asarray(part))
        n_nodes, n_leaves = n_nodes + len(inner), n_leaves + len(leaves)
    attrs: dict[str, Any] = {k: np.concatenate(v) for k, v in cols.items()}
    for k, v in attrs.items():  # double tensors for thresholds and leaf values, else int lists
        double = k in ("nodes_splits", "leaf_weights")
        attrs[k] = numpy_helper.from_array(v.astype(float)) if double else v.astype(int).tolist()
    attrs["nodes_modes"] = numpy_helper.from_array(np.zeros(n_nodes, np.uint8))  # BRANCH_LEQ
    # SUM: a forest's mean is a separate Div, as sklearn does it
    return {**attrs, "n_targets": n_targets, "aggregate_function": 1, "post_transform": 0}


def _convert_trees(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    est, var = operator.raw_operator.estimator, scope.get_unique_variable_name
    x, raw, proba = operator.inputs[0].full_name, var("raw"), operator.outputs[1].full_name
    forest = isinstance(est, RandomForestClassifier)
    if forest:  # sklearn's trees compare float32(x) with double thresholds
        x32, x64 = var("x32"), var("x64")
        _add(scope, container, "Cast", [x], [x32], to=TensorProto.FLOAT)
        _add(scope, container, "Cast", [x32], [x64], to=TensorProto.DOUBLE)
        x = x64
    attrs = _ensemble_attrs(*_tree_list(est))  # ml opset 3 is skl2onnx's ceiling; _finalize -> 5
    _add(
        scope, container, "TreeEnsemble", [x], [raw], op_domain="ai.onnx.ml", op_version=3, **attrs
    )
    binary = attrs["n_targets"] == 1
    p1 = var("p1") if binary else proba
    if forest:
        n = var("n_trees")
        container.add_initializer(n, TensorProto.DOUBLE, [], [float(len(est.estimators_))])
        _add(scope, container, "Div", [raw, n], [p1])
    elif binary:
        _add(scope, container, "Sigmoid", [raw], [p1])
    else:
        _add(scope, container, "Softmax", [raw], [proba], axis=1)
    if binary:  # p0 = 1 - p1 (a forest's leaf fractions sum to 1; boosting's expit)
        p0, one = var("p0"), var("one")
        container.add_initializer(one, TensorProto.DOUBLE, [], [1.0])
        _add(scope, container, "Sub", [one, p1], [p0])
        _add(scope, container, "Concat", [p0, p1], [proba], axis=1)
    _add(scope, container, "ArgMax", [proba], [operator.outputs[0].full_name], axis=1, keepdims=0)


def _convertible_pipeline(pipe: Pipeline) -> tuple[Pipeline, str | None]:
    """The fitted pipeline with our stand-ins swapped in, and the categorical fill value."""
    from skl2onnx.sklapi import CastTransformer

    pre, clf = pipe.named_steps["preprocess"], pipe.named_steps["classifier"]
    fill, transformers = None, []
    for name, trans, cols in pre.transformers_:
        if len(cols) == 0 or (name == "remainder" and trans == "drop"):
            continue
        imp = trans.steps[0][1] if isinstance(trans, Pipeline) else None
        if not isinstance(imp, SimpleImputer) or imp.add_indicator:
            raise NotImplementedError(f"unexpected preprocessing for {name!r}: {trans}")
        if name == "num" and not np.isnan(imp.statistics_).any():
            trans = Pipeline([("fill", _NumericFill(imp.statistics_)), *trans.steps[1:]])
        elif name == "cat" and imp.strategy == "constant" and isinstance(imp.fill_value, str):
            double = ("double", CastTransformer(dtype=np.float64))  # one-hot is float otherwise
            fill, trans = imp.fill_value, Pipeline([*trans.steps[1:], double])
        else:
            raise NotImplementedError(f"cannot convert the {name!r} imputer exactly: {imp}")
        transformers.append((name, trans, cols))
    pre = copy.copy(pre)
    pre.transformers_ = transformers
    if isinstance(clf, RandomForestClassifier | HistGradientBoostingClassifier):
        clf = _Trees(clf)
    return Pipeline([("preprocess", pre), ("classifier", clf)]), fill


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
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    update_registered_converter(_NumericFill, "SparcNumericFill", _shape_fill, _convert_fill)
    allowed = {"zipmap": [True, False], "nocl": [True, False]}
    update_registered_converter(_Trees, "SparcTrees", _shape_trees, _convert_trees, options=allowed)
    pipe, fill = _convertible_pipeline(model._require_fitted())
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
