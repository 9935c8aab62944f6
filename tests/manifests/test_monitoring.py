"""kuberay/monitoring/: the PodMonitors scrape every Ray node, the PrometheusRule carries the
alerts and passes `promtool check rules` and the promtool unit tests in
kuberay/monitoring/tests/alerts.test.yaml (skipped, loudly, without promtool; `make
test-manifests` installs it), and PromQL in rules, rule tests and the Grafana dashboard only
uses metric names listed in tests/data/live_metric_names.txt or Ray Serve built-ins
(ray_serve_*)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.manifests.helpers import (
    MONITORING,
    NAMESPACE,
    ROOT,
    every,
    only,
)

PROMTOOL_TESTS = MONITORING / "tests" / "alerts.test.yaml"


LIVE_METRICS = ROOT / "tests" / "data" / "live_metric_names.txt"


# Ray built-in series the dashboard may use besides our own (live_metric_names.txt).
BUILTIN_METRIC = re.compile(r"ray_serve_[a-zA-Z0-9_]+")


# The seed's ML alerts: (threshold comparison, for, severity).
SEED_ALERTS = {
    "ModelPredictionLatencyHigh": ("> 1.0", "2m", "warning"),
    "ModelErrorRateHigh": ("> 0.05", "1m", "critical"),
    "ModelDriftDetected": ("> 0.1", "5m", "warning"),
    "FeatureDriftDetected": ("> 0.15", "5m", "warning"),
    "ModelAccuracyDegraded": ("< 0.85", "10m", "critical"),
}
ALERTS = {
    **SEED_ALERTS,
    "CanaryRolledBack": ("> 0", "0m", "warning"),
    "ModelClientErrorRateHigh": ("> 0.25", "10m", "warning"),
    "TrafficCaptureDropping": ("> 0", "10m", "warning"),
}


def _live_metric_names() -> set[str]:
    lines = LIVE_METRICS.read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


def _rule_groups() -> dict:
    return only("PrometheusRule")["spec"]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "!!! promtool NOT INSTALLED: PrometheusRule checks SKIPPED !!! "
            "Run `bash .ci/install-apt.sh promtool prometheus`."
        )
    return path


_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL (or Grafana label_values) expression."""
    names = set()
    for m in re.finditer(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", expr):
        names.add(m.group(1))
    s = re.sub(r"label_values\([^)]*\)", " ", expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', s)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", s):
        if m.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def _dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_podmonitors_scrape_head_and_workers_metrics_port():
    node_types = set()
    for pm in every("PodMonitor"):
        node_types.add(pm["spec"]["selector"]["matchLabels"]["ray.io/node-type"])
        assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
        assert pm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert node_types == {"head", "worker"}


def test_prometheusrule_carries_the_seed_alerts():
    rules = {r["alert"]: r for g in _rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    assert set(rules) == set(ALERTS)
    for alert, (threshold, duration, severity) in ALERTS.items():
        rule = rules[alert]
        assert " ".join(rule["expr"].split()).endswith(threshold), alert
        assert rule["for"] == duration, alert
        assert rule["labels"]["severity"] == severity, alert
        assert "model_name" in rule["expr"], f"{alert} must aggregate by model_name"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def _write_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule_groups(), sort_keys=False))
    return rules


def _run_promtool(*args: str) -> None:
    proc = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_rules(tmp_path):
    _run_promtool("check", "rules", str(_write_rules(tmp_path)))


def test_promtool_alert_unit_tests(tmp_path):
    suite = yaml.safe_load(PROMTOOL_TESTS.read_text())
    suite["rule_files"] = [str(_write_rules(tmp_path))]
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    _run_promtool("test", "rules", str(test_file))
    # Every alert is shown both firing and quiet.
    fires, quiet = set(), set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == set(ALERTS) and quiet == set(ALERTS), (fires, quiet)


def test_metric_name_parser():
    expr = (
        'histogram_quantile(0.95, sum by (le, model_name) (rate(foo_bucket{a="b"}[5m]))) > 1e3'
        " or label_values(bar_total, model_name) and on (x) baz offset 5m"
    )
    assert _metric_names(expr) == {"foo_bucket", "bar_total", "baz"}


def test_promql_uses_only_exported_metric_names():
    known = _live_metric_names()
    assert known, "tests/data/live_metric_names.txt is empty"
    used: dict[str, set[str]] = {}
    for g in _rule_groups()["groups"]:
        for r in g["rules"]:
            used.setdefault("PrometheusRule", set()).update(_metric_names(r["expr"]))
    for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for s in case.get("input_series", []):
            used.setdefault("alerts.test.yaml", set()).add(s["series"].split("{")[0].strip())
    for expr in _dashboard_exprs():
        used.setdefault("grafana-dashboard.json", set()).update(_metric_names(expr))
    for where, names in used.items():
        unknown = {n for n in names if n not in known and not BUILTIN_METRIC.fullmatch(n)}
        assert not unknown, f"{where} uses series not in live_metric_names.txt: {sorted(unknown)}"
        assert names & known, where


def test_grafana_dashboard_panels():
    dash = _dashboard()
    titles = {p["title"] for p in dash["panels"]}
    for needed in (
        "Request rate",
        "Error ratio",
        "Prediction latency p50 / p95 / p99",
        "Batch size",
        "Model replicas",
        "Feature drift",
        "Prediction drift",
        "Accuracy",
        "Model version",
        "Requests by version",
        "p99 latency by version",
        "Accuracy by version",
        "Candidate traffic weight",
        "Shadow agreement",
        "Release decisions",
    ):
        assert needed in titles, needed
    exprs = " ".join(_dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model_name)" in exprs
    assert 'ray_serve_deployment_replica_healthy{application="sparc", deployment="Model"}' in exprs
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
