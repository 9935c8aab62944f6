"""Hyperparameter-search benchmark: GridSearchCV vs our Tune search (FIFO and ASHA over folds).

    python bench/tune_bench.py            # 20k rows x 20 features, 28 configs, 5 folds
    python bench/tune_bench.py --quick    # 4k rows, for development

All three searches run in this one process on the same data, the same pipelines
(sparc_ray.training.estimator.build_pipeline) and the same stratified folds (shuffle, seed 42),
so their CV scores are comparable. The baseline is what a user would write instead: ONE GridSearchCV
over all families (a list of grids), n_jobs = all CPUs, refit=False; our searches are timed
from Tuner construction to the end of ``fit()`` on an already started local Ray (Ray's
start-up time is printed separately).

``--whole-job`` (or ``--whole-job-only``) also times what a user waits for, each as its own
command on a CSV of the same data: ``python jobs/train.py`` (Ray start, search, refit,
holdout, report, publish) against a script doing one ``GridSearchCV(refit=True)`` on the same
training split; ``--repeats`` rounds (3) in ABBA order, medians judged against issue 20's
targets (FIFO <= 1.05x, ASHA <= 0.7x, the same best CV +- 0.002).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from search_data import N_FOLDS, SPACES, grids, make_data
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sparc_ray.registry.layout import DEFAULT_TUNE_STORAGE
from sparc_ray.training.config import CVConfig, SearchConfig
from sparc_ray.training.search_result import run_search
from sparc_ray.training.search_space import expand_candidates
from sparc_ray.training.tuning import build_tuner


def grid_search(X: pd.DataFrame, y: pd.Series, space: dict, cpus: int) -> tuple[float, float, str]:
    """ONE GridSearchCV over every family (a list of grids), n_jobs = all CPUs, no refit."""
    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=42)
    pipe, param_grid = grids(space, list(X.columns))
    start = time.perf_counter()
    gs = GridSearchCV(pipe, param_grid, cv=folds, n_jobs=cpus, refit=False, scoring="accuracy")
    gs.fit(X, y)
    params = {k: v for k, v in gs.best_params_.items() if k != "classifier"}
    label = f"{type(gs.best_params_['classifier']).__name__}{params}"
    return time.perf_counter() - start, float(gs.best_score_), label


def tune_search(
    X: pd.DataFrame, y: pd.Series, space: dict, scheduler: str, storage: str, rf: float
) -> dict:
    search = SearchConfig(
        space=space,
        sampler="grid",
        num_samples=1,
        scheduler=scheduler,
        asha={"grace_period": 1, "reduction_factor": rf},
        cpus_per_fold=1,
        max_concurrent_trials=None,
        storage_path=storage,
    )
    cv = CVConfig(n_folds=N_FOLDS, scoring="accuracy")
    start = time.perf_counter()
    tuner = build_tuner(X, y, search, cv, f"bench-{scheduler}-{int(time.time())}")
    result = run_search(tuner, N_FOLDS)
    elapsed = time.perf_counter() - start
    folds_run = sum(t["folds"] for t in result.trials)
    return {
        "seconds": elapsed,
        "best": result.best["cv_mean"],
        "label": result.best["label"],
        "folds_run": folds_run,
        "folds_total": len(result.trials) * N_FOLDS,
    }


# What a user would run instead of the training job: one GridSearchCV(refit=True) over all
# families on the job's training split (same test_size, stratification and seed), then the
# holdout score. Timed as a whole command, like the job.
GRID_SEARCH_JOB = """
import sys, json, pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
sys.path.insert(0, "bench")
from search_data import SPACES, grids
df = pd.read_csv(sys.argv[1]); y = df.pop("target")
X_tr, X_te, y_tr, y_te = train_test_split(df, y, test_size=0.2, stratify=y, random_state=42)
pipe, param_grid = grids(SPACES[sys.argv[2]], list(df.columns))
folds = StratifiedKFold(5, shuffle=True, random_state=42)
gs = GridSearchCV(pipe, param_grid, cv=folds, n_jobs=-1, refit=True, scoring="accuracy")
gs.fit(X_tr, y_tr)
print(json.dumps({"cv": gs.best_score_, "holdout": gs.score(X_te, y_te)}))
"""


def job_files(
    X: pd.DataFrame, y: pd.Series, space: str, rf: float, work: Path
) -> tuple[Path, dict[str, Path]]:
    """The data as a CSV and one ``jobs/train.py`` config per scheduler (FIFO, ASHA)."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.csv"
    X.assign(target=y).to_csv(data, index=False)
    configs = {}
    for scheduler in ("fifo", "asha"):
        cfg = configs[scheduler] = work / f"{scheduler}.yaml"
        config = {
            "name": f"bench_{scheduler}",
            "data": {"path": str(data), "target": "target"},
            "cv": {"n_folds": N_FOLDS, "scoring": "accuracy"},
            "search": {
                "space": SPACES[space],
                "scheduler": scheduler,
                "asha": {"grace_period": 1, "reduction_factor": rf},
                "storage_path": str(work / DEFAULT_TUNE_STORAGE),
            },
            "registry": {"store": str(work / "store")},
        }
        cfg.write_text(yaml.safe_dump(config))
    return data, configs


def whole_jobs(
    X: pd.DataFrame, y: pd.Series, space: str, rf: float, work: Path, repeats: int = 3
) -> dict:
    """Seconds and best CV of ``python jobs/train.py`` (FIFO, ASHA) and of the GridSearchCV
    script: ``repeats`` rounds, each command once a round, the order reversed every other
    round (A B C, C B A, ...: drift in the machine's speed falls on every command alike);
    each command's median is what is judged."""
    data, configs = job_files(X, y, space, rf, work)
    commands = {
        "grid_search": [sys.executable, "-c", GRID_SEARCH_JOB, str(data), space],
        **{s: [sys.executable, "jobs/train.py", "--config", str(c)] for s, c in configs.items()},
    }
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for r in range(repeats):
        for key in commands if r % 2 == 0 else reversed(commands):
            seconds, out = _timed(commands[key])
            runs[key].append({"seconds": seconds, "best_cv": _best_cv(out)})
            print(f"  round {r + 1}: {key:<12} {seconds:6.1f} s", flush=True)
    return {
        k: {
            "runs": v,
            "seconds": statistics.median(x["seconds"] for x in v),
            "best_cv": statistics.median(x["best_cv"] for x in v),
        }
        for k, v in runs.items()
    }


def _best_cv(stdout: str) -> float:
    """The best CV mean a command printed: the GridSearchCV script's JSON, or the
    training job's summary line ``CV <scoring> <mean> ± <std>``."""
    if m := re.search(r"^CV \S+\s+([\d.]+) ±", stdout, re.M):
        return float(m.group(1))
    return float(json.loads(stdout.strip().splitlines()[-1])["cv"])


def _timed(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return time.perf_counter() - start, out


def judge_whole_jobs(jobs: dict) -> list[dict]:
    """Issue 20's targets for the whole commands: FIFO <= 1.05x and ASHA <= 0.7x of the
    GridSearchCV script (medians), each with the same best CV (+- 0.002)."""
    gs = jobs["grid_search"]
    out = []
    for key, goal in (("fifo", 1.05), ("asha", 0.7)):
        ratio = jobs[key]["seconds"] / gs["seconds"]
        delta = jobs[key]["best_cv"] - gs["best_cv"]
        met = ratio <= goal and abs(delta) <= 0.002
        out.append({"job": key, "ratio": ratio, "goal": goal, "delta_cv": delta, "met": met})
    return out


def in_process(
    X: pd.DataFrame, y: pd.Series, space: dict, args: argparse.Namespace, cpus: int, n_configs: int
) -> dict:
    """GridSearchCV and both Tune searches in this process, on a Ray started here."""
    gs_seconds, gs_best, gs_label = grid_search(X, y, space, cpus)
    print(f"GridSearchCV      {gs_seconds:8.1f} s   best {gs_best:.4f}  {gs_label}", flush=True)

    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    storage = str(Path("bench/results/ray_results").resolve())
    try:
        runs = {
            s: tune_search(X, y, space, s, storage, args.reduction_factor) for s in ("fifo", "asha")
        }
    finally:
        ray.shutdown()

    print(f"\n(ray.init took {ray_start:.1f} s, not counted)")
    print(
        f"{'search':<16}{'seconds':>9}{'x GridSearchCV':>16}{'best CV':>9}{'Δ best':>9}"
        f"{'folds run':>11}"
    )
    print(
        f"{'GridSearchCV':<16}{gs_seconds:>9.1f}{1.0:>16.2f}{gs_best:>9.4f}{0.0:>9.4f}"
        f"{n_configs * N_FOLDS:>11}"
    )
    for name, r in runs.items():
        print(
            f"{'Tune ' + name.upper():<16}{r['seconds']:>9.1f}{r['seconds'] / gs_seconds:>16.2f}"
            f"{r['best']:>9.4f}{r['best'] - gs_best:>+9.4f}"
            f"{r['folds_run']:>6}/{r['folds_total']}"
        )
    fifo, asha = runs["fifo"], runs["asha"]
    fifo_ok = fifo["seconds"] <= gs_seconds and abs(fifo["best"] - gs_best) <= 0.002
    asha_ok = asha["seconds"] <= 0.7 * gs_seconds and abs(asha["best"] - gs_best) <= 0.002
    print(
        f"\ntargets: FIFO <= 1.0x, |Δ best| <= 0.002 -> {fifo['seconds'] / gs_seconds:.2f}x "
        f"{fifo['best'] - gs_best:+.4f} {'OK' if fifo_ok else 'MISSED'};  "
        f"ASHA <= 0.70x, |Δ best| <= 0.002 -> {asha['seconds'] / gs_seconds:.2f}x "
        f"{asha['best'] - gs_best:+.4f} {'OK' if asha_ok else 'MISSED'}"
    )
    runs["grid_search"] = {"seconds": gs_seconds, "best": gs_best}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4k rows instead of 20k")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--space", choices=sorted(SPACES), default="broad")
    parser.add_argument("--reduction-factor", type=float, default=3, help="ASHA keeps 1/rf")
    parser.add_argument("--out", default="bench/results/tune_bench_{space}.json")
    parser.add_argument("--whole-job", action="store_true", help="also time the whole commands")
    parser.add_argument("--whole-job-only", action="store_true", help="only the whole commands")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the whole commands")
    args = parser.parse_args()
    rows = args.rows or (4000 if args.quick else 20000)
    cpus = os.cpu_count() or 1
    X, y = make_data(rows)
    space = SPACES[args.space]
    n_configs = len(expand_candidates(space, "grid", 1))
    print(
        f"data {rows} x {X.shape[1]}, space {args.space}: {n_configs} configs x {N_FOLDS} "
        f"folds, {cpus} CPUs, ASHA reduction factor {args.reduction_factor:g}"
    )

    runs: dict = {}
    if not args.whole_job_only:
        runs = in_process(X, y, space, args, cpus, n_configs)
    if args.whole_job or args.whole_job_only:
        print(f"\nwhole commands, {args.repeats} rounds (ABBA order):")
        jobs = whole_jobs(
            X, y, args.space, args.reduction_factor, Path("bench/results/jobs"), args.repeats
        )
        gs_job = jobs["grid_search"]
        print(
            f"GridSearchCV(refit=True) script: median {gs_job['seconds']:.1f} s, "
            f"best CV {gs_job['best_cv']:.4f}"
        )
        for t in judge_whole_jobs(jobs):
            print(
                f"  python jobs/train.py {t['job'].upper():<5} median "
                f"{jobs[t['job']]['seconds']:6.1f} s  {t['ratio']:.2f}x (target <= "
                f"{t['goal']:.2f}x), best CV {t['delta_cv']:+.4f}  "
                f"{'met' if t['met'] else 'MISSED'}"
            )
        runs["whole_job"] = {**jobs, "targets": judge_whole_jobs(jobs)}
    out = Path(args.out.format(space=args.space))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "space": args.space,
                "configs": n_configs,
                "cpus": cpus,
                "reduction_factor": args.reduction_factor,
                **runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
