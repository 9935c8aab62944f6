"""Monitoring records leave the request path: the Validator sends each answered micro-batch
to the Postprocessor without waiting (``Unawaited``: bounded, drops and failures counted),
and a label posted to ``/feedback`` before its record arrives still matches. The integration
test with a frozen Postprocessor is in tests/integration/test_serving.py."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from sparc_ray.serving.feedback import could_be_issued, new_prediction_id
from sparc_ray.serving.messages import PostBatch, RequestMeta, ScoredGroup
from sparc_ray.serving.tasks import Failures, Unawaited
from tests.postprocessors import Loader, local_postprocessor


def test_calls_beyond_the_bound_are_dropped_and_counted_never_waited_for():
    async def scenario():
        failures = Failures()
        sender = Unawaited(failures, "postprocessor", limit=2)
        gates = [asyncio.get_running_loop().create_future() for _ in range(4)]
        issued: list[int] = []

        def call(i: int):
            issued.append(i)
            return gates[i]

        sent = [sender.send(lambda i=i: call(i)) for i in range(3)]  # none waits
        gates[0].set_exception(RuntimeError("postprocessor gone"))
        await asyncio.sleep(0.01)  # the failure is seen, its room freed
        sent.append(sender.send(lambda: call(3)))
        for gate in gates[1:]:
            gate.set_result(None)
        await asyncio.sleep(0.01)
        return sent, issued, failures.counts, len(sender.in_flight)

    sent, issued, counts, left = asyncio.run(scenario())
    assert sent == [True, True, False, True] and issued == [0, 1, 3]
    assert counts == {"postprocessor_backlog": 1, "postprocessor": 1}
    assert left == 0


def test_a_label_that_overtakes_its_record_still_matches_and_an_unknown_one_is_not_held():
    p1, p9 = new_prediction_id(), new_prediction_id()

    async def scenario():
        post = await local_postprocessor(Loader(), {"feedback_wait_s": 5.0})
        label = [{"prediction_id": p1, "row": 1, "label": "a"}]
        early = asyncio.ensure_future(post.feedback(label))  # before the record arrives
        await asyncio.sleep(0.1)
        proba = np.array([[0.2, 0.8], [0.9, 0.1]])
        group = ScoredGroup(
            "v1", (RequestMeta(p1, 2, False),), proba, ["b", "a"], {"x": np.ones(2)}, 1.0
        )
        await post.record(PostBatch((group,), {}, "v1", False))
        matched = await asyncio.wait_for(early, 2)  # woken by the record, not the deadline
        await post.reconfigure({"feedback_wait_s": 0.5})
        began = time.monotonic()
        unknown = await post.feedback([{"prediction_id": p9, "row": 0, "label": "a"}])
        waited = time.monotonic() - began
        began = time.monotonic()
        foreign = await post.feedback([{"prediction_id": "p9", "row": 0, "label": "a"}])
        answered = time.monotonic() - began
        post.tasks.cancel()
        return matched, unknown, waited, foreign, answered

    matched, unknown, waited, foreign, answered = asyncio.run(scenario())
    assert matched["matched"] == 1 and matched["unknown"] == [] and matched["accuracy"] == 1.0
    assert unknown["matched"] == 0 and unknown["unknown"] == [p9]
    assert 0.5 <= waited < 1.5  # held for feedback_wait_s, then answered
    # an id the Validator could not have issued is never waited for
    assert foreign["unknown"] == ["p9"] and answered < 0.25


def test_only_ids_of_the_issued_form_could_be_issued():
    issued = new_prediction_id()
    assert could_be_issued(issued) and could_be_issued(new_prediction_id())
    for other in ["p9", issued.upper(), issued + " ", issued.replace("-", ""), 7, None, ""]:
        assert not could_be_issued(other), other


def test_a_full_monitoring_queue_drops_its_oldest_group_and_counts_it():
    async def scenario():
        post = await local_postprocessor(Loader())
        post.tasks.cancel()  # no background drain: the queue fills
        await post.reconfigure({"max_queued_batches": 2})
        for pid in ("p1", "p2", "p3"):
            group = ScoredGroup(
                "v1", (RequestMeta(pid, 1, False),), np.array([[0.2, 0.8]]), ["b"], {}, 1.0
            )
            await post.record(PostBatch((group,), {}, "v1", False))
        stats = await post.stats()
        return stats, dict(post.failures.counts), set(post.feedback_store.recent)

    stats, counts, remembered = asyncio.run(scenario())
    assert counts == {"monitoring_backlog": 1} and remembered == {"p2", "p3"}
    assert stats["monitoring_errors"] == 1
