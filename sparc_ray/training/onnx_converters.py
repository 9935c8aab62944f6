"""Our skl2onnx converters, for an exact ONNX graph (``sparc_ray.training.onnx_export``):
stand-ins for the numeric imputer (NaN -> fitted statistics, in double) and for forests and
hist gradient boosting (an ``ai.onnx.ml`` TreeEnsemble with double thresholds and leaves, summed
in sklearn's order)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline


def register_converters() -> None:
    """Make skl2onnx convert the stand-ins with the converters below."""
    from skl2onnx import update_registered_converter

    update_registered_converter(NumericFill, "SparcNumericFill", _shape_fill, _convert_fill)
    allowed = {"zipmap": [True, False], "nocl": [True, False]}
    update_registered_converter(Trees, "SparcTrees", _shape_trees, _convert_trees, options=allowed)


class NumericFill(TransformerMixin, BaseEstimator):
    """Stand-in for the numeric SimpleImputer: NaN -> fitted statistics, in double."""

    def __init__(self, statistics: np.ndarray | None = None) -> None:
        self.statistics = statistics


class Trees(ClassifierMixin, BaseEstimator):
    """Stand-in for a fitted forest / boosting classifier, converted by ``_convert_trees``."""

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator
        self.classes_ = getattr(estimator, "classes_", None)


def _shape_fill(operator: Any) -> None:
    operator.outputs[0].type = type(operator.inputs[0].type)(operator.inputs[0].type.shape)


def _shape_trees(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = Int64TensorType([n])  # class index; pruned after conversion
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

    keys: tuple[str, ...] = ("tree_roots", "nodes_featureids", "nodes_splits", "nodes_truenodeids")
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
        parts: tuple[Any, ...] = ([n_nodes], feature[inner], threshold[inner], pos[lc], leaf[lc])
        parts += (pos[rc], leaf[rc])
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
    attrs = _ensemble_attrs(*_tree_list(est))  # ml opset 3 is skl2onnx's ceiling; raised to 5
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


def convertible_pipeline(pipe: Pipeline) -> tuple[Pipeline, str | None]:
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
            trans = Pipeline([("fill", NumericFill(imp.statistics_)), *trans.steps[1:]])
        elif name == "cat" and imp.strategy == "constant" and isinstance(imp.fill_value, str):
            double = ("double", CastTransformer(dtype=np.float64))  # one-hot is float otherwise
            fill, trans = imp.fill_value, Pipeline([*trans.steps[1:], double])
        else:
            raise NotImplementedError(f"cannot convert the {name!r} imputer exactly: {imp}")
        transformers.append((name, trans, cols))
    pre = copy.copy(pre)
    pre.transformers_ = transformers
    if isinstance(clf, RandomForestClassifier | HistGradientBoostingClassifier):
        clf = Trees(clf)
    return Pipeline([("preprocess", pre), ("classifier", clf)]), fill
