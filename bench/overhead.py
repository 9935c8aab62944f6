"""Where a job's wall time goes: each stage of ``jobs/train.py`` and ``jobs/score.py`` in
seconds and as a share of the run, beside the one-process script a user would write instead.

    python bench/overhead.py                    # both jobs, the data of the benchmarks below
    python bench/overhead.py --job train --schedulers asha --rows 20000 --space broad
    python bench/overhead.py --job score --score-rows 5000000 --family logistic_regression

Training: search_data.py's data and space, tune_bench.py's ``--whole-job`` configs (plus a
signing key, as ``make demo`` signs), against its ``GridSearchCV(refit=True)`` script, both as
whole commands. Scoring: score_bench.py's rows, model and one-thread pandas loop.

Each job runs unchanged as its own command (bench/overhead_probe.py: wrappers time the job's
own functions in-process, Ray's state API gives worker, actor and task start / end times,
Ray Data its per-operator stats). The stages nest and add up to the command's wall time; the
probe's own reads of Ray's state are taken out. Results: bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import overhead_stages as st

REST = {
    "total": "other driver work",
    "run_training": "split, holdout metrics, metadata",
    "ONNX export + parity": "parity check",
    "registry write": "pickle, sha256, files written",
    "run()": "setup, row counts, summary.json",
}


def probe(kind: str, job_args: list[str], out: Path) -> dict[str, Any]:
    """Run one job under bench/overhead_probe.py (its records: ``out``, ``out.state``,
    ``out.scorer/``); the record, Ray's state and the command's wall time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(f"{out}.scorer", ignore_errors=True)  # an earlier run's
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, str(Path(__file__).with_name("overhead_probe.py")), kind, str(out)]
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run([*cmd, *job_args], env=env, capture_output=True, text=True)
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads(out.read_text())
    record["state"] = json.loads(Path(f"{out}.state").read_text())
    scorer = {p.stem: _jsonl(p) for p in Path(f"{out}.scorer").glob("*.jsonl")}
    return record | {"t0": t0, "t1": t1, "load_before": load, "scorer": scorer}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _spans(record: dict[str, Any]) -> list[st.Span]:
    return [(s[0], s[1], s[2]) for s in record["spans"]]


def _span(spans: list[st.Span], name: str) -> st.Span | None:
    return next((s for s in spans if s[0] == name), None)


def _points(points: dict[str, float | None]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in points.items() if v is not None]


def breakdown(
    record: dict[str, Any], spans: list[st.Span], lead: str, trail: str
) -> dict[str, Any]:
    excluded = [(s[0], s[1], s[2]) for s in record["excluded"]]
    root = st.nest(spans, record["t0"], record["t1"])
    total = st.net(record["t0"], record["t1"], excluded)
    return {"total_s": total, "stages": st.rows(root, excluded, REST, lead, trail)}


def train_stages(record: dict[str, Any]) -> dict[str, Any]:
    spans, ms = _spans(record), st.train_milestones(record["state"])
    if fit := _span(spans, "Tune fit"):
        spans += st.phases(fit[1], fit[2], _points(ms["points"]), "to Tune fit returned")
    if refit := _span(spans, "refit"):
        spans += st.phases(refit[1], refit[2], _points(ms["refit"]), "to refit returned")
    out = breakdown(record, spans, "python start + imports, config", "summary, exit")
    return out | {"milestones": _offsets(ms["points"] | ms["refit"], record["t0"]), **ms}


def score_stages(record: dict[str, Any]) -> dict[str, Any]:
    spans, work = _spans(record), st.scorer_work(record["scorer"])
    calls = [r for rs in record["scorer"].values() for r in rs if "call" in r]
    ms = st.score_milestones(record["state"], calls)
    if ex := _span(spans, "Ray Data execution"):
        spans += st.phases(ex[1], ex[2], _points(ms["points"]), "to execution finished")
    out = breakdown(record, spans, "python start + imports", "summary, exit")
    data = record["state"].get("data_stats", [])
    return (
        out
        | {"milestones": _offsets(ms["points"], record["t0"]), "scorer": work, **ms}
        | {"ray_data_operators": data}
    )


def _offsets(points: dict[str, float | None], t0: float) -> dict[str, float | None]:
    return {k: None if v is None else round(v - t0, 3) for k, v in points.items()}


def show(title: str, result: dict[str, Any], baseline: tuple[str, float]) -> None:
    print(f"\n== {title} (1-minute load average before: {result['load_before']:.2f})")
    print(st.table(result["stages"]))
    name, seconds = baseline
    print(f"{'total (the whole command)':<62}{result['total_s']:>9.2f}{1:>8.0%}")
    print(f"{name:<62}{seconds:>9.2f}   job = {result['total_s'] / seconds:.2f}x")
    marks = ", ".join(f"{k} {v:.1f}" for k, v in result["milestones"].items() if v is not None)
    w = result["workers"]
    first = "" if w["first_ready"] is None else f"{w['first_ready'] - result['t0']:.1f} s; "
    print(f"milestones (s from the command's start): {marks}")
    print(
        f"worker processes: {w['started']} started ({w['never_ran_a_task']} never ran a task), "
        f"first ready at {first}start-up {w['startup_s_summed']:.1f} s summed",
        flush=True,
    )


def run_train(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import search_data
    import tune_bench

    from sparc_ray.registry import signing

    X, y = search_data.make_data(args.rows)
    data, configs = tune_bench.job_files(X, y, args.space, args.reduction_factor, work)
    key, _ = signing.generate_key_pair(work / "signing")
    print(f"training: {args.rows:,} rows x {X.shape[1]}, space {args.space}", flush=True)
    gs, _ = tune_bench._timed(
        [sys.executable, "-c", tune_bench.GRID_SEARCH_JOB, str(data), args.space]
    )
    out: dict[str, Any] = {"rows": args.rows, "space": args.space, "grid_search_script_s": gs}
    for scheduler in args.schedulers:
        job = ["--config", str(configs[scheduler]), "--signing-key", str(key)]
        record = probe("train", job, args.probes / f"train-{scheduler}.json")
        result = train_stages(record) | {"t0": record["t0"], "load_before": record["load_before"]}
        show(
            f"python jobs/train.py, {scheduler.upper()}",
            result,
            ("GridSearchCV(refit=True) script", gs),
        )
        w, p = result["work"], result["points"]
        busy = w["fold tasks, summed s"]
        if p["first fold task running"] and p["last fold finished"]:
            span = p["last fold finished"] - p["first fold task running"]
            result["fold_cpu_use"] = busy / (span * (os.cpu_count() or 1))
        print(
            f"trial actors: {w['trial actors started']}, start-up "
            f"{w['trial actor start-up (creation task), summed s']:.1f} s summed; fold tasks: "
            f"{w['fold tasks run']}, {busy:.1f} s summed = "
            f"{result.get('fold_cpu_use', 0):.0%} of the CPUs from the first fold to the last"
        )
        out[scheduler] = result
    return out


def run_score(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import score_bench

    store, csv = work / "store", work / "rows.csv"
    version, public_key = score_bench.publish(
        str(store), score_bench.make_rows(20_000, 1), args.family, str(work)
    )
    rows = score_bench.make_rows(args.score_rows, 2)
    pacsv.write_csv(pa.Table.from_pandas(rows, preserve_index=False), csv)
    del rows
    print(f"\nscoring: {args.score_rows:,} rows x 20, {args.family} {version}", flush=True)
    loop_cmd = score_bench.loop_command(str(store), str(csv), public_key, str(work / "loop.pq"))
    loop, _ = score_bench.timed_tree(loop_cmd, {**os.environ, "RAY_ADDRESS": ""})
    job = ["--data", str(csv), "--name", score_bench.NAME, "--store", str(store)]
    job += ["--out", str(work / "out"), "--public-key", str(work / "k.pub")]
    record = probe("score", job, args.probes / "score.json")
    result = score_stages(record) | {"t0": record["t0"], "load_before": record["load_before"]}
    show("python jobs/score.py", result, ("pandas read + predict_proba loop, 1 thread", loop))
    s = result["scorer"]
    by_actor = ", ".join(
        f"{s['batches_by_actor'][p]} batches / {busy:.1f} s"
        for p, busy in s["busy_s_by_actor"].items()
    )
    print(
        f"scoring actors: start-up {result['actor_startup_s_summed']:.1f} s summed (BatchScorer "
        f"init {s['init_s']:.1f} s); {s['batches']} batches, {s['calls_s']:.1f} s in calls = "
        f"check {s['check_s']:.1f} + model {s['score_s']:.1f} + output {s['rest_s']:.1f}; "
        f"by actor: {by_actor}"
    )
    for op in result["ray_data_operators"]:
        print(f"Ray Data {op['operator']}: task wall {op['wall_s']:.1f} s summed")
    return {"rows": args.score_rows, "family": args.family, "loop_1_thread_s": loop, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=("train", "score", "both"), default="both")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows")
    parser.add_argument("--space", choices=("broad", "narrow"), default="broad")
    parser.add_argument(
        "--schedulers", nargs="+", choices=("fifo", "asha"), default=["fifo", "asha"]
    )
    parser.add_argument("--reduction-factor", type=float, default=3)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--family", default="random_forest", help="the scored model's family")
    parser.add_argument("--out", default="bench/results/overhead.json")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, results -> {args.out}", flush=True)
    args.probes = Path(args.out).with_suffix("")  # each job's raw records (Ray's included)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        if args.job in ("train", "both"):
            results["train"] = run_train(args, Path(tmp) / "train")
        if args.job in ("score", "both"):
            (Path(tmp) / "score").mkdir()
            results["score"] = run_score(args, Path(tmp) / "score")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
