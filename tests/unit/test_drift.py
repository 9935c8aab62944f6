"""PSI drift scores against the reference saved at training time."""

import numpy as np
import pytest

from sparc_ray.data.loading import infer_schema, load_dataset, normalize_features
from sparc_ray.monitoring.drift import DriftMonitor, build_reference, psi


@pytest.fixture(scope="module")
def cancer():
    df, target = load_dataset("builtin:breast_cancer")
    X = normalize_features(df.drop(columns=target))
    y = df[target].to_numpy()
    return X, y, build_reference(X, infer_schema(X), y, ["benign", "malignant"])


def monitor_for(ref, X, y, window=1000):
    m = DriftMonitor(ref, window_rows=window, min_rows=200)
    m.update({c: X[c].to_numpy() for c in X}, (y == "malignant").astype(np.int32))
    return m


def sample(X, y, n, seed):
    idx = np.random.default_rng(seed).integers(0, len(X), n)
    return X.iloc[idx].reset_index(drop=True), y[idx]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_from_the_training_distribution_score_below_0_1(cancer, seed):
    X, y, ref = cancer
    scores = monitor_for(ref, *sample(X, y, 1000, seed)).scores()
    assert max(scores["features"].values()) < 0.1 and scores["predictions"] < 0.1


def test_two_sigma_shift_flags_only_that_feature(cancer):
    X, y, ref = cancer
    S, ys = sample(X, y, 1000, 3)
    S["mean radius"] = S["mean radius"] + 2 * X["mean radius"].std()
    scores = monitor_for(ref, S, ys).scores()["features"]
    assert scores["mean radius"] > 0.25
    assert max(v for k, v in scores.items() if k != "mean radius") < 0.1


def test_window_is_bounded_and_too_few_rows_give_no_score(cancer):
    X, _y, ref = cancer
    m = DriftMonitor(ref, window_rows=300, min_rows=200)
    m.update({c: X[c].to_numpy()[:100] for c in X}, np.zeros(100, np.int32))
    assert m.scores() is None
    shifted = X.copy()
    shifted["mean area"] = shifted["mean area"] * 10
    m.update({c: shifted[c].to_numpy() for c in X}, np.zeros(len(X), np.int32))
    assert m.scores()["rows"] == 300 and m._buckets["mean area"].shape == (300,)
    # the newest 300 rows are all shifted: the old ones fell out of the window
    assert m.scores()["features"]["mean area"] > 1


def test_categorical_drift_counts_unseen_and_missing(loans):
    X = normalize_features(loans.drop(columns="decision"))
    ref = build_reference(
        X, infer_schema(X), loans["decision"].to_numpy(), ["approved", "rejected", "review"]
    )
    emp = ref["features"]["employment"]
    assert emp["categories"] == ["retired", "salaried", "self-employed", "unemployed"]
    assert len(emp["probs"]) == 6 and emp["probs"][-1] == pytest.approx(20 / 600)
    m = DriftMonitor(ref, 500, 100)
    odd = X.head(300).copy()
    odd["employment"] = "astronaut"
    m.update({c: odd[c].to_numpy() for c in odd}, np.zeros(300, np.int32))
    assert m.scores()["features"]["employment"] > 1


def test_psi_basics():
    assert psi([0.5, 0.5], np.array([50.0, 50.0])) == 0
    assert psi([0.5, 0.5], np.array([90.0, 10.0])) > 0.25
    assert psi([0.5, 0.5], np.zeros(2)) == 0
