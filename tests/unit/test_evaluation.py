"""Holdout metrics and gates."""

import numpy as np
import pytest

from sparc_ray.training.config import DEFAULT_GATES, GATE_METRICS
from sparc_ray.training.evaluation import apply_gates, metrics_from_proba


def test_binary_metrics_and_auc():
    y = np.array(["a", "b", "b", "a"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    m = metrics_from_proba(y, proba, ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert m["roc_auc"] == 1.0  # every b scores above every a on P(b)


def test_every_gate_metric_the_config_accepts_is_a_holdout_metric():
    m = metrics_from_proba(np.array(["a", "b"], dtype=object), np.eye(2), ["a", "b"])
    assert all(isinstance(m[name], float) for name in GATE_METRICS)
    assert set(DEFAULT_GATES) <= set(GATE_METRICS)


def test_multiclass_auc_and_undefined_auc():
    y = np.array([0, 1, 2, 2], dtype=object)
    proba = np.eye(3)[[0, 1, 2, 1]]
    m = metrics_from_proba(y, proba, [0, 1, 2])
    assert m["accuracy"] == 0.75 and m["roc_auc"] is not None
    one_class = metrics_from_proba(np.array([1, 1], dtype=object), np.eye(3)[[1, 1]], [0, 1, 2])
    assert one_class["roc_auc"] is None


def test_gates_pass_fail_and_missing_metric():
    g = apply_gates({"accuracy": 0.9, "precision": 0.64, "recall": 0.7}, DEFAULT_GATES)
    assert not g["passed"] and g["failed"] == ["precision"]
    assert g["results"]["accuracy"] == {"value": 0.9, "threshold": 0.7, "passed": True}
    assert apply_gates({"accuracy": 0.9}, {"roc_auc": 0.8})["failed"] == ["roc_auc"]
    assert apply_gates({"accuracy": 0.7}, {"accuracy": 0.7})["passed"]


@pytest.mark.parametrize("value", [0.0, 0.6999])
def test_gate_below_threshold_fails(value):
    assert not apply_gates({"accuracy": value}, {"accuracy": 0.7})["passed"]
