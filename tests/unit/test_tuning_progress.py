"""Tune's progress table: each trial by its readable label, with its folds and CV so far
(Tune's own reporter printing stub trials: no Ray cluster)."""

import time

from ray.tune import CLIReporter
from ray.tune.experiment import Trial
from ray.tune.utils import log as tune_log

from sparc_ray.training import tuning
from sparc_ray.training.search_space import expand_candidates

SPACE = {
    "random_forest": {"n_estimators": [200], "max_depth": [8], "min_samples_leaf": [1, 3]},
    "hist_gradient_boosting": {"learning_rate": [0.05], "max_iter": [200]},
}


class _StubTrial(Trial):
    """A trial as the reporter reads it, without the storage a running experiment has."""

    local_experiment_path = "/experiments/demo"
    error_file = None


def _trials(candidates: list[dict]) -> list[Trial]:
    trials = []
    for i, cand in enumerate(candidates):
        trial = _StubTrial("cv_trainable", config={"candidate": cand}, stub=True, trial_id=f"t{i}")
        result = {"cv_mean": 0.9 + i / 100, "cv_std": 0.02, "folds": i + 1}
        trial.update_last_result({**result, "config": {"candidate": cand}})
        trial.set_status(Trial.RUNNING)
        trials.append(trial)
    return trials


def test_the_table_shows_each_trial_by_label_with_folds_and_cv(tmp_path, monkeypatch):
    candidates = expand_candidates(SPACE, "grid", 1)
    # Tune keeps its verbosity in a global that a search run earlier in this process (the
    # integration tests, verbose=1) leaves lowered: start from Tune's own default.
    monkeypatch.setattr(tune_log, "verbosity", tune_log.Verbosity.V3_TRIAL_DETAILS)
    reporter = tuning.run_config("exp", str(tmp_path), n_folds=5).progress_reporter
    assert isinstance(reporter, CLIReporter)  # a new search's run config reports through it
    printed: list[str] = []
    # What the reporter prints goes through Ray's tqdm-safe print, which earlier in-process
    # Ray sessions of the suite may have redirected: take the text where it is printed.
    monkeypatch.setattr(reporter, "_print", printed.append)
    reporter.setup(start_time=time.time(), metric=tuning.METRIC, mode="max")
    reporter.report(_trials(candidates), False)
    table = "\n".join(printed)
    header = next(line for line in table.splitlines() if "Trial name" in line)
    assert [c.strip() for c in header.strip("|").split("|")][-4:] == [
        "config",
        "folds/5",
        "CV mean",
        "CV std",
    ]
    for cand in candidates:  # whole, not cut to Tune's default 20 characters
        assert f"| {cand['label']} " in table
    assert "random_forest n_estimators=200 max_depth=8 min_samples_leaf=3" in table
    assert "'model_type'" not in table and "'params'" not in table
