"""Release records in a real registry on disk, the routing they drive, and the CLI."""

import json
from collections import Counter

import pytest

from sparc_ray.cli import main
from sparc_ray.registry import layout, releases
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.store import ModelRegistry, RegistryError
from sparc_ray.serving.routing import ReleaseView

FEATURES = [{"name": "x", "kind": "numeric"}]
PASSED = {"passed": True, "failed": []}


@pytest.fixture
def reg(tmp_path, trained_loans_model):
    reg = ModelRegistry(tmp_path / "store")
    for passed in (True, True, False):
        gates = {"passed": passed, "failed": [] if passed else ["accuracy"]}
        meta = {"gates": gates, "classes": ["a", "b"], "features": FEATURES}
        reg.publish("loans", trained_loans_model, meta)
    releases.promote(reg, "loans", reg.versions("loans")[0])
    return reg


def test_a_release_checks_gates_files_and_schema_then_ends_once(reg):
    v1, v2, failed = reg.versions("loans")
    with pytest.raises(RegistryError, match="failed its gates"):
        releases.start_release(reg, "loans", failed, "canary")
    with pytest.raises(RegistryError, match="already production"):
        releases.start_release(reg, "loans", v1, "canary")
    r = releases.start_release(reg, "loans", v2, "canary", weight=20)
    assert releases.current_release(reg, "loans") == r and r.baseline == v1 and r.weight == 20
    with pytest.raises(RegistryError, match="in progress"):
        releases.start_release(reg, "loans", failed, "shadow", force=True)
    assert releases.finish_release(reg, "loans", r.id, "promoted", "every check passed")
    assert not releases.finish_release(reg, "loans", r.id, "rolled_back", "late writer")
    assert reg.alias("loans") == v2 and reg.history("loans") == [v1, v2]
    assert releases.current_release(reg, "loans") is None
    events = [(e["event"], e["version"]) for e in releases.release_log(reg, "loans")]
    assert events == [("started", v2), ("promoted", v2)]


def test_a_rolled_back_release_leaves_production_alone(reg):
    v1, _, failed = reg.versions("loans")
    r = releases.start_release(reg, "loans", failed, "shadow", force=True)
    assert r.weight == 100
    releases.finish_release(reg, "loans", r.id, "rolled_back", "accuracy", {"n": 1})
    assert reg.alias("loans") == v1 and releases.current_release(reg, "loans") is None
    assert releases.release_log(reg, "loans")[-1]["evidence"] == {"n": 1}


def test_moving_production_by_hand_ends_the_release(reg):
    v1, v2, failed = reg.versions("loans")
    r = releases.start_release(reg, "loans", v2, "canary")
    assert releases.promote(reg, "loans", v2, by="api") == v1  # the candidate: promoted
    assert releases.release_log(reg, "loans")[-1]["event"] == "promoted"
    r = releases.start_release(reg, "loans", failed, "canary", force=True)
    releases.rollback(reg, "loans")  # production moves: the release is aborted
    assert releases.release_log(reg, "loans")[-1] == {
        **releases.release_log(reg, "loans")[-1],
        "event": "aborted",
        "id": r.id,
    }
    assert reg.alias("loans") == v1


def test_a_training_promote_during_a_canary_ends_it(reg, trained_loans_model):
    """Training that promotes while a canary runs aborts the canary (its baseline is no longer
    production), so no release goes on comparing against a stale baseline."""
    v1, v2, _ = reg.versions("loans")
    canary = releases.start_release(reg, "loans", v2, "canary", weight=20)
    fresh = reg.publish(
        "loans", trained_loans_model, {"gates": PASSED, "classes": ["a", "b"], "features": FEATURES}
    )
    from sparc_ray.training.result import release_new_version

    started = release_new_version(
        reg, "loans", fresh, eligible=True, mode="production", weight=None, policy=None, by="train"
    )
    assert started == (True, None)
    assert reg.alias("loans") == fresh and reg.history("loans") == [v1, fresh]
    assert releases.current_release(reg, "loans") is None
    ended = releases.release_log(reg, "loans")[-1]
    assert (ended["event"], ended["id"], ended["baseline"]) == ("aborted", canary.id, v1)
    assert ended["reason"] == f"production moved to {fresh} by train"
    assert releases.start_release(reg, "loans", v2, "canary").baseline == fresh


def test_a_tampered_or_different_candidate_is_refused(reg, tmp_path, trained_loans_model):
    _, v2, _ = reg.versions("loans")
    model_file = reg.root_path / "loans" / v2 / layout.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes() + b"x")
    with pytest.raises(IntegrityError, match="sha256"):
        releases.start_release(reg, "loans", v2, "canary")
    with pytest.raises(IntegrityError, match="sha256"):
        releases.promote(reg, "loans", v2)
    meta_file = reg.root_path / "loans" / reg.versions("loans")[2] / layout.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    meta["features"] = [*FEATURES, {"name": "y", "kind": "numeric"}]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="same features"):
        releases.start_release(reg, "loans", meta["version"], "canary", force=True)


def test_policy_yaml_overrides_defaults_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("min_requests: 50\nmax_accuracy_drop: 0.1\n")
    policy = releases.load_policy(path)
    assert policy.min_requests == 50 and policy.min_feedback_rows == 50
    path.write_text("min_request: 50\n")
    with pytest.raises(RegistryError, match="min_request"):
        releases.load_policy(path)


def test_canary_weight_holds_and_keys_are_sticky(reg):
    v1, v2, _ = reg.versions("loans")
    view = ReleaseView(v1, releases.start_release(reg, "loans", v2, "canary", weight=20))
    share = Counter(view.route() for _ in range(20_000))[v2] / 20_000
    assert 0.19 < share < 0.21
    keyed = Counter(view.route(f"user-{i}") for i in range(5_000))[v2] / 5_000
    assert 0.17 < keyed < 0.23
    assert all(view.route(f"user-{i}") == view.route(f"user-{i}") for i in range(200))
    assert ReleaseView(v1, view.release, pinned=v1).route("k") == v1  # a pin wins
    shadow = ReleaseView(v1, view.release.model_copy(update={"mode": "shadow"}))
    assert {shadow.route() for _ in range(100)} == {v1}


def test_cli_canary_status_abort(reg, capsys, tmp_path):
    v1, v2, failed = reg.versions("loans")
    args = ["--store", str(reg.root_path), "--name", "loans"]
    (tmp_path / "p.yaml").write_text("min_requests: 10\n")
    assert (
        main(
            ["models", "canary", v2, "--weight", "25", "--policy", str(tmp_path / "p.yaml"), *args]
        )
        == 0
    )
    assert "canary of" in capsys.readouterr().out
    assert main(["models", "status", *args]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["production"] == v1 and status["release"]["weight"] == 25
    assert status["release"]["policy"]["min_requests"] == 10
    assert main(["models", "shadow", failed, *args]) == 2  # one release at a time
    assert main(["models", "abort", *args]) == 0
    assert main(["models", "abort", *args]) == 2
    assert main(["models", "shadow", failed, *args]) == 2  # failed gates
    assert main(["models", "shadow", failed, "--force", *args]) == 0
    assert (
        json.loads(
            (capsys.readouterr(), main(["models", "status", *args]), capsys.readouterr().out)[2]
        )["release"]["mode"]
        == "shadow"
    )


def _watch(loader, watcher=None):
    import asyncio

    from sparc_ray.serving.routing import ReleaseWatcher

    watcher = watcher or ReleaseWatcher(loader)
    return watcher, asyncio.run(watcher.refresh(force=True))


def test_rewritten_records_never_route_to_a_gate_failed_version(reg):
    """The records are unsigned: a gate-failed production or candidate is refused, the last
    verified production (the watcher's, else the history's) serves; only a pin serves it."""
    from sparc_ray.inference.loader import RegistryLoader

    v1, _, failed = reg.versions("loans")
    loader = RegistryLoader(reg.store, "loans")
    watcher, view = _watch(loader)
    assert view.serving == v1 and view.refused == ()
    (reg.root_path / "loans" / layout.RECORDS_DIR / layout.ALIAS).write_text(f"{failed}\n")
    _, view = _watch(loader, watcher)
    assert (view.serving, view.alias) == (v1, failed)
    assert "failed its gates" in dict(view.refused)[failed]
    _, fresh = _watch(loader)  # a replica that starts now: the history's newest verified
    assert fresh.serving == v1
    watcher.pin(failed)  # an operator's explicit pin serves it
    assert watcher.view.serving == failed and loader.load_metadata(failed).version == failed
    watcher.pin(None)
    (reg.root_path / "loans" / layout.RECORDS_DIR / layout.ALIAS).write_text(f"{v1}\n")
    forged = {"id": "r-x", "version": failed, "mode": "canary", "weight": 100, "baseline": v1}
    candidate = reg.root_path / "loans" / layout.RECORDS_DIR / layout.CANDIDATE_FILE
    candidate.write_text(json.dumps({**forged, "started_at": "2026-01-01"}))
    _, view = _watch(loader)
    assert view.release is None and {view.route() for _ in range(50)} == {v1}
    with pytest.raises(releases.GatesFailed):
        releases.finish_release(reg, "loans", "r-x", "promoted", "forged evidence")
    candidate.write_text(json.dumps({**forged, "started_at": "2026-01-01", "extra": 1}))
    _, view = _watch(loader)
    assert view.serving == v1 and "candidate.json" in (view.error or "")
