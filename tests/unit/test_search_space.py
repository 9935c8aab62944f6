"""Search-space expansion (no Ray cluster needed)."""

import pytest

from sparc_ray.training.search_space import (
    candidate_label,
    expand_candidates,
    order_candidates,
)

SPACE = {
    "random_forest": {"n_estimators": [50, 100], "max_depth": [None, 4], "random_state": 1},
    "logistic_regression": {"C": [0.1, 1.0]},
}


def test_grid_is_the_product_per_family_not_across_families():
    cands = expand_candidates(SPACE, "grid", 1)
    assert len(cands) == 4 + 2
    rf = [c["params"] for c in cands if c["model_type"] == "random_forest"]
    assert {"n_estimators": 50, "max_depth": None, "random_state": 1} in rf
    assert cands[0]["label"] == "random_forest n_estimators=50 max_depth=None random_state=1"
    assert len(expand_candidates(SPACE, "grid", 2)) == 12


def test_random_draws_within_bounds_and_is_seeded():
    space = {
        "logistic_regression": {"C": {"loguniform": [0.01, 10]}, "penalty": ["l2"]},
        "random_forest": {"min_samples_leaf": {"randint": [1, 3]}},
    }
    a = expand_candidates(space, "random", 20, seed=3)
    assert len(a) == 40 and a == expand_candidates(space, "random", 20, seed=3)
    cs = [c["params"]["C"] for c in a if c["model_type"] == "logistic_regression"]
    assert all(0.01 <= c <= 10 for c in cs) and len(set(cs)) == 20
    leaves = {c["params"]["min_samples_leaf"] for c in a if c["model_type"] == "random_forest"}
    assert leaves <= {1, 2, 3} and 3 in leaves  # inclusive upper bound


def test_distribution_in_grid_is_an_error():
    with pytest.raises(ValueError, match="need `sampler: random`"):
        expand_candidates({"logistic_regression": {"C": {"uniform": [0, 1]}}}, "grid", 1)


def test_the_costliest_start_first_and_ties_in_seeded_order():
    cands = expand_candidates(
        {**SPACE, "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}}, "grid", 1
    )
    ordered = order_candidates(cands, seed=1)
    assert ordered[0]["params"] == {"n_estimators": 100, "max_depth": None, "random_state": 1}
    assert ordered == order_candidates(cands, seed=1)
    assert sorted(c["label"] for c in ordered) == sorted(c["label"] for c in cands)
    ties = [[c["label"] for c in order_candidates(cands, s)[-5:]] for s in range(4)]
    assert {c[0] for c in ties} > {ties[0][0]}  # equal costs: the seed decides
    assert all(
        set(t) == {f"logistic_regression C={c:g}" for c in (0.01, 0.1, 1, 10, 100)} for t in ties
    )


def test_latest_experiment_matches_the_name_exactly(tmp_path):
    from sparc_ray.training.tuning import latest_experiment

    for d in ("loans-20261126-060000", "loans-20261126-070000", "loans-v2-20261126-080000"):
        (tmp_path / d).mkdir()
    assert latest_experiment(str(tmp_path), "loans") == f"{tmp_path}/loans-20261126-070000"
    assert latest_experiment(str(tmp_path), "other") is None


def test_a_label_reads_as_the_family_and_its_parameters():
    params = {"learning_rate": 0.123456, "max_iter": 200, "max_depth": None}
    label = candidate_label("hist_gradient_boosting", params)
    assert label == "hist_gradient_boosting learning_rate=0.1235 max_iter=200 max_depth=None"
    assert candidate_label("logistic_regression", {}) == "logistic_regression"
