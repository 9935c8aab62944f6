"""Hyperparameter-search benchmark: GridSearchCV vs our Tune search (FIFO and ASHA over folds).

    python bench/tune_bench.py            # 20k rows x 20 features, 28 configs, 5 folds
    python bench/tune_bench.py --quick    # 4k rows, for development

All three searches run in this one process on the same data, the same pipelines
(sparc_ray.models.build_pipeline) and the same stratified folds (shuffle, seed 42), so their
CV scores are comparable. GridSearchCV runs once per model family with n_jobs = all CPUs and
refit=False; our searches are timed from Tuner construction to the end of ``fit()`` on an
already started local Ray (Ray's start-up time is printed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sparc_ray.models import build_pipeline
from sparc_ray.tuning import build_tuner, expand_candidates, run_search

SPACES = {
    # A first, broad search: most configurations are clearly weaker after one fold, the
    # situation ASHA is made for. 8 + 8 + 12 = 28 configurations.
    "broad": {
        "random_forest": {
            "n_estimators": [60],
            "max_depth": [3, 6, 10, None],
            "min_samples_leaf": [1, 20],
        },
        "logistic_regression": {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0]},
        "hist_gradient_boosting": {
            "learning_rate": [0.01, 0.1, 0.3],
            "max_leaf_nodes": [4, 31],
            "max_iter": [30, 100],
        },
    },
    # A narrow search around good settings: the expensive deep forests are all near the
    # best, so ASHA can stop little. 8 + 8 + 12 = 28 configurations.
    "narrow": {
        "random_forest": {
            "n_estimators": [50, 100],
            "max_depth": [8, None],
            "min_samples_leaf": [1, 4],
        },
        "logistic_regression": {"C": [0.001, 0.01, 0.1, 1.0], "class_weight": [None, "balanced"]},
        "hist_gradient_boosting": {
            "learning_rate": [0.05, 0.1, 0.2],
            "max_leaf_nodes": [15, 31],
            "max_iter": [50, 100],
        },
    },
}
N_FOLDS = 5


def make_data(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    X, y = make_classification(
        n_samples=rows,
        n_features=20,
        n_informative=10,
        n_redundant=4,
        flip_y=0.03,
        class_sep=0.8,
        random_state=0,
    )
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]), pd.Series(y)


def grid_search(X: pd.DataFrame, y: pd.Series, space: dict, cpus: int) -> tuple[float, float, str]:
    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=42)
    best, label, start = -1.0, "", time.perf_counter()
    for family, params in space.items():
        pipe = build_pipeline(family, {}, list(X.columns), [])
        grid = {f"classifier__{k}": v for k, v in params.items()}
        gs = GridSearchCV(pipe, grid, cv=folds, n_jobs=cpus, refit=False, scoring="accuracy")
        gs.fit(X, y)
        if gs.best_score_ > best:
            best, label = float(gs.best_score_), f"{family}{gs.best_params_}"
    return time.perf_counter() - start, best, label


def tune_search(
    X: pd.DataFrame, y: pd.Series, space: dict, scheduler: str, storage: str, rf: float
) -> dict:
    search = {
        "space": space,
        "sampler": "grid",
        "num_samples": 1,
        "scheduler": scheduler,
        "asha": {"grace_period": 1, "reduction_factor": rf},
        "cpus_per_trial": 1,
        "max_concurrent_trials": None,
        "storage_path": storage,
    }
    cv = {"n_folds": N_FOLDS, "scoring": "accuracy"}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4k rows instead of 20k")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--space", choices=sorted(SPACES), default="broad")
    parser.add_argument("--reduction-factor", type=float, default=3, help="ASHA keeps 1/rf")
    parser.add_argument("--out", default="bench/results/tune_bench_{space}.json")
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

    gs_seconds, gs_best, gs_label = grid_search(X, y, space, cpus)
    print(f"GridSearchCV      {gs_seconds:8.1f} s   best {gs_best:.4f}  {gs_label}", flush=True)

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
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
    asha_ok = asha["seconds"] <= 0.5 * gs_seconds and abs(asha["best"] - gs_best) <= 0.005
    print(
        f"\ntargets: FIFO <= 1.10x  -> {fifo['seconds'] / gs_seconds:.2f}x "
        f"{'OK' if fifo['seconds'] <= 1.1 * gs_seconds else 'MISSED'};  "
        f"ASHA <= 0.50x and |Δ best| <= 0.005 -> {asha['seconds'] / gs_seconds:.2f}x, "
        f"{asha['best'] - gs_best:+.4f} "
        f"{'OK' if asha_ok else 'MISSED'}"
    )
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
                "grid_search": {"seconds": gs_seconds, "best": gs_best},
                **runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
