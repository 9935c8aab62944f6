"""Batch-scoring benchmark: ``sparc_ray.batch.job`` (Ray Data) vs a pandas + sklearn loop.

    python bench/score_bench.py                 # 1M rows x 20 features (16 numeric, 4 categorical)
    python bench/score_bench.py --rows 100000   # quicker

Both score the same CSV with the same published version: the baseline is what a user writes
instead, in one process: ``pd.read_csv(chunksize=100_000)`` and the version's scikit-learn
pipeline ``predict_proba`` per chunk (the signature-verified model, run once with one thread
and once with every CPU). Ours is ``scoring.run`` on a local Ray started here (its
start-up time printed apart), streaming into Parquet. Prints rows/s, the ratio, how many
predictions differ, and peak memory: the baseline process's RSS, and the summed unique
memory of our driver and Ray workers sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
from baselines import signed_pipeline

from sparc_ray.data.loading import normalize_features
from sparc_ray.registry import releases, signing
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import SPARCClassificationModel
from sparc_ray.training.onnx_export import export_onnx

NAME = "bench"
CATS = {"region": ["north", "south", "east", "west"], "tier": list("abcde")}


def make_rows(n: int, seed: int) -> pd.DataFrame:
    """16 numeric (2% missing) + 4 categorical features; the label depends on both."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 16))
    df = pd.DataFrame(X, columns=[f"x{i:02d}" for i in range(16)])
    for j, (name, values) in enumerate(list(CATS.items()) * 2):
        df[f"{name}{j}"] = rng.choice(values, size=n)
    score = X[:, 0] + 0.8 * X[:, 1] * X[:, 2] - 0.5 * X[:, 3] + (df["region0"] == "north") * 0.7
    df["label"] = np.where(score > 0.3, "yes", "no")
    df.loc[rng.random(n) < 0.02, "x04"] = np.nan
    return df


def publish(store: str, train: pd.DataFrame, family: str, key_dir: str) -> tuple[str, bytes]:
    X, y = train.drop(columns="label"), train["label"]
    params = {"random_forest": {"n_estimators": 100, "max_depth": 12}}.get(family, {})
    model = SPARCClassificationModel(
        {"model_type": family, "model": params, "cross_validation": {"n_folds": 3}}
    )
    model.fit(X, y)
    onnx, report = export_onnx(model, X.head(500))
    private, public = signing.generate_key_pair(os.path.join(key_dir, "k"))
    meta = {
        "gates": {"passed": True},
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "input_limits": model.input_limits(),
        "onnx": report,
    }
    reg = ModelRegistry(store)
    key = signing.load_private_key(str(private))
    version = reg.publish(NAME, model, meta, {report["file"]: onnx}, signing_key=key)
    releases.promote(reg, NAME, version, by="bench")
    return version, signing.public_key_bytes(str(public))


def baseline(store: str, csv: str, public_key: bytes, n_jobs: int) -> tuple[float, np.ndarray]:
    reg = ModelRegistry(store)
    model, meta = signed_pipeline(reg, NAME, reg.resolve(NAME), public_key)
    model.set_n_jobs(n_jobs)
    features = meta.feature_names
    started, labels = time.perf_counter(), []
    for chunk in pd.read_csv(csv, chunksize=100_000):
        proba = model.predict_proba(normalize_features(chunk[features]))
        labels.append(np.asarray(model.classes, dtype=object)[proba.argmax(axis=1)])
    return time.perf_counter() - started, np.concatenate(labels)


class MemorySampler(threading.Thread):
    """Peak of the summed unique memory (USS: not the object store's shared pages, which
    RSS counts once per process mapping them) of this process and every Ray worker."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._done = 0, threading.Event()
        self.by_process: dict[str, int] = {}  # peak USS per process (name and pid)

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.2):
            procs = [me] + [
                p
                for p in psutil.process_iter(["name"])
                if (p.info["name"] or "").startswith("ray::")
            ]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    uss = p.memory_full_info().uss
                    total += uss
                    key = f"{p.name()} {p.pid}"
                    self.by_process[key] = max(self.by_process.get(key, 0), uss)
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--family", default="random_forest")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="bench/results/score_bench.json")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="score-bench-")
    store, csv = os.path.join(work, "store"), os.path.join(work, "rows.csv")
    version, public_key = publish(store, make_rows(20_000, 1), args.family, work)
    rows = make_rows(args.rows, 2)
    pacsv.write_csv(pa.Table.from_pandas(rows, preserve_index=False), csv)
    size_mb = os.path.getsize(csv) / 1e6
    print(f"{args.rows:,} rows x 20 features, {size_mb:.0f} MB CSV; model {args.family} {version}")

    results = {"rows": args.rows, "family": args.family, "csv_mb": round(size_mb, 1)}
    for n_jobs in (1, args.cpus):
        seconds, expected = baseline(store, csv, public_key, n_jobs)
        results[f"baseline_n_jobs_{n_jobs}_s"] = round(seconds, 2)
        print(
            f"pandas + sklearn loop, n_jobs={n_jobs}: {seconds:.1f} s, "
            f"{args.rows / seconds:,.0f} rows/s"
        )
    results["baseline_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )

    import ray

    from sparc_ray.batch.job import ScorePlan, run

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    results["ray_start_s"] = round(time.perf_counter() - started, 2)
    sampler = MemorySampler()
    sampler.start()
    try:
        plan = ScorePlan.check(csv, NAME, store, os.path.join(work, "out"), public_key=public_key)
        summary = run(plan)
    finally:
        results["ours_peak_uss_mb"] = round(sampler.stop() / 1e6)
        results["ours_peak_uss_mb_by_process"] = {
            k: round(v / 1e6) for k, v in sorted(sampler.by_process.items(), key=lambda kv: -kv[1])
        }
        ray.shutdown()
    got = pd.read_parquet(os.path.join(work, "out", "predictions")).sort_values("row_id")
    assert len(got) == args.rows, (len(got), summary)
    differ = int((got["prediction"].to_numpy() != expected[got["row_id"].to_numpy()]).sum())
    results.update(
        ours_s=summary["seconds"],
        engine=summary["engine"],
        predictions_differing=differ,
        ratio_vs_one_thread=round(results["baseline_n_jobs_1_s"] / summary["seconds"], 2),
        ratio_vs_all_cpus=round(results[f"baseline_n_jobs_{args.cpus}_s"] / summary["seconds"], 2),
    )
    print(
        f"sparc-ray score (Ray Data, {summary['actors']} actors, {summary['engine']}): "
        f"{summary['seconds']:.1f} s, {summary['rows_per_second']:,.0f} rows/s "
        f"(Ray start {results['ray_start_s']:.1f} s apart)\n"
        f"speed-up: {results['ratio_vs_one_thread']:.2f}x the one-thread loop, "
        f"{results['ratio_vs_all_cpus']:.2f}x the {args.cpus}-thread loop; "
        f"{differ} of {args.rows:,} predictions differ\n"
        f"peak memory: baseline process {results['baseline_peak_rss_mb']} MB (RSS), "
        f"ours {results['ours_peak_uss_mb']} MB (USS, driver + Ray workers)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
