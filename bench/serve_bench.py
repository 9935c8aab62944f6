"""Serving benchmark: our Serve app vs what a user would run instead, same artifact, same load.

    python bench/serve_bench.py [--duration 15] [--only serve,uvicorn,uvicorn_onnx,mlserver,seed]
                                [--store PATH [--name bench_rf]]

Trains (or reuses) a random forest with 100 trees on 20 numeric features with the real
training job (``--store`` uses an existing registry instead: no Ray at all unless ``serve`` is
run), then runs wrk (Debian's `wrk`; `make bench` installs it) against
(a) serve_config.yaml deployed on a local `ray start --head`, (b) bench/uvicorn_server.py under
`uvicorn --workers 2` with the scikit-learn pipeline and (b') with the same signed model.onnx
under onnxruntime (the one-box limit), (c) MLServer 1.7.1 with adaptive batching and 2
parallel workers (its own venv, bench/.mlserver-venv, created on first use) and (d)
bench/seed_server.py:
single-row requests at concurrency 1, 8, 32 and 128, and 1000-row requests at concurrency 4.
The Serve app is also driven through its Open Inference Protocol (V2) infer route (the body
MLServer gets) and with ``"explain": true`` (one row at c=1, 100 rows at c=2).
It also measures raw in-process ``predict_proba`` rows/s on 1000-row batches and the model
cost per call (sklearn vs ONNX). Targets are judged by bench/serve_targets.py; figures go to
bench/results/serve_bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pandas as pd
import yaml
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import (  # noqa: E402
    Target,
    drain,
    mlserver_server,
    ours_body,
    ours_proba,
    seed_server,
    signed_pipeline,
    uvicorn_server,
    v2_body,
    v2_proba,
    wrk,
)
from serve_targets import BIG, C1, C32, EXPLAIN_BIG, compare  # noqa: E402
from served_model import (  # noqa: E402
    NAME,
    WORK,
    dataset,
    explain_cost,
    model_cost,
    raw_rows_per_s,
    signing_keys,
    train,
)

from sparc_ray.registry.signing import public_key_bytes  # noqa: E402
from sparc_ray.registry.store import ModelRegistry  # noqa: E402

if TYPE_CHECKING:
    from tests.integration.cluster import Cluster

OUT = ROOT / "bench/results/serve_bench.json"
WARMUP_S = 8
SERVERS = ("uvicorn", "uvicorn_onnx", "mlserver", "seed", "serve")  # run order: Ray last
SCENARIOS = [(f"1 row, c={c}", 1, c) for c in (1, 8, 32, 128)] + [(BIG, 1000, 4)]
# Explaining costs ~trees x leaves x depth^2 per row (TreeSHAP): 100-row requests
# (max_explain_instances) stay within the HTTP timeout on fully grown forests.
# The same app through its other routes: V2 infer, and /predict with explanations.
EXTRA_SCENARIOS = {
    "serve_v2": [s for s in SCENARIOS if s[0] in (C1, C32, BIG)],
    "serve_explain": [(C1, 1, 1), (EXPLAIN_BIG, 100, 2)],
}


def check(
    target: Target, df: pd.DataFrame, expected: np.ndarray, sizes: tuple[int, ...] = (1, 1000)
) -> float:
    """A real response must carry the in-process pipeline's probabilities. Returns the
    seconds a quiet server takes for one row (best of five)."""
    quiet = []
    for _ in range(5):
        start = time.perf_counter()
        httpx.post(target.url, json=target.make_body(df.head(1)), timeout=60)
        quiet.append(time.perf_counter() - start)
    for n in sizes:
        r = httpx.post(target.url, json=target.make_body(df.head(n)), timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{target.name}: HTTP {r.status_code} {r.text[:500]}")
        got = target.read_proba(r.json())
        if got.shape != (n, expected.shape[1]) or not np.allclose(got, expected[:n], atol=1e-6):
            raise RuntimeError(f"{target.name}: probabilities differ from in-process sklearn")
    return min(quiet)


def run_scenarios(
    key: str,
    target: Target,
    df: pd.DataFrame,
    duration: int,
    quiet: float,
    scenarios: list[tuple[str, int, int]] = SCENARIOS,
):
    print(f"\n{target.name}", flush=True)
    results, probe = {}, target.make_body(df.head(1))
    for label, n, conns in scenarios:
        body = WORK / "bodies" / f"{key}-{n}.json"
        body.parent.mkdir(parents=True, exist_ok=True)
        body.write_text(json.dumps(target.make_body(df.head(n))))
        wrk(target.url, body, conns, WARMUP_S)  # warm-up: caches, autoscaling settle
        drain(target.url, probe, max(0.1, 4 * quiet))
        r = wrk(target.url, body, conns, duration)
        drain(target.url, probe, max(0.1, 4 * quiet))
        r["rows_per_s"] = r["rps"] * n
        results[label] = r
        print(
            f"  {label:<16} {r['rps']:8.1f} req/s {r['rows_per_s']:10.0f} rows/s  "
            f"p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  non-2xx {r['non2xx']}",
            flush=True,
        )
    return results


@contextlib.contextmanager
def deployed_app(reg: ModelRegistry, name: str, **overrides: dict) -> Iterator[Cluster]:
    """serve_config.yaml deployed on a fresh local cluster, serving ``name`` from ``reg``
    (``overrides``: per deployment, as ``Cluster.serve_config`` takes them)."""
    from tests.integration.cluster import running_cluster  # Ray only for this server

    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        config = cluster.serve_config(**overrides)
        cfg = yaml.safe_load(config.read_text())
        cfg["applications"][0]["args"].update(
            model_store=str(reg.root_path), model_name=name, public_key=str(signing_keys()[1])
        )
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cluster.deploy(config)
        yield cluster


@contextlib.contextmanager
def serve_app(reg: ModelRegistry, name: str) -> Iterator[Target]:
    with deployed_app(reg, name) as cluster:
        try:
            yield Target("sparc-ray Serve app", f"{cluster.url}/predict", ours_body, ours_proba)
        finally:  # a replica added or removed mid-scenario moves its figures: say if one was
            events = cluster.scaling_events()
            print(
                "\nServe's autoscaling decisions during the run:", *events or ["none"], sep="\n  "
            )


def extra_targets(predict_url: str, name: str) -> dict[str, Target]:
    """The Serve app's V2 infer route, and /predict asking for explanations."""
    v2 = predict_url.replace("/predict", f"/v2/models/{name}/infer")

    def explain_body(frame: pd.DataFrame) -> dict:
        return {**ours_body(frame), "explain": True}

    return {
        "serve_v2": Target("sparc-ray V2 infer", v2, v2_body, v2_proba),
        "serve_explain": Target(
            "sparc-ray /predict explain", predict_url, explain_body, ours_proba
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per scenario")
    parser.add_argument(
        "--only", default=",".join(SERVERS), help="comma list of " + ",".join(SERVERS)
    )
    parser.add_argument("--store", help="existing registry to use (skips training)")
    parser.add_argument("--name", default=NAME, help="model name in --store")
    args = parser.parse_args()
    only = [s for s in SERVERS if s in args.only.split(",")]
    if unknown := set(args.only.split(",")) - set(SERVERS):
        sys.exit(f"unknown servers {sorted(unknown)}; choose from {SERVERS}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make bench does it)")
    name = args.name if args.store else NAME
    df = dataset()
    reg = ModelRegistry(args.store) if args.store else train(df)
    version = reg.resolve(name)
    public_pem = signing_keys()[1]
    model, _ = signed_pipeline(reg, name, version, public_key_bytes(str(public_pem)))
    model.set_n_jobs(1)
    with threadpool_limits(1):
        expected = model.predict_proba(df.head(1000))
        raw = raw_rows_per_s(model, df)
        print(f"model {name}/{version}: random forest, 100 trees, 20 features")
        print(f"raw in-process predict_proba (1000-row batches, 1 thread): {raw:,.0f} rows/s")
        cost = model_cost(reg, name, version, model, df)
        cost["explain"] = explain_cost(reg, name, version, model, df)

    logs = WORK / "logs"
    starters = {
        "uvicorn": lambda: uvicorn_server(reg.root_path, name, version, public_pem, logs),
        "uvicorn_onnx": lambda: uvicorn_server(
            reg.root_path, name, version, public_pem, logs, engine="onnx"
        ),
        "mlserver": lambda: mlserver_server(
            reg, name, version, public_key_bytes(str(public_pem)), WORK, logs
        ),
        "seed": lambda: seed_server(reg.root_path / name / version, logs),
        "serve": lambda: serve_app(reg, name),
    }
    results, labels = {}, {}
    for key in only:
        with starters[key]() as target:
            quiet = check(target, df, expected)
            labels[key] = target.name
            results[key] = run_scenarios(key, target, df, args.duration, quiet)
            if key == "serve":  # the same app through its other routes
                for extra, other in extra_targets(target.url, name).items():
                    quiet = check(other, df, expected, (1, 100))
                    labels[extra] = other.name
                    scenarios = EXTRA_SCENARIOS[extra]
                    results[extra] = run_scenarios(
                        extra, other, df, args.duration, quiet, scenarios
                    )

    ratios, targets = compare(results, raw)
    for key, per_scenario in ratios.items():
        print(f"\nratios Serve / {labels[key]} (throughput, p50, p99):")
        for s, r in per_scenario.items():
            print(f"  {s:<16} x{r['rps']:6.2f}  p50 x{r['p50_ms']:5.2f}  p99 x{r['p99_ms']:5.2f}")
    if targets:
        print("\ntargets:")
        for t in targets:
            status = "met" if t["met"] else "MISSED"
            print(f"  {t['target']:<44} {t['goal']:>4} -> {t['value']:7.2f}  {status}")
    else:
        print("\ntargets: not judged (they need the serve run)")
    bad = {labels[k]: sum(r["non2xx"] for r in v.values()) for k, v in results.items()}
    if any(bad.values()):
        print(f"non-2xx responses: {bad}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "model": {"store": reg.store, "name": name, "version": version},
                "duration_s": args.duration,
                "raw_rows_per_s": raw,
                "model_cost": cost,
                "servers": {k: {"label": labels[k], "scenarios": v} for k, v in results.items()},
                "ratios": ratios,
                "targets": targets,
            },
            indent=2,
        )
    )
    print(f"\nfigures: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
