"""The release policy's decision rule on synthetic evidence."""

import random

from sparc_ray.registry.releases import ReleasePolicy
from sparc_ray.serving.release.policy import Agreement, VersionEvidence, decide

POLICY = ReleasePolicy(min_requests=100, min_feedback_rows=50)


def evidence(requests=200, ms=5.0, accuracy=0.95, labelled=100, drift=0.05, errors=0, seed=0):
    rng = random.Random(seed)
    ev = VersionEvidence(requests=requests, server_errors=errors, drift=drift)
    ev.latencies_ms.extend(rng.uniform(ms * 0.8, ms * 1.2) for _ in range(requests))
    correct = round(accuracy * labelled)
    ev.outcomes.extend([True] * correct + [False] * (labelled - correct))
    return ev


def test_a_candidate_as_good_as_production_is_promoted():
    assert decide(POLICY, "canary", evidence(), evidence(seed=1), Agreement())[0] == "promoted"


def test_nothing_is_decided_before_the_evidence_is_enough():
    assert decide(POLICY, "canary", evidence(), evidence(requests=50), Agreement()) is None
    assert decide(POLICY, "canary", evidence(), evidence(labelled=10), Agreement()) is None
    shadow = decide(POLICY, "shadow", evidence(), evidence(), Agreement(same=40, rows=50))
    assert shadow is None


def test_a_clearly_worse_candidate_is_rolled_back_as_soon_as_it_is_clear():
    bad = evidence(accuracy=0.5, labelled=50, requests=60)  # before min_requests
    decision, reason = decide(POLICY, "canary", evidence(), bad, Agreement())
    assert decision == "rolled_back" and "accuracy" in reason
    # a small gap on few rows is not yet clear: wait
    assert (
        decide(POLICY, "canary", evidence(), evidence(accuracy=0.88, labelled=50), Agreement())
        is None
    )


def test_errors_latency_agreement_and_drift_each_fail_a_candidate():
    prod = evidence()
    cases = {
        "server-error": evidence(errors=30),
        "p99": evidence(ms=50),
        "drift": evidence(drift=0.9),
    }
    for word, cand in cases.items():
        decision, reason = decide(POLICY, "canary", prod, cand, Agreement())
        assert decision == "rolled_back" and word in reason, (word, reason)
    decision, reason = decide(POLICY, "shadow", prod, evidence(), Agreement(same=60, rows=200))
    assert decision == "rolled_back" and "agreement" in reason


def test_auto_switches_turn_decisions_into_advice():
    hold = POLICY.model_copy(update={"auto_promote": False, "auto_rollback": False})
    assert decide(hold, "canary", evidence(), evidence(), Agreement()) is None
    assert decide(hold, "canary", evidence(), evidence(errors=30), Agreement()) is None
