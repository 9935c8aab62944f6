"""The benchmarks' judgements (no server, no Ray): issue 20's and 21's targets read from
measured figures, the medians of ABBA rounds, and the best CV each command prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import score_bench
import serve_targets
import tune_bench
from serve_targets import BIG, C1, C32


def figures(rps: float, p50: float, big_rps: float) -> dict:
    one = {"rps": rps, "p50_ms": p50, "p99_ms": 4 * p50, "rows_per_s": rps, "non2xx": 0}
    return {
        C1: {**one, "rps": rps / 10},
        C32: one,
        BIG: {**one, "rps": big_rps, "rows_per_s": 1000 * big_rps},
    }


def test_serving_targets_against_each_baseline():
    results = {
        "serve": figures(1000, 1.5, 50),
        "uvicorn": figures(100, 9.0, 30),  # FastAPI + scikit-learn
        "uvicorn_onnx": figures(4000, 0.6, 70),  # the one-box limit
        "mlserver": figures(800, 3.0, 40),
    }
    ratios, targets = serve_targets.compare(results, raw=40_000)
    assert ratios["uvicorn_onnx"][C32]["rps"] == pytest.approx(0.25)
    judged = {t["target"]: t for t in targets}
    assert judged["c=32 req/s Serve / uvicorn x2 + ONNX >= x"]["met"] is False  # 0.25 < 0.5
    assert judged["1000-row rows/s Serve / uvicorn x2 + ONNX >= x"]["met"] is False  # 0.71
    assert judged["1000-row rows/s Serve / uvicorn x2 >= x"]["met"] is True  # 1.67 >= 1.5
    assert judged["c=32 req/s Serve / MLServer >= x"]["met"] is True  # 1.25 >= 1.2
    assert judged["c=1 p50 Serve ms <="]["met"] is True  # 1.5 ms <= 2
    assert judged["1000-row rows/s Serve / raw sklearn >= x"]["value"] == pytest.approx(1.25)
    assert serve_targets.compare({"uvicorn": results["uvicorn"]}, 1.0) == ({}, [])


def test_whole_jobs_are_judged_on_medians_and_the_same_best_cv():
    def job(seconds: float, cv: float) -> dict:
        return {"seconds": seconds, "best_cv": cv}

    jobs = {"grid_search": job(40, 0.9300), "fifo": job(42, 0.9310), "asha": job(27, 0.9330)}
    fifo, asha = tune_bench.judge_whole_jobs(jobs)
    assert fifo["met"] and fifo["ratio"] == pytest.approx(1.05)
    assert not asha["met"] and asha["delta_cv"] == pytest.approx(0.003)  # 0.675x, other best


def test_best_cv_is_read_from_either_command():
    summary = "=====\nbest config   rf\nCV accuracy   0.9342 ± 0.0040 (5 folds)\nholdout ..."
    assert tune_bench._best_cv(summary) == pytest.approx(0.9342)
    assert tune_bench._best_cv('noise\n{"cv": 0.91, "holdout": 0.9}\n') == pytest.approx(0.91)


def test_scoring_report_takes_medians_and_the_largest_process(capsys):
    def run(seconds: float, biggest: int) -> dict:
        peaks = {"python 1": {"rss": biggest + 300, "uss": biggest}, "ray 2": {"rss": 9, "uss": 8}}
        return {"seconds": seconds, "peak_mb": peaks}

    runs = {"loop": [run(40, 300), run(44, 310), run(42, 305)], "ours": [run(30, 900)] * 3}
    args = argparse.Namespace(rows=5_000_000, family="random_forest", repeats=3)
    out = score_bench.report(args, runs, differ=0, mb=1000.0)
    assert out["ratio_rows_per_s"] == pytest.approx(42 / 30)
    assert out["largest_process_mb"]["loop"] == {"rss": 610, "uss": 310}
    assert out["largest_process_mb"]["ours"]["uss"] == 900  # judged: < 1 GB
    assert [t["met"] for t in out["targets"]] == [True, True, True]
    out = score_bench.report(args, {**runs, "ours": [run(35, 1200)] * 3}, differ=2, mb=1.0)
    assert [t["met"] for t in out["targets"]] == [False, False, False]
    assert "2 of 5,000,000 predictions differ" in capsys.readouterr().out
