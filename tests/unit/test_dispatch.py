"""A micro-batch split by version: the candidate never fails a request production can answer,
and the serving version falls back to the last one that answered when it cannot load (or its
metadata is refused)."""

import asyncio

import numpy as np
import pytest

from sparc_ray.inference.loader import LoadedModel
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.signing import SignatureError
from sparc_ray.serving.dispatch import Dispatcher, VersionCatalog, answers_from
from sparc_ray.serving.messages import NoModelError, VersionUnavailable
from sparc_ray.serving.model import score_batch
from sparc_ray.serving.requests import PredictInput, RequestError
from sparc_ray.serving.tasks import Failures
from tests.unit.test_batch_isolation import PickyScorer
from tests.unit.test_metadata import make_metadata


class Flaky(PickyScorer):
    """The candidate: also refuses any value above 100."""

    def predict_proba(self, columns):
        if (columns["x"] > 100).any():
            raise ValueError("candidate bug")
        return super().predict_proba(columns)


def fake_model(models: dict):
    calls = []

    async def call(version, columns, sizes):
        calls.append((version, sizes))
        if models.get(version) is None:
            raise VersionUnavailable(version, "sha256 mismatch")
        # What Model.predict does with the named version (the same function).
        return score_batch(
            LoadedModel(models[version], make_metadata(version=version), "t"), columns, sizes
        )

    return call, calls


def job(*xs):
    return PredictInput({"x": np.array(xs, dtype=float)}, len(xs), False)


def run(models, inputs, versions, serving="prod", fallback=None):
    call, calls = fake_model(models)
    return asyncio.run(Dispatcher(call).run(inputs, versions, serving, fallback)), calls


def test_each_version_gets_one_call_and_answers_its_own_requests():
    inputs = [job(1.0), job(2.0, 3.0), job(4.0)]
    out, calls = run({"prod": PickyScorer(), "cand": Flaky()}, inputs, ["prod", "cand", "prod"])
    assert sorted(calls) == [("cand", [2]), ("prod", [1, 1])]
    assert {g.version: g.indices for g in out.groups} == {"prod": [0, 2], "cand": [1]}
    assert not out.failures and not out.server_errors


def test_candidate_failures_are_rescued_by_production_and_charged_to_the_candidate():
    # request 1 breaks only the candidate; request 2 (13) breaks both: the input's fault
    inputs = [job(1.0), job(500.0, 2.0), job(13.0), job(3.0)]
    out, _ = run({"prod": PickyScorer(), "cand": Flaky()}, inputs, ["cand", "cand", "cand", "prod"])
    answered = {i: g.version for g in out.groups for i in g.indices}
    assert answered == {0: "cand", 1: "prod", 3: "prod"}
    assert list(out.failures) == [2] and out.failures[2].status == 422
    assert out.server_errors == {"cand": 1}
    answers = answers_from(out, [[{"i": i} for i in g.indices] for g in out.groups], 4)
    assert answers[1] == {"i": 1} and isinstance(answers[2], RequestError)


def test_an_unloadable_candidate_costs_no_request():
    out, _ = run({"prod": PickyScorer()}, [job(1.0), job(2.0)], ["cand", "cand"])
    assert [g.version for g in out.groups] == ["prod"] and not out.failures
    assert out.server_errors == {"cand": 2} and "sha256" in out.unavailable["cand"]


def test_unloadable_production_falls_back_to_the_last_version_that_answered():
    out, _ = run({"old": PickyScorer()}, [job(1.0)], ["prod"], fallback="old")
    assert [g.version for g in out.groups] == ["old"] and "prod" in out.unavailable
    out, _ = run({}, [job(1.0)], ["prod"])
    assert isinstance(out.failures[0], VersionUnavailable)


class MetadataSource:
    """Loader stand-in: ``bad`` has metadata that fails verification."""

    name = "m"

    def __init__(self) -> None:
        self.reads: list[str] = []

    def load_metadata(self, version: str) -> ModelMetadata:
        self.reads.append(version)
        if version == "bad":
            raise SignatureError("bad: metadata.json was changed after the version was signed")
        return make_metadata(version=version)


def test_a_version_with_refused_metadata_hands_its_requests_to_a_fallback():
    source = MetadataSource()
    catalog = VersionCatalog(None, source, Failures())
    version, checks, refused = asyncio.run(catalog.checks_for("bad", ["bad", None, "v1"]))
    assert version == "v1" and [c.name for c in checks] == ["x"]
    assert "SignatureError" in refused and "changed after" in refused
    assert asyncio.run(catalog.checks_for("v1", ["v2"]))[::2] == ("v1", None)
    for _ in range(5):  # refused once, not re-read from the registry on every request
        asyncio.run(catalog.checks_for("bad", ["v1"]))
    assert source.reads.count("bad") == 1
    with pytest.raises(NoModelError, match="changed after"):
        asyncio.run(catalog.checks_for("bad", ["bad"]))
