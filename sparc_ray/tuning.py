"""Ray Tune search: one trial per candidate config, stratified k-fold CV inside each trial.

Every trial reports the running CV mean after each fold, so ``ASHAScheduler`` (time attribute
= folds done) stops weak configurations after their first folds. The training split goes to
the object store once through ``tune.with_parameters``.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sparc_ray.models import SPARCClassificationModel

METRIC = "cv_mean"
_DISTRIBUTIONS = {
    "uniform": tune.uniform,
    "loguniform": tune.loguniform,
    "randint": lambda lo, hi: tune.randint(lo, hi + 1),  # inclusive upper bound, like a grid
}


def _label(model_type: str, params: dict[str, Any]) -> str:
    inner = ",".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return f"{model_type}({inner})"


def _cost(candidate: dict[str, Any]) -> float:
    """Rough relative fit cost (seconds per fold on 16k x 20 rows, one core) for ordering."""
    p = candidate["params"]
    if candidate["model_type"] == "random_forest":
        depth = p.get("max_depth")
        return 0.2 * p.get("n_estimators", 100) * (1.0 if depth is None else min(1.0, depth / 12))
    if candidate["model_type"] == "hist_gradient_boosting":
        return 0.02 * p.get("max_iter", 100)
    return 0.2


def expand_candidates(
    space: dict[str, dict[str, Any]], sampler: str, num_samples: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Concrete ``{"model_type", "params", "label"}`` configs from a YAML search space.

    grid: the cartesian product of list-valued parameters per family (repeated ``num_samples``
    times); random: ``num_samples`` draws per family with Tune's samplers (lists = choices).
    """
    out = []
    rng = np.random.default_rng(seed)
    for family, params in space.items():
        params = params or {}
        if sampler == "grid":
            bad = [k for k, v in params.items() if isinstance(v, dict)]
            if bad:
                raise ValueError(f"{family}: distributions {bad} need `sampler: random`")
            axes = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
            combos = [
                dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())
            ]
            combos = combos * num_samples
        else:
            domains = {k: _domain(family, k, v) for k, v in params.items()}
            combos = [
                {
                    k: (d.sample(random_state=rng) if hasattr(d, "sample") else d)
                    for k, d in domains.items()
                }
                for _ in range(num_samples)
            ]
        for combo in combos:
            combo = {k: v.item() if isinstance(v, np.generic) else v for k, v in combo.items()}
            out.append({"model_type": family, "params": combo, "label": _label(family, combo)})
    return out


def _domain(family: str, key: str, value: Any) -> Any:
    if isinstance(value, list):
        return tune.choice(value)
    if isinstance(value, dict):
        ((kind, bounds),) = value.items()
        if kind not in _DISTRIBUTIONS:
            raise ValueError(f"{family}.{key}: unknown distribution {kind!r}")
        return _DISTRIBUTIONS[kind](*bounds)
    return value


def order_candidates(
    candidates: list[dict[str, Any]], scheduler: str, seed: int = 0
) -> list[dict[str, Any]]:
    """FIFO: slowest first, for the shortest makespan. ASHA: a seeded shuffle, so the early
    rung thresholds are set by a mix of families rather than by the cheapest (often weakest)
    or the costliest configurations."""
    if scheduler == "fifo":
        return sorted(candidates, key=_cost, reverse=True)
    shuffled = list(candidates)
    # B311: a seeded search order, not a secret
    random.Random(seed).shuffle(shuffled)  # nosec B311
    return shuffled


def cv_trainable(
    config: dict[str, Any], X: pd.DataFrame, y: pd.Series, cv: dict[str, Any], cpus: int
) -> None:
    """Run one candidate's CV, reporting the running mean after every fold."""
    cand = config["candidate"]
    model = SPARCClassificationModel(
        {
            "model_type": cand["model_type"],
            "model": cand["params"],
            "cross_validation": cv,
            "n_jobs": cpus,
        }
    )
    scores: list[float] = []
    for score in model.iter_cv_scores(X, y):
        scores.append(score)
        tune.report(
            {
                METRIC: float(np.mean(scores)),
                "cv_std": float(np.std(scores)),
                "folds": len(scores),
                "fold_score": score,
            }
        )


class SearchInterrupted(RuntimeError):
    """The search stopped before every trial finished (SIGINT); resume it with --resume."""


@dataclass
class SearchResult:
    best: dict[str, Any]  # the winning candidate plus its CV mean / std
    trials: list[dict[str, Any]]  # one row per trial, for the report
    experiment_path: str


def latest_experiment(storage_path: str, name: str) -> str | None:
    """Path of the newest ``<name>-<YYYYmmdd-HHMMSS>`` experiment under ``storage_path``."""
    if "://" in storage_path:
        fs, root = pafs.FileSystem.from_uri(storage_path)
    else:
        storage_path = os.path.abspath(storage_path)
        fs, root = pafs.LocalFileSystem(), storage_path
    pattern = re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}")
    found = sorted(
        i.base_name
        for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        if i.type == pafs.FileType.Directory and pattern.fullmatch(i.base_name)
    )
    return f"{storage_path.rstrip('/')}/{found[-1]}" if found else None


def build_tuner(
    X: pd.DataFrame,
    y: pd.Series,
    search: dict[str, Any],
    cv: dict[str, Any],
    experiment: str,
    resume_path: str | None = None,
    seed: int = 0,
) -> tune.Tuner:
    cpus = int(search["cpus_per_trial"])
    trainable = tune.with_resources(
        tune.with_parameters(cv_trainable, X=X, y=y, cv=cv, cpus=cpus), {"cpu": cpus}
    )
    if resume_path is not None:
        return tune.Tuner.restore(resume_path, trainable=trainable, resume_errored=True)
    candidates = expand_candidates(
        search["space"], search["sampler"], int(search["num_samples"]), seed
    )
    candidates = order_candidates(candidates, search["scheduler"], seed)
    n_folds = int(cv["n_folds"])
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=n_folds,
            grace_period=int(search["asha"]["grace_period"]),
            reduction_factor=float(search["asha"]["reduction_factor"]),
        )
        if search["scheduler"] == "asha"
        else FIFOScheduler()
    )
    storage = search["storage_path"]
    if "://" not in storage:
        storage = os.path.abspath(storage)
    # Only result.json per trial (what Tuner.restore and the report read): Tune's automatic
    # CSV and TensorBoard loggers cost driver time on every fold report.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    return tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(candidates)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=scheduler,
            reuse_actors=True,
            max_concurrent_trials=search.get("max_concurrent_trials"),
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=storage, verbose=1, callbacks=[JsonLoggerCallback()]
        ),
    )


def run_search(tuner: tune.Tuner, n_folds: int) -> SearchResult:
    """Fit the tuner; the best trial is the best CV mean among trials that ran every fold."""
    grid = tuner.fit()

    # After SIGINT Tune marks every trial TERMINATED; only a finished (or scheduler-stopped)
    # trial has reported ``done``. A trial that ran every fold is finished either way (a trial
    # rerun after --resume can lack the flag).
    def finished(m: dict) -> bool:
        return bool(m.get("done")) or m.get("folds", 0) >= n_folds

    if any(r.error is None and not finished(r.metrics or {}) for r in grid):
        raise SearchInterrupted(grid.experiment_path)
    trials = []
    for result in grid:
        m = result.metrics or {}
        cand = result.config["candidate"]
        trials.append(
            {
                "trial_id": m.get("trial_id"),
                "model_type": cand["model_type"],
                "params": cand["params"],
                "label": cand["label"],
                "cv_mean": m.get(METRIC),
                "cv_std": m.get("cv_std"),
                "folds": m.get("folds", 0),
                "stopped_early": m.get("folds", 0) < n_folds and result.error is None,
                "error": str(result.error) if result.error else None,
            }
        )
    complete = [t for t in trials if t["folds"] == n_folds and t["error"] is None]
    if not complete:
        errors = [t["error"] for t in trials if t["error"]]
        raise RuntimeError(f"no trial completed all {n_folds} folds; errors: {errors[:3]}")
    best = max(complete, key=lambda t: (t["cv_mean"], -t["cv_std"]))
    return SearchResult(best=best, trials=trials, experiment_path=grid.experiment_path)
