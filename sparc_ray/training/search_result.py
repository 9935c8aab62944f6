"""What a Tune search found: the best configuration among those that ran every fold, one row
per trial, and the configurations that could not be evaluated (named, never dropped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparc_ray.training.search_space import fit_cost

if TYPE_CHECKING:
    from ray import tune

METRIC = "cv_mean"  # what every trial reports: the running CV mean over its folds


class SearchInterrupted(RuntimeError):
    """The search stopped before every trial finished (SIGINT); resume it with --resume."""


class SearchIncomplete(RuntimeError):
    """Some configurations failed after every retry and restart (``search.max_failures``);
    ``failed`` names them. Nothing is published unless ``search.allow_incomplete``."""

    def __init__(self, experiment_path: str, failed: list[dict[str, Any]]) -> None:
        self.experiment_path, self.failed = experiment_path, failed
        names = "; ".join(f"{t['label']}: {t['error']}" for t in failed)
        super().__init__(f"{len(failed)} configuration(s) could not be evaluated: {names}")


@dataclass
class SearchResult:
    best: dict[str, Any]  # the winning candidate plus its CV mean / std
    trials: list[dict[str, Any]]  # one row per trial, for the report
    experiment_path: str

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The trials that errored after every restart: configurations never evaluated."""
        return [{"label": t["label"], "error": t["error"]} for t in self.trials if t["error"]]


def run_search(tuner: tune.Tuner, n_folds: int) -> SearchResult:
    """Fit the tuner; the best trial is the best CV mean among trials that ran every fold."""
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]  # (ResultGrid is indexed, not typed iterable)

    # After SIGINT Tune marks every trial TERMINATED; only a finished (or scheduler-stopped)
    # trial has reported ``done``. A trial that ran every fold is finished either way (a trial
    # rerun after --resume can lack the flag).
    def finished(m: dict) -> bool:
        return bool(m.get("done")) or m.get("folds", 0) >= n_folds

    if any(r.error is None and not finished(r.metrics or {}) for r in results):
        raise SearchInterrupted(grid.experiment_path)
    trials = []
    for result in results:
        m = result.metrics or {}
        cand = (result.config or {})["candidate"]  # (a trial's result always holds it)
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
    # Ties (common on small data) go to the steadier, then the cheaper configuration, then
    # the label: the same answer whatever order the trials finished in.
    best = min(complete, key=lambda t: (-t["cv_mean"], t["cv_std"], fit_cost(t), t["label"]))
    return SearchResult(best=best, trials=trials, experiment_path=grid.experiment_path)
