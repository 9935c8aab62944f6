"""Serving benchmark: seed-style FastAPI server vs our Serve app, same artifact, same load.

    python bench/serve_bench.py [--duration 15]

Trains (or reuses) a random forest with 100 trees on 20 numeric features with the real
training job, then runs wrk (Debian's `wrk`; `make bench` installs it) against
(a) bench/seed_server.py and (b) serve_config.yaml deployed on a local `ray start --head`:
single-row requests at concurrency 1 and 32, and 1000-row requests at concurrency 4. It also
measures raw in-process ``predict_proba`` rows/s on 1000-row batches.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import make_classification

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sparc_ray.client import records  # noqa: E402
from sparc_ray.registry import ModelRegistry  # noqa: E402
from tests.integration.cluster import free_port, running_cluster  # noqa: E402

WORK = ROOT / "bench/results/serve"
NAME = "bench_rf"
SCENARIOS = [("1 row, c=1", 1, 1), ("1 row, c=32", 1, 32), ("1000 rows, c=4", 1000, 4)]


def train() -> tuple[ModelRegistry, str, pd.DataFrame]:
    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
    reg = ModelRegistry(WORK / "model_store")
    if not reg.versions(NAME):
        WORK.mkdir(parents=True, exist_ok=True)
        df.assign(label=np.where(y == 1, "yes", "no")).to_csv(WORK / "data.csv", index=False)
        (WORK / "job.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": NAME,
                    "data": {"path": str(WORK / "data.csv"), "target": "label"},
                    "cv": {"n_folds": 2},
                    "search": {
                        "scheduler": "fifo",
                        "storage_path": str(WORK / "ray_results"),
                        "space": {"random_forest": {"n_estimators": [100]}},
                    },
                    "registry": {"store": str(WORK / "model_store")},
                }
            )
        )
        subprocess.run(
            [sys.executable, str(ROOT / "jobs/train.py"), "--config", str(WORK / "job.yaml")],
            check=True,
            capture_output=True,
        )
    return reg, reg.resolve(NAME), df


def wrk(url: str, body: dict, connections: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            lua.name,
            f"{url}/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
    }


def run_scenarios(url: str, rows: list[dict], duration: int) -> dict:
    results = {}
    for label, n, conns in SCENARIOS:
        body = {"instances": rows[:n], "include_probabilities": True}
        assert httpx.post(f"{url}/predict", json=body, timeout=60).status_code == 200
        wrk(url, body, conns, 3)  # warm-up
        r = wrk(url, body, conns, duration)
        r["rows_per_s"] = r["rps"] * n
        results[label] = r
        print(
            f"  {label:<16} {r['rps']:8.1f} req/s {r['rows_per_s']:10.0f} rows/s  "
            f"p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  non-2xx {r['non2xx']}",
            flush=True,
        )
    return results


def run_seed(model_path: Path, extra: list[str], rows: list[dict], duration: int) -> dict:
    port = free_port()
    seed = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench/seed_server.py"),
            "--model-path",
            str(model_path),
            "--port",
            str(port),
            *extra,
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                httpx.get(f"{url}/docs", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        return run_scenarios(url, rows, duration)
    finally:
        seed.terminate()
        seed.wait()


def raw_rows_per_s(reg: ModelRegistry, version: str, df: pd.DataFrame) -> float:
    model, _ = reg.load(NAME, version)
    model.set_n_jobs(1)
    batch = df.head(1000)
    model.predict_proba(batch)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 5:
        model.predict_proba(batch)
        n += 1
    return n * 1000 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per scenario")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (make bench does it)")
    reg, version, df = train()
    rows = records(df.head(1000))
    raw = raw_rows_per_s(reg, version, df)
    print(f"model {NAME}/{version}: random forest, 100 trees, 20 features")
    print(f"raw in-process predict_proba (1000-row batches, 1 thread): {raw:,.0f} rows/s\n")

    seeds = {}
    for label, extra in (("as trained", []), ("n_jobs=1", ["--n-jobs", "1"])):
        print(f"seed-style FastAPI server, 1 uvicorn process, model threads {label}")
        seeds[label] = run_seed(reg.root_path / NAME / version, extra, rows, args.duration)

    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        config = cluster.serve_config()
        cfg = yaml.safe_load(config.read_text())
        cfg["applications"][0]["args"].update(model_store=str(reg.root_path), model_name=NAME)
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cluster.deploy(config)
        print("\nsparc-ray Serve app (serve_config.yaml, ray start --head)")
        serve_r = run_scenarios(cluster.url, rows, args.duration)

    big = serve_r["1000 rows, c=4"]
    for name, seed_r in seeds.items():
        s1, b1 = seed_r["1 row, c=32"], serve_r["1 row, c=32"]
        print(f"\nratios Serve / seed-style ({name}):")
        for label, _, _ in SCENARIOS:
            print(
                f"  {label:<16} throughput x{serve_r[label]['rps'] / seed_r[label]['rps']:.2f}"
                f"  p99 x{serve_r[label]['p99_ms'] / seed_r[label]['p99_ms']:.2f}"
            )
        print(
            f"targets: 1-row c=32 throughput >= 6x -> x{b1['rps'] / s1['rps']:.2f}; "
            f"p99 <= 0.25x -> x{b1['p99_ms'] / s1['p99_ms']:.2f}"
        )
    print(
        f"1000-row rows/s >= 0.6 of raw -> {big['rows_per_s'] / raw:.2f}; "
        f"non-2xx -> {sum(r['non2xx'] for r in serve_r.values())}"
    )
    out = ROOT / "bench/results/serve_bench.json"
    out.write_text(json.dumps({"raw_rows_per_s": raw, "seed": seeds, "serve": serve_r}, indent=2))


if __name__ == "__main__":
    main()
