"""The serving benchmark's judgement: Serve's ratios against each baseline, and the targets of
the serving issues, each met or missed, from one run of bench/serve_bench.py."""

from __future__ import annotations

C1, C32, BIG = "1 row, c=1", "1 row, c=32", "1000 rows, c=4"
EXPLAIN_BIG = "100 rows, c=2"
BASELINES = ("uvicorn", "uvicorn_onnx", "mlserver")  # bench/serve_bench.py SERVERS keys


def compare(results: dict, raw: float) -> tuple[dict, list[dict]]:
    """Ratios Serve / each baseline per scenario, and the targets that can be judged."""
    ratios: dict = {}
    targets: list[dict] = []
    serve = results.get("serve")
    if serve is None:
        return ratios, targets

    def target(name: str, value: float, goal: float, at_least: bool) -> None:
        met = value >= goal if at_least else value <= goal
        targets.append({"target": name, "value": value, "goal": goal, "met": met})

    for key in BASELINES:
        if key not in results:
            continue
        base = results[key]
        ratios[key] = {
            s: {m: serve[s][m] / base[s][m] for m in ("rps", "p50_ms", "p99_ms")} for s in base
        }
    if "uvicorn" in ratios:  # the FastAPI + scikit-learn server a user writes first
        r = ratios["uvicorn"]
        target("c=32 req/s Serve / uvicorn x2 >= x", r[C32]["rps"], 5.0, True)
        target("c=32 p99 Serve / uvicorn x2 <= x", r[C32]["p99_ms"], 1.0, False)
        target("c=1 p50 Serve / uvicorn x2 <= x", r[C1]["p50_ms"], 1.0, False)
        target("1000-row rows/s Serve / uvicorn x2 >= x", r[BIG]["rps"], 1.5, True)
    if "uvicorn_onnx" in ratios:  # the one-box limit for the same model.onnx
        r = ratios["uvicorn_onnx"]
        target("c=32 req/s Serve / uvicorn x2 + ONNX >= x", r[C32]["rps"], 0.5, True)
        target("1000-row rows/s Serve / uvicorn x2 + ONNX >= x", r[BIG]["rps"], 0.8, True)
    if "mlserver" in ratios:
        target("c=32 req/s Serve / MLServer >= x", ratios["mlserver"][C32]["rps"], 1.2, True)
        target("c=32 p99 Serve / MLServer <= x", ratios["mlserver"][C32]["p99_ms"], 1.0, False)
    target("c=1 p50 Serve ms <=", serve[C1]["p50_ms"], 2.0, False)
    target("1000-row rows/s Serve / raw sklearn >= x", serve[BIG]["rows_per_s"] / raw, 1.0, True)
    if v2 := results.get("serve_v2"):
        target("c=32 req/s V2 infer / /predict >= x", v2[C32]["rps"] / serve[C32]["rps"], 0.9, True)
        if "mlserver" in results:
            mls = results["mlserver"][C32]["rps"]
            target("c=32 req/s V2 infer / MLServer V2 >= x", v2[C32]["rps"] / mls, 1.2, True)
    if explain := results.get("serve_explain"):
        target("explain 1 row c=1 p50 ms <=", explain[C1]["p50_ms"], 25.0, False)
        target(
            "explain rows/s (100-row requests) >=", explain[EXPLAIN_BIG]["rows_per_s"], 1e3, True
        )
    target("Serve non-2xx <=", sum(r["non2xx"] for r in serve.values()), 0, False)
    return ratios, targets
