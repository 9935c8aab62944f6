"""What a release costs the clients: single-row /predict at c=8 with no release, with a shadow
release (every request copied to the candidate) and with a 20% canary, same app, same run.

    python bench/release_bench.py [--duration 10] [--rounds 3]

Uses the serving benchmark's model (bench/serve_bench.py trains it on first use) plus a second
version trained by the same job (``--no-promote``), deploys serve_config.yaml on a local
`ray start --head`, and alternates the modes round by round (wrk, 3 s warm-up each) so drift
in the machine's state hits every mode alike. The releases use a policy that only measures
(no automatic decision). Prints p50 / p99 / req/s per mode and p50 ratios against no release;
figures go to bench/results/release_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import ours_body, wrk  # noqa: E402
from serve_bench import serve_app  # noqa: E402
from served_model import NAME, WORK, dataset, signing_keys, train  # noqa: E402

from sparc_ray.registry.releases import (  # noqa: E402
    ReleasePolicy,
    current_release,
    finish_release,
    start_release,
)
from sparc_ray.registry.store import ModelRegistry  # noqa: E402

OUT = ROOT / "bench/results/release_bench.json"
MEASURE_ONLY = ReleasePolicy(auto_promote=False, auto_rollback=False)
MODES = ("no release", "shadow 100%", "canary 20%")


def candidate(reg: ModelRegistry) -> str:
    """A second version of the benchmark model (same features), trained once."""
    if len(reg.versions(NAME)) < 2:
        job = [sys.executable, str(ROOT / "jobs/train.py"), "--config", str(WORK / "job.yaml")]
        key = ["--signing-key", str(signing_keys()[0])]
        subprocess.run([*job, "--no-promote", *key], check=True, capture_output=True)
    production = reg.alias(NAME)
    return next(v for v in reversed(reg.versions(NAME)) if v != production)


def set_mode(reg: ModelRegistry, url: str, mode: str, version: str) -> None:
    if (running := current_release(reg, NAME)) is not None:
        finish_release(reg, NAME, running.id, "aborted", "benchmark")
    if mode != "no release":
        kind, weight = mode.split()
        start_release(reg, NAME, version, kind, float(weight.rstrip("%")), MEASURE_ONLY)
    deadline = time.time() + 30
    while time.time() < deadline:  # every replica follows within poll_interval_s
        release = httpx.get(f"{url}/health", timeout=30).json()["release"]
        running = current_release(reg, NAME)
        if (release or {}).get("id") == (running and running.id):
            break
        time.sleep(0.5)
    time.sleep(1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    df = dataset()
    reg = train(df)
    version = candidate(reg)
    body = WORK / "bodies" / "release-1.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text(json.dumps(ours_body(df.head(1))))
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    with serve_app(reg, NAME) as target:
        base = target.url.rsplit("/", 1)[0]
        for r in range(args.rounds):
            for mode in MODES:
                set_mode(reg, base, mode, version)
                wrk(target.url, body, 8, 3)  # warm-up
                result = wrk(target.url, body, 8, args.duration)
                if mode.startswith("shadow"):
                    result["shadow"] = httpx.get(f"{base}/health").json()["release_evidence"]
                runs[mode].append(result)
                print(
                    f"round {r + 1} {mode:<12} {result['rps']:7.1f} req/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                    f"non-2xx {result['non2xx']}",
                    flush=True,
                )
        set_mode(reg, base, "no release", version)
    summary = {
        mode: {
            key: statistics.median(run[key] for run in results)
            for key in ("rps", "p50_ms", "p99_ms")
        }
        | {"non2xx": sum(run["non2xx"] for run in results)}
        for mode, results in runs.items()
    }
    base_p50 = summary["no release"]["p50_ms"]
    print("\nmedian over rounds (c=8, 1 row):")
    for mode, s in summary.items():
        s["p50_vs_no_release"] = s["p50_ms"] / base_p50
        print(
            f"  {mode:<12} {s['rps']:7.1f} req/s  p50 {s['p50_ms']:6.2f} ms "
            f"({s['p50_vs_no_release']:.3f}x)  p99 {s['p99_ms']:6.2f} ms  non-2xx {s['non2xx']}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
