"""The search on a real local Ray: folds run as Ray tasks, ASHA decides at its rungs and the
folds of the trials it stops do not run; the refit is a Ray task."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sparc_ray.training.config import CVConfig, SearchConfig
from sparc_ray.training.search_result import run_search
from sparc_ray.training.search_space import candidate_label
from sparc_ray.training.tuning import build_tuner, fold_milestones, refit, score_fold
from tests.integration.cluster import in_process_ray

N_FOLDS = 5
SPACE = {
    # Three good configurations, which cost more and so start first, and three hopeless ones
    # (C so small that every row gets the majority class): ASHA stops those at its first rung.
    "random_forest": {"n_estimators": [10, 20, 40]},
    "logistic_regression": {"C": [1e-7, 2e-7, 4e-7]},
}
LOW_C = SPACE["logistic_regression"]["C"]


class CountingFold:
    """``score_fold`` that also records, in a file per fold, that the fold ran to the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, X, y, candidate, cv, fold, cpus) -> float:
        score = score_fold(X, y, candidate, cv, fold, cpus)
        (self.directory / f"{candidate['label']}#{fold}#{os.getpid()}").touch()
        return score


@pytest.fixture(scope="module")
def local_ray():
    with in_process_ray(num_cpus=2):
        yield


def _search(loans: pd.DataFrame, tmp_path: Path, scheduler: str, fold_fn) -> dict:
    X, y = loans.drop(columns="decision"), loans["decision"]
    search = SearchConfig(
        space=SPACE,
        sampler="grid",
        num_samples=1,
        scheduler=scheduler,
        asha={"grace_period": 1, "reduction_factor": 3},
        cpus_per_fold=1,
        max_concurrent_trials=3,
        storage_path=str(tmp_path / "ray_results"),
    )
    cv = CVConfig(n_folds=N_FOLDS, scoring="accuracy")
    tuner = build_tuner(X, y, search, cv, f"t-{scheduler}", fold_fn=fold_fn)
    return run_search(tuner, N_FOLDS)


def test_fold_milestones_follow_asha_rungs():
    def search(**kw) -> SearchConfig:
        return SearchConfig(space=SPACE, **kw)

    assert fold_milestones(5, search(asha={"grace_period": 1, "reduction_factor": 3})) == [1, 3, 5]
    rungs = search(asha={"grace_period": 2, "reduction_factor": 2})
    assert fold_milestones(10, rungs) == [2, 4, 8, 10]
    assert fold_milestones(5, search(scheduler="fifo")) == [5]
    # A rung between two fold counts is decided at the next one (ASHA: iteration >= rung).
    assert fold_milestones(10, search(asha={"grace_period": 1, "reduction_factor": 2.5})) == [
        1, 3, 7, 10
    ]  # fmt: skip


@pytest.mark.cluster
def test_asha_stops_hopeless_trials_and_their_folds_never_run(local_ray, loans, tmp_path):
    ran = tmp_path / "folds"
    ran.mkdir()
    result = _search(loans, tmp_path, "asha", CountingFold(ran))
    folds_run = [p.name.split("#") for p in ran.iterdir()]
    reported = {t["label"]: t["folds"] for t in result.trials}
    # Every reported fold ran, none twice, and far from all folds ran: a stopped trial's
    # folds beyond its rung never started (or, if they ran ahead on idle CPUs, were
    # cancelled; those that finished anyway count here).
    assert sum(reported.values()) <= len(folds_run) < len(reported) * N_FOLDS - 3
    assert len({(label, fold) for label, fold, _ in folds_run}) == len(folds_run)
    # ASHA is asynchronous: the first trial to reach a rung has no one to lose to.
    hopeless = [reported[candidate_label("logistic_regression", {"C": c})] for c in LOW_C]
    assert sum(n < N_FOLDS for n in hopeless) >= 2, reported
    assert result.best["folds"] == N_FOLDS and result.best["model_type"] == "random_forest"
    # The folds ran as tasks in more than one worker process (two CPUs, trials hold none).
    assert len({pid for _, _, pid in folds_run}) >= 2


@pytest.mark.cluster
def test_fifo_runs_every_fold_and_refit_is_a_ray_task(local_ray, loans, tmp_path):
    result = _search(loans, tmp_path, "fifo", score_fold)
    assert all(t["folds"] == N_FOLDS for t in result.trials)
    X, y = loans.drop(columns="decision"), loans["decision"]
    model = refit(X, y, result.best, CVConfig(n_folds=N_FOLDS, scoring="accuracy"))
    # The CPUs free when the refit starts (a cancelled fold may still be winding down).
    assert model.config["n_jobs"] in (1, 2) and model.model_type == "random_forest"
    assert (model.predict(X.head(50)) == y.head(50).to_numpy()).mean() > 0.7
