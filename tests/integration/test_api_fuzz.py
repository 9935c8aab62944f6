"""Schemathesis against the live app (`serve deploy` on a real cluster): every operation of
/openapi.json, generated from the served model's own schema, valid and invalid inputs,
without and with the admin token, then the stateful phase that follows the links
(/predict -> /feedback). No 5xx, and every response matches what the document says."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.cluster import ADMIN_TOKEN, FEEDBACK_TOKEN, running_cluster
from tests.integration.test_serving import job_config

pytestmark = pytest.mark.cluster
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


def tokens_for(label: str) -> dict:
    """The token the operation documents: feedback for /feedback, release control else."""
    return FEEDBACK_AUTH if label == "POST /feedback" else AUTH


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation and generation mode, per caller (anonymous / admin). Every valid
# /predict case reaches the model and every invalid one is refused before it, so more valid
# than invalid ones keep the share that reaches the model above half by design.
EXAMPLES = {
    ("POST /predict", GenerationMode.POSITIVE): 250,
    ("POST /predict", GenerationMode.NEGATIVE): 150,
    ("POST /feedback", GenerationMode.POSITIVE): 80,
    ("POST /feedback", GenerationMode.NEGATIVE): 80,
    ("POST /reload-model", GenerationMode.POSITIVE): 60,
    ("POST /reload-model", GenerationMode.NEGATIVE): 60,
}
DEFAULT_EXAMPLES = 40
V2_READS = 10  # GET /v2...: path parameters only


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    with running_cluster(work) as cluster:
        cluster.train("--config", str(job_config(work / "lr.yaml", "logistic_regression", {})))
        cluster.deploy(cluster.serve_config())
        yield cluster.url


@pytest.fixture(scope="module")
def schema(url):
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.fixture(scope="module")
def seen() -> Counter:
    """(operation, status) -> generated cases answered with it."""
    return Counter()


def _fuzz(operation, mode: GenerationMode, headers: dict, examples: int, seen: Counter) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(headers={**(case.headers or {}), **headers}, timeout=60)
        seen[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (e.g. GET /health takes no input)
        assert mode == GenerationMode.NEGATIVE, operation.label


@pytest.mark.parametrize("caller", ["anonymous", "admin"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(schema, seen, caller, mode):
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = tokens_for(operation.label) if caller == "admin" else {}
        default = V2_READS if operation.label.startswith("GET /v2") else DEFAULT_EXAMPLES
        examples = EXAMPLES.get((operation.label, mode), default)
        _fuzz(operation, mode, headers, examples, seen)


def test_the_fuzzer_reached_the_model_and_ran_enough_cases(seen, tmp_path_factory):
    total = sum(seen.values())
    predict = {s: n for (label, s), n in seen.items() if label == "POST /predict"}
    summary = {f"{label} {status}": n for (label, status), n in sorted(seen.items())}
    (tmp_path_factory.getbasetemp() / "fuzz_summary.json").write_text(json.dumps(summary))
    assert total >= 1000, seen
    assert predict.get(200, 0) >= sum(predict.values()) / 2, predict
    assert not [k for k in seen if k[1] >= 500], seen


def test_stateful_links_from_predict_to_feedback(schema, url):
    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": tokens_for(case.operation.label), "timeout": 60}

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    monitoring = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30).json()["monitoring"]
    assert monitoring["labelled_predictions"] > 0, monitoring  # feedback followed the link
