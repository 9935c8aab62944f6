"""How the search scales past this machine: measured fold durations replayed as sleeps.

    python bench/tune_scale_sim.py                    # broad space, 20k rows, N = 2 ... 64
    python bench/tune_scale_sim.py --cpus 2,16 --time-scale 0.5

1. Every (configuration, fold) of ``bench/tune_bench.py``'s space is fitted once for real,
   one thread each, and its duration and score are kept (``bench/results/``; reused).
2. For each N, on a local cluster of N logical CPUs (its own: ``address="local"``, never a
   running one), the durations are replayed as sleeps (returning the real fold scores, so
   ASHA decides as it would) by
   - today's design (before fold tasks): a trial holds one CPU and runs its folds in a row;
   - the current search (``sparc_ray.training.tuning``): folds are Ray tasks, trials hold no CPU;
   both with FIFO and ASHA; and by a GridSearchCV-equivalent: N workers taking the same
   (configuration, fold) tasks in GridSearchCV's order, each as soon as one is free
   (computed exactly, no sleeping).
3. It prints makespans, the ratio to GridSearchCV at the same N, whether ASHA picked the same
   best configuration, and scaling efficiency 2 -> 16 = (T2 / T16) / 8.

On this 2-core machine a replay with N logical CPUs runs N sleeping tasks at once, which
costs little CPU; but starting Ray's worker processes and Tune's bookkeeping share the two
real cores (about 8 s per search here, which a 16-core machine would spread over 16).
So each N's sleeps are stretched until GridSearchCV's makespan lasts ``--target-seconds``
(default 60 s) and the results are scaled back: the figures are the schedules' makespans
with a fixed overhead that shrinks as N grows. ``--time-scale 1`` replays the durations as
measured instead.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import time
from pathlib import Path

import numpy as np
from search_data import N_FOLDS, SPACES, make_data

from sparc_ray.training.config import CVConfig, SearchConfig
from sparc_ray.training.search_result import run_search
from sparc_ray.training.search_space import expand_candidates, fit_cost
from sparc_ray.training.tuning import build_tuner, score_fold

ASHA = {"grace_period": 1, "reduction_factor": 3}


def measure(space: str, rows: int, path: Path) -> dict:
    """{label: {"seconds": [per fold], "scores": [per fold]}} from real single-thread fits
    (read back from ``path`` when it has every candidate's label)."""
    candidates = expand_candidates(SPACES[space], "grid", 1)
    if path.exists():
        cached = json.loads(path.read_text())
        if set(cached) == {c["label"] for c in candidates}:
            return cached
        print(f"  {path}: measured for other labels; measuring again", flush=True)
    X, y = make_data(rows)
    cv = {"n_folds": N_FOLDS, "scoring": "accuracy"}
    out = {}
    for cand in candidates:
        seconds, scores = [], []
        for fold in range(N_FOLDS):
            start = time.perf_counter()
            scores.append(score_fold(X, y, cand, cv, fold, 1))
            seconds.append(time.perf_counter() - start)
        out[cand["label"]] = {"seconds": seconds, "scores": scores}
        print(f"  measured {cand['label']:<70} {sum(seconds):6.2f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def grid_search_makespan(folds: dict, cpus: int) -> float:
    """N workers over (configuration, fold) in GridSearchCV's order (candidates x splits)."""
    workers = [0.0] * cpus
    for label in folds:
        for seconds in folds[label]["seconds"]:
            heapq.heappush(workers, heapq.heappop(workers) + seconds)
    return max(workers)


class Replay:
    """A fold function that sleeps for the measured duration and returns the real score."""

    def __init__(self, folds: dict, scale: float) -> None:
        self.folds, self.scale = folds, scale

    def __call__(self, X, y, candidate, cv, fold, cpus) -> float:
        entry = self.folds[candidate["label"]]
        time.sleep(entry["seconds"][fold] * self.scale)
        return entry["scores"][fold]


def today(folds: dict, scheduler: str, scale: float, cpus: int) -> tuple[float, str, int]:
    """The design before fold tasks: a trial holds 1 CPU, runs its folds in a row, FIFO in
    costliest-first order, ASHA in a seeded shuffle."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    cands = expand_candidates(SPACES[ARGS.space], "grid", 1)
    if scheduler == "fifo":
        cands = sorted(cands, key=fit_cost, reverse=True)
    else:
        random.Random(0).shuffle(cands)

    def trainable(config):
        entry, scores = folds[config["candidate"]["label"]], []
        for fold in range(N_FOLDS):
            time.sleep(entry["seconds"][fold] * scale)
            scores.append(entry["scores"][fold])
            tune.report({"cv_mean": float(np.mean(scores)), "folds": len(scores)})

    sched = (
        ASHAScheduler(time_attr="training_iteration", max_t=N_FOLDS, **ASHA)
        if scheduler == "asha"
        else FIFOScheduler()
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"candidate": tune.grid_search(cands)},
        tune_config=tune.TuneConfig(metric="cv_mean", mode="max", scheduler=sched),
        run_config=tune.RunConfig(
            storage_path=STORAGE,
            name=f"today-{time.time_ns()}",
            verbose=0,
            callbacks=[JsonLoggerCallback()],  # the result.json Tune reads back
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    elapsed = (time.perf_counter() - start) / scale
    done = [r for r in grid if (r.metrics or {}).get("folds") == N_FOLDS]
    best = max(done, key=lambda r: r.metrics["cv_mean"]).config["candidate"]["label"]
    return elapsed, best, sum((r.metrics or {}).get("folds", 0) for r in grid)


def current(folds: dict, scheduler: str, scale: float, cpus: int) -> tuple[float, str, int]:
    search = SearchConfig(
        space=SPACES[ARGS.space],
        sampler="grid",
        num_samples=1,
        scheduler=scheduler,
        asha=ASHA,
        cpus_per_fold=1,
        max_concurrent_trials=None,
        storage_path=STORAGE,
    )
    cv = CVConfig(n_folds=N_FOLDS, scoring="accuracy")
    X, y = make_data(200)  # unused by the replay; the real split is what was measured
    start = time.perf_counter()
    tuner = build_tuner(X, y, search, cv, f"sim-{time.time_ns()}", fold_fn=Replay(folds, scale))
    result = run_search(tuner, N_FOLDS)
    elapsed = (time.perf_counter() - start) / scale
    return elapsed, result.best["label"], sum(t["folds"] for t in result.trials)


def main() -> None:
    import ray

    folds = measure(ARGS.space, ARGS.rows, Path(ARGS.durations.format(**vars(ARGS))))
    total = sum(sum(f["seconds"]) for f in folds.values())
    means = {label: float(np.mean(f["scores"])) for label, f in folds.items()}
    gs_best = max(means, key=means.get)
    print(f"{len(folds)} configurations x {N_FOLDS} folds, {total:.1f} s of fits; best {gs_best}")
    rows = []
    for cpus in ARGS.cpus:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            ray.get([ray.remote(lambda: time.sleep(1)).remote() for _ in range(cpus)])  # warm
            row = {"cpus": cpus, "grid_search": grid_search_makespan(folds, cpus)}
            for name, run in (("today", today), ("current", current)):
                if name not in ARGS.designs:
                    continue
                for scheduler in ("fifo", "asha"):
                    scale = ARGS.time_scale or ARGS.target_seconds / row["grid_search"]
                    seconds, best, ran = run(folds, scheduler, scale, cpus)
                    row[f"{name}_{scheduler}"] = {"seconds": seconds, "best": best, "folds": ran}
        finally:
            ray.shutdown()
        rows.append(row)
        print(_line(row, gs_best), flush=True)
    _summary(rows, gs_best)
    Path(ARGS.out).write_text(json.dumps({"best": gs_best, "rows": rows}, indent=2))


def _line(row: dict, gs_best: str) -> str:
    gs = row["grid_search"]
    cells = [f"N={row['cpus']:<3} GridSearchCV {gs:7.1f} s"]
    for key in ("today_fifo", "today_asha", "current_fifo", "current_asha"):
        if key not in row:
            continue
        r = row[key]
        same = "" if r["best"] == gs_best else " (other best!)"
        cells.append(f"{key} {r['seconds']:6.1f} s {r['seconds'] / gs:4.2f}x{same}")
    return " | ".join(cells)


def _summary(rows: list[dict], gs_best: str) -> None:
    by = {r["cpus"]: r for r in rows}
    if 2 not in by or 16 not in by:
        return
    print("\nscaling efficiency 2 -> 16 (T2 / T16 / 8):")
    for key in ("grid_search", "today_fifo", "today_asha", "current_fifo", "current_asha"):
        if key not in by[2]:
            continue
        t2, t16 = (by[n][key] if key == "grid_search" else by[n][key]["seconds"] for n in (2, 16))
        print(f"  {key:<14} {t2 / t16 / 8:6.0%}")
    r16, gs16 = by[16], by[16]["grid_search"]
    fifo, asha = r16["current_fifo"]["seconds"] / gs16, r16["current_asha"]["seconds"] / gs16
    eff = min(
        by[2][k]["seconds"] / by[16][k]["seconds"] / 8 for k in ("current_fifo", "current_asha")
    )
    print(
        f"targets at N=16: FIFO <= 1.0x -> {fifo:.2f}x; ASHA <= 0.6x with the same best -> "
        f"{asha:.2f}x ({'same' if r16['current_asha']['best'] == gs_best else 'OTHER'} best); "
        f"efficiency >= 75% -> {eff:.0%}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=sorted(SPACES), default="broad")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument(
        "--cpus", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4, 8, 16, 64]
    )
    parser.add_argument("--designs", default="today,current", help="which designs to replay")
    parser.add_argument(
        "--target-seconds",
        type=float,
        default=60.0,
        help="scale each N's sleeps so that GridSearchCV's makespan replays in this long",
    )
    parser.add_argument("--time-scale", type=float, help="sleep this x the duration (fixed)")
    parser.add_argument("--durations", default="bench/results/fold_durations_{space}_{rows}.json")
    parser.add_argument("--out", default="bench/results/tune_scale_sim.json")
    ARGS = parser.parse_args()
    STORAGE = str(Path("bench/results/ray_results").resolve())
    main()
