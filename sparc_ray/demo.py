"""Sample requests for `make demo`: valid rows, probabilities, one invalid request, then a
drift report over what the service captured. ``--write-config OUT`` first writes the demo's
Serve config: serve_config.yaml with the traffic capture on (it ships off)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from sparc_ray.client import PredictionError, SparcClient, records
from sparc_ray.data.loading import load_dataset
from sparc_ray.registry.layout import DEFAULT_STORE


def write_config(out: str, source: str = "serve_config.yaml", capture_rate: float = 1.0) -> None:
    """``source`` with the Postprocessor's ``capture_rate`` set (mode 0600: it is a deploy
    config), for ``serve deploy``. Every other setting stays as ``source`` has it."""
    config = yaml.safe_load(Path(source).read_text())
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if deployment["name"] == "Postprocessor":
                deployment.setdefault("user_config", {})["capture_rate"] = capture_rate
    text = "# written by `python -m sparc_ray.demo --write-config` from serve_config.yaml\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + yaml.safe_dump(config, sort_keys=False))


def wait_healthy(client: SparcClient, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            health = client.health()
            if health.get("model_loaded"):
                return health
        except Exception as exc:  # the proxy is not up yet
            health = {"error": str(exc)}
        if time.time() > deadline:
            raise SystemExit(f"service not healthy after {timeout:.0f}s: {health}")
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265")
    parser.add_argument("--store", default=DEFAULT_STORE, help="the app's model store")
    parser.add_argument("--report", default=".demo/drift_report.html")
    parser.add_argument("--write-config", metavar="OUT", help="write the demo's Serve config")
    args = parser.parse_args()
    if args.write_config:
        write_config(args.write_config)
        print(f"{args.write_config}: serve_config.yaml with the traffic capture on")
        return
    client = SparcClient(args.url)
    health = wait_healthy(client)
    print(f"health: {json.dumps(health)}\n")

    df, target = load_dataset("builtin:breast_cancer")
    sample = df.sample(5, random_state=0)
    rows = records(sample.drop(columns=target))
    one = client.predict(rows[:1])
    print(
        f"1 row     -> {one['predictions']}  (true: {sample[target].iloc[0]}, "
        f"{one['processing_time_ms']:.1f} ms, version {one['model_version']})"
    )
    five = client.predict(rows, include_probabilities=True)
    for pred, proba, truth in zip(
        five["predictions"], five["probabilities"], sample[target], strict=True
    ):
        print(
            f"5 rows    -> {pred:<10} P={dict(zip(five['classes'], proba, strict=True))}"
            f"  (true: {truth})"
        )
    bad = {**rows[0], "mean radius": "large"}
    bad.pop("worst area")
    try:
        client.predict([rows[1], bad])
    except PredictionError as exc:
        print(f"\ninvalid   -> HTTP {exc.status}: {json.dumps(exc.body, indent=2)}")
    # The demo's config turns the capture on (serve_config.yaml ships it off): report on it.
    client.predict(records(df.drop(columns=target).sample(400, random_state=1)))
    time.sleep(3)  # the capture writes every 2 s
    try:
        from sparc_ray.monitoring.drift_report import write_report

        r = write_report(args.store, "breast_cancer", args.report, since="1h")
        top = r["features"][0]
        print(
            f"\ndrift report   {args.report}: {r['rows']} captured rows, most drifted "
            f"{top.name!r} (PSI {top.psi:.3f}); open it in a browser"
        )
    except Exception as exc:  # the demo's requests were answered; the report is extra
        print(f"\ndrift report   not written: {exc}")
    print(
        f"\nendpoint       {args.url}/predict\nAPI docs       {args.url}/docs\n"
        f"health         {args.url}/health\nRay dashboard  {args.dashboard}\n"
        "stop with      make stop"
    )


if __name__ == "__main__":
    main()
