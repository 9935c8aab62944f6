"""Ray Tune search: one trial per candidate config, its stratified k folds run as Ray tasks.

The training split goes to the object store once. A trial holds no CPU: it submits its folds as
tasks (``cpus_per_fold`` each) and reports the running CV mean as each one finishes, keeping
every CPU busy to the last fold. ``ASHAScheduler`` (time attribute = folds done) decides at its
rungs: a trial submits the folds up to its next rung; folds beyond it run ahead only on idle
CPUs, and whatever is pending when a trial stops is cancelled. The costliest configurations
start first. The final refit is a Ray task with explicit resources.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sparc_ray.registry import storage
from sparc_ray.training.config import CVConfig, SearchConfig
from sparc_ray.training.experiment_seal import latest_experiment as latest_experiment
from sparc_ray.training.placement import trial_resources
from sparc_ray.training.search_result import METRIC
from sparc_ray.training.search_space import expand_candidates, order_candidates

if TYPE_CHECKING:  # scikit-learn is imported by the fold and refit tasks, not by trials
    from sparc_ray.training.estimator import SPARCClassificationModel

FOLD_TASK = "_fold_task"  # fold tasks' names start with it (then the label and fold)
SPARE_CPU_POLL_S = 0.5  # how often a waiting trial looks for idle CPUs to run folds ahead
LABEL_WIDTH = 72  # the progress table's config column: a candidate's label, rarely cut
# (X, y, candidate, cv, fold, cpus) -> score; ``cv`` is the model's ``cross_validation``
# mapping (``CVConfig.model_dump()``: plain data in Tune's experiment and in the model).
FoldFn = Callable[[pd.DataFrame, pd.Series, dict[str, Any], dict[str, Any], int, float], float]


def score_fold(
    X: pd.DataFrame,
    y: pd.Series,
    candidate: dict[str, Any],
    cv: dict[str, Any],
    fold: int,
    cpus: float,
) -> float:
    """One candidate's score on one fold (what every fold task runs)."""
    return _model(candidate, cv, cpus).fold_score(X, y, fold)


def _model(candidate: dict[str, Any], cv: dict[str, Any], cpus: float) -> SPARCClassificationModel:
    from sparc_ray.training.estimator import SPARCClassificationModel

    config = {"model_type": candidate["model_type"], "model": candidate["params"]}
    n_jobs = max(1, int(cpus))  # threads for a fractional cpus_per_fold: one
    return SPARCClassificationModel({**config, "cross_validation": cv, "n_jobs": n_jobs})


@ray.remote(retry_exceptions=False)  # retried when its worker or node dies, not on errors
def _fold_task(fold_fn: FoldFn, X, y, candidate, cv, fold: int, cpus: float) -> float:
    return fold_fn(X, y, candidate, cv, fold, cpus)


def fold_milestones(n_folds: int, search: SearchConfig) -> list[int]:
    """Fold counts a trial runs up to before it waits for the scheduler: ASHA's rungs
    (``grace_period * reduction_factor**k``, rounded up: ASHA decides at the first fold count
    that reaches a rung), then all folds; FIFO: all folds at once."""
    marks: list[int] = []
    t: float = search.asha.grace_period
    if search.scheduler == "asha":
        while t < n_folds:
            marks.append(math.ceil(t - 1e-9))
            t *= search.asha.reduction_factor
    return sorted({*marks, n_folds})


def cv_trainable(
    config: dict[str, Any],
    data: dict[str, Any],
    cv: dict[str, Any],
    cpus: float,
    milestones: list[int],
    fold_retries: int = 3,
    fold_fn: FoldFn = score_fold,
) -> None:
    """Run one candidate's CV as fold tasks, reporting the running mean as each finishes.

    The folds the scheduler needs before its next decision are submitted at once; later
    folds also run on CPUs that would otherwise sit idle (so on a large cluster no trial waits
    rung by rung: bench/scale_model.py); whatever is pending when the trial stops is
    cancelled."""
    cand = config["candidate"]
    # "DEFAULT": not in the trial's placement group (Tune makes trials capture child tasks);
    # fold tasks take any free CPU of the cluster.
    options = {"num_cpus": cpus, "scheduling_strategy": "DEFAULT", "max_retries": fold_retries}
    n_folds = milestones[-1]
    scores: list[float] = []
    pending: list[ray.ObjectRef] = []

    def submit(count: int) -> None:
        for _ in range(max(0, min(count, n_folds - len(scores) - len(pending)))):
            fold = len(scores) + len(pending)
            # Named for Ray's dashboard and state API: "_fold_task <label> #<fold>".
            task = _fold_task.options(name=f"{FOLD_TASK} {cand['label']} #{fold}", **options)
            pending.append(task.remote(fold_fn, data["X"], data["y"], cand, cv, fold, cpus))

    try:
        while len(scores) < n_folds:
            needed = next(m for m in milestones if m > len(scores))
            submit(needed - len(scores) - len(pending))
            # Folds beyond the next decision, on CPUs nobody else is waiting for (a fold run
            # ahead costs only a CPU that was idle; if ASHA stops the trial it is cancelled).
            ahead = len(scores) + len(pending) < n_folds
            if ahead:
                submit(int(ray.available_resources().get("CPU", 0) // cpus))
            timeout = SPARE_CPU_POLL_S if ahead else None
            done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            for ref in done:
                score = float(ray.get(ref))
                scores.append(score)
                tune.report(
                    {
                        METRIC: float(np.mean(scores)),
                        "cv_std": float(np.std(scores)),
                        "folds": len(scores),
                        "fold_score": score,
                    }
                )
    finally:  # stopped or failed: no fold keeps a CPU busy for nothing
        for ref in pending:
            ray.cancel(ref)


@ray.remote(retry_exceptions=False)
def _refit_task(X: pd.DataFrame, y: pd.Series, best: dict, cv: dict, cpus: int):
    return _model(best, cv, cpus).fit(X, y)


def refit(
    X: pd.DataFrame, y: pd.Series, best: dict[str, Any], cv: CVConfig, retries: int = 3
) -> SPARCClassificationModel:
    """The best configuration fitted on the whole training split: a Ray task holding as many
    CPUs as one node can give it now (the largest node's, less what others use, e.g. a Serve
    app on the same cluster); scikit-learn's threads use exactly those. Rerun elsewhere
    (up to ``retries`` times) if its node dies."""
    node = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    cpus = max(1, int(min(node, ray.available_resources().get("CPU", 0))))
    task = _refit_task.options(num_cpus=cpus, max_retries=retries)
    return ray.get(task.remote(X, y, best, cv.model_dump(), cpus))


def progress_reporter(n_folds: int) -> CLIReporter:
    """Tune's table: per trial, best first, its label, folds run and CV mean / std."""
    return CLIReporter(
        parameter_columns={"candidate/label": "config"},
        metric_columns={"folds": f"folds/{n_folds}", METRIC: "CV mean", "cv_std": "CV std"},
        max_column_length=LABEL_WIDTH,
        sort_by_metric=True,
    )


def run_config(
    experiment: str,
    storage_path: str,
    n_folds: int,
    callbacks: list | None = None,
    max_failures: int = 3,
) -> tune.RunConfig:
    """Where the experiment is stored, its loggers, its progress table, and how often a
    trial that failed (e.g. its actor died with its node) starts again from its first fold."""
    fs, root = storage.open_fs(storage_path)
    return tune.RunConfig(
        name=experiment,
        storage_path=root,
        storage_filesystem=fs,
        verbose=1,
        callbacks=[JsonLoggerCallback(), *(callbacks or [])],
        progress_reporter=progress_reporter(n_folds),
        failure_config=tune.FailureConfig(max_failures=max_failures),
    )


def build_tuner(
    X: pd.DataFrame,
    y: pd.Series,
    search: SearchConfig,
    cv: CVConfig,
    experiment: str,
    resume_path: str | None = None,
    seed: int = 0,
    fold_fn: FoldFn = score_fold,
    callbacks: list | None = None,
) -> tune.Tuner:
    """The search over ``search.space`` on the connected Ray cluster (or the experiment at
    ``resume_path``, continued). ``fold_fn`` scores one fold (the scaling simulation replays
    measured durations through it); ``callbacks`` are extra Tune callbacks (a new search)."""
    # Only result.json per trial (what Tuner.restore and the report read): Tune's automatic
    # CSV and TensorBoard loggers cost driver time on every fold report. The classic console
    # output: the newer one ignores progress_reporter and cuts every value to 20 characters.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    cpus, n_folds = search.cpus_per_fold, cv.n_folds
    data = {"X": ray.put(X), "y": ray.put(y)}  # once; every fold task reads it from here
    trainable = tune.with_resources(
        tune.with_parameters(
            cv_trainable,
            data=data,
            cv=cv.model_dump(),  # plain data, as stored in experiments before typed configs
            cpus=cpus,
            milestones=fold_milestones(n_folds, search),
            fold_retries=search.fold_retries,
            fold_fn=fold_fn,
        ),
        trial_resources(ray.cluster_resources()),  # off the head when workers offer it
    )
    if resume_path is not None:
        fs, path = storage.open_fs(resume_path)
        return tune.Tuner.restore(
            path, trainable=trainable, resume_errored=True, storage_filesystem=fs
        )
    candidates = expand_candidates(search.space, search.sampler, search.num_samples, seed)
    candidates = order_candidates(candidates, seed)
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=n_folds,
            grace_period=search.asha.grace_period,
            reduction_factor=search.asha.reduction_factor,
        )
        if search.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(candidates)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=scheduler,
            reuse_actors=True,
            # Trials only wait on their folds: enough of them to keep every CPU fed.
            max_concurrent_trials=search.max_concurrent_trials
            or max(2, int(2 * ray.cluster_resources().get("CPU", 1) / cpus)),
        ),
        run_config=run_config(
            experiment, search.storage_path, n_folds, callbacks, search.max_failures
        ),
    )
