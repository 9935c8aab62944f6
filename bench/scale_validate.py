"""Real runs of the training job on a multi-node Ray cluster (tests/cluster: a head without
CPUs plus W worker nodes, each in its own network namespace), turned into scale-model
profiles and checked against bench/scale_model.py's replay (within 15% of wall time).

    python bench/scale_validate.py --workers 1,2,3 --cpus-per-node 1 --space broad
    python bench/scale_model.py validate --runs bench/results/scale_validation/runs-broad.json
    python bench/scale_model.py predict --profile bench/results/scale_validation/broad-asha-w1.json

Per run: the job's wall time (Ray's job record: submitted -> driver exit), its Tune
experiment (fold scores), and Ray's task records: each fold task's start and end (named
``_fold_task <label> #<fold>``) and the refit. Overheads measured from the same records:
``driver_s`` (job start -> first fold start, plus refit end -> job end: Ray connect, Tune
setup, publish), ``refit_s``, ``trial_start_s`` (a trial's first fold start after the
previous trial's last fold end, median of positive gaps), ``node_warmup_s`` (first fold on
a node minus the same config's median fold). Needs root (network namespaces); on a machine
with more cores, raise --cpus-per-node and --workers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from scale_profile import profile_from_experiment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sparc_ray.registry import signing  # noqa: E402
from tests.cluster.nodes import MultiNodeCluster  # noqa: E402

SMALL = {  # 9 configurations on the bundled breast-cancer data (455 training rows)
    "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 8]},
    "logistic_regression": {"C": [0.1, 1.0, 10.0]},
    "hist_gradient_boosting": {"learning_rate": [0.05, 0.1], "max_iter": [100]},
}
N_FOLDS, ASHA = 5, {"grace_period": 1, "reduction_factor": 2}


def fold_label(task: dict[str, Any]) -> str | None:
    name = str(task.get("name") or "")
    return name[len("_fold_task ") :].rsplit(" #", 1)[0] if name.startswith("_fold_task ") else None


def overheads(job: dict, tasks: list[dict[str, Any]]) -> dict[str, float]:
    ran = [t for t in tasks if t.get("label") and t.get("start_time_ms") and t.get("end_time_ms")]
    folds = sorted(ran, key=lambda t: t["start_time_ms"])
    refit = [t for t in tasks if str(t.get("name")).endswith("_refit_task") and t["end_time_ms"]]
    start, end = job["start_time"] / 1000, job["end_time"] / 1000
    refit_start, refit_end = refit[-1]["start_time_ms"] / 1000, refit[-1]["end_time_ms"] / 1000
    first_fold = folds[0]["start_time_ms"] / 1000
    by_label: dict[str, list[float]] = {}
    for t in folds:
        by_label.setdefault(t["label"], []).append((t["end_time_ms"] - t["start_time_ms"]) / 1e3)
    warm = []
    for node in {t["node_id"] for t in folds}:
        first = next(t for t in folds if t["node_id"] == node)
        d = (first["end_time_ms"] - first["start_time_ms"]) / 1000
        warm.append(max(0.0, d - statistics.median(by_label[first["label"]])))
    return {
        "driver_s": (first_fold - start) + (end - refit_end),
        "refit_s": refit_end - refit_start,
        "node_warmup_s": statistics.median(warm) if warm else 0.0,
    }


def data_and_space(space: str, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's ``data`` section and search space: "small" (above) or tune_bench's "broad"
    (28 configurations on 20,000 synthetic rows x 20 features, as bench/tune_bench.py)."""
    if space == "small":
        return {"path": "builtin:breast_cancer", "target": "target"}, SMALL
    from search_data import SPACES, make_data

    X, y = make_data(20_000)
    X.assign(label=y).to_parquet(work / "data.parquet")
    return {"path": str(work / "data.parquet"), "target": "label"}, SPACES[space]


def one_run(workers: int, per_node: int, scheduler: str, space: str, out: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sparc-scale-") as tmp:
        work = Path(tmp)
        signing.generate_key_pair(work / "keys/model_signing")
        names = [f"node_{chr(ord('a') + i)}" for i in range(workers)]
        cluster = MultiNodeCluster(work, workers, trial_nodes=names, cpus_per_node=per_node)
        cluster.start()
        try:
            data, grid = data_and_space(space, work)
            cfg = {
                "name": "scale",
                "data": data,
                "cv": {"n_folds": N_FOLDS},
                "search": {"scheduler": scheduler, "asha": ASHA, "space": grid,
                           "storage_path": str(work / "ray_results")},
                "registry": {"store": str(work / "store")},
            }  # fmt: skip
            (work / "job.yaml").write_text(yaml.safe_dump(cfg))
            key = str(work / "keys/model_signing.key")
            train = [sys.executable, str(ROOT / "jobs/train.py"), "--config", "job.yaml"]
            sid = cluster.submit(*train, "--signing-key", key)
            job, log = cluster.wait_job(sid, timeout=1800)
            assert job["driver_exit_code"] == 0, log[-3000:]
            time.sleep(2)  # the last task events reach the GCS
            tasks = cluster.state("tasks", job_id=job["job_id"])
        finally:
            cluster.stop()
        for t in tasks:
            t["label"] = fold_label(t)
        (meta,) = (work / "store/scale").glob("*/metadata.json")
        experiment = json.loads(meta.read_text())["search"]["experiment_path"]
        ran = [t for t in tasks if t["label"] and t.get("start_time_ms")]
        prof = profile_from_experiment(experiment, ran, N_FOLDS)
    prof["search"] = {
        "scheduler": scheduler,
        **ASHA,
        "max_concurrent_trials": None,
        "cpus_per_fold": 1,
        "seed": 42,
    }  # fmt: skip  (data.seed: the job's)
    prof["overheads"] = overheads(job, tasks)
    prof["measured_on"] = {"cpus": workers * per_node}
    name = f"{space}-{scheduler}-w{workers}.json"
    (out / name).write_text(json.dumps(prof, indent=1))
    wall = (job["end_time"] - job["start_time"]) / 1000
    print(f"{scheduler} on {workers} x {per_node} CPU: {wall:.1f} s, {prof['overheads']}")
    return {"workers": workers, "cpus_per_node": per_node, "wall_s": wall, "profile": name}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,3", help="worker node counts to run")
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--schedulers", default="fifo,asha")
    p.add_argument("--space", choices=["small", "broad"], default="broad")
    p.add_argument("--out", default=str(ROOT / "bench/results/scale_validation"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [
        one_run(int(w), args.cpus_per_node, s, args.space, out)
        for s in args.schedulers.split(",")
        for w in args.workers.split(",")
    ]
    (out / f"runs-{args.space}.json").write_text(json.dumps(runs, indent=1))
    print(f"now: python bench/scale_model.py validate --runs {out}/runs-{args.space}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
