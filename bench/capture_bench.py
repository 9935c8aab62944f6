"""What traffic capture costs the clients: single-row /predict at c=32 with the capture off
and at 100% sampling, same app, same run.

    python bench/capture_bench.py [--duration 10] [--rounds 6]

Uses the serving benchmark's model (bench/serve_bench.py trains it on first use), deploys
serve_config.yaml on a local `ray start --head` and switches the Postprocessor's
``capture_rate`` between 0 and 1 with `serve deploy` (``reconfigure`` in place, no replica
restarts), in ABBA order (off-on, on-off, ...) so that drift in the machine's state hits both
modes alike. Prints req/s and p50 / p99 per mode, the throughput ratio of each adjacent
on/off pair and their median, and how many rows were captured (files) and dropped (metrics);
figures go to bench/results/capture_bench.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import ours_body, wrk  # noqa: E402
from served_model import NAME, WORK, dataset, signing_keys, train  # noqa: E402

from sparc_ray.data.captured import read_predictions  # noqa: E402
from sparc_ray.registry.layout import capture_root  # noqa: E402
from tests.integration.cluster import running_cluster  # noqa: E402

OUT = ROOT / "bench/results/capture_bench.json"
MODES = {"capture off": 0.0, "capture 100%": 1.0}


def deploy(cluster, store: str, rate: float) -> None:
    config = cluster.serve_config(Postprocessor={"user_config": {"capture_rate": rate}})
    cfg = yaml.safe_load(config.read_text())
    cfg["applications"][0]["args"].update(
        model_store=store, model_name=NAME, public_key=str(signing_keys()[1])
    )
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cluster.deploy(config)
    time.sleep(2)  # reconfigure reaches the replica


def dropped(cluster) -> float:
    text = httpx.get(f"http://127.0.0.1:{cluster.metrics}/metrics", timeout=30).text
    return sum(
        float(v) for v in re.findall(r"^ray_ml_capture_dropped_total\{[^}]*\} (\S+)", text, re.M)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    df = dataset()
    reg = train(df)
    store = str(reg.root_path)
    shutil.rmtree(capture_root(store, NAME), ignore_errors=True)
    body = WORK / "bodies" / "capture-1.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text(json.dumps(ours_body(df.head(1))))
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        url = f"{cluster.url}/predict"
        for r in range(args.rounds):
            for mode, rate in list(MODES.items())[:: 1 if r % 2 == 0 else -1]:
                deploy(cluster, store, rate)
                wrk(url, body, 32, 3)  # warm-up
                result = wrk(url, body, 32, args.duration)
                runs[mode].append(result)
                print(
                    f"round {r + 1} {mode:<13} {result['rps']:7.1f} req/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                    f"non-2xx {result['non2xx']}",
                    flush=True,
                )
        time.sleep(5)  # the last flush, and the metrics export
        drops = dropped(cluster)
    captured = len(read_predictions(capture_root(store, NAME)))
    summary = {
        mode: {k: statistics.median(run[k] for run in results) for k in ("rps", "p50_ms", "p99_ms")}
        | {"non2xx": sum(run["non2xx"] for run in results)}
        for mode, results in runs.items()
    }
    pairs = [
        on["rps"] / off["rps"]
        for on, off in zip(runs["capture 100%"], runs["capture off"], strict=True)
    ]
    ratio = statistics.median(pairs)
    print("\nmedian over rounds (c=32, 1 row):")
    for mode, s in summary.items():
        print(
            f"  {mode:<13} {s['rps']:7.1f} req/s  p50 {s['p50_ms']:6.2f} ms  "
            f"p99 {s['p99_ms']:6.2f} ms"
        )
    print(
        f"capture on / off throughput per round: {', '.join(f'{p:.3f}' for p in pairs)}; "
        f"median {ratio:.3f} (cost {100 * (1 - ratio):.1f}%); "
        f"rows captured {captured:,}, dropped {drops:,.0f}"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "summary": summary,
                "ratio": ratio,
                "ratios_per_round": pairs,
                "captured": captured,
                "dropped": drops,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
