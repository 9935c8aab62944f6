"""Registry: atomic publish, sha256 verification, names, promotion and rollback."""

import json

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import layout, releases, signing
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.layout import new_version
from sparc_ray.registry.store import ModelRegistry, RegistryError, check_name

SCHEMA = {"classes": ["a", "b"], "features": [{"name": "x", "kind": "numeric"}]}
PASSED = {"gates": {"passed": True, "failed": []}, **SCHEMA}
FAILED = {"gates": {"passed": False, "failed": ["accuracy"]}, **SCHEMA}


@pytest.fixture
def reg(tmp_path):
    return ModelRegistry(tmp_path / "store")


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


def _proba(loader: RegistryLoader, version: str, X: pd.DataFrame) -> np.ndarray:
    """Probabilities from a version loaded the verified way (what serving does)."""
    scorer = loader.load(version).scorer
    return scorer.predict_proba({c: X[c].to_numpy() for c in scorer.feature_names})


def test_publish_writes_model_metadata_and_files(reg, trained_loans_model, loans, key):
    report = layout.report_file("metrics.json")
    v = reg.publish("loans", trained_loans_model, PASSED, {report: b"{}"}, signing_key=key)
    vdir = reg.root_path / "loans" / v
    meta = json.loads((vdir / layout.METADATA_FILE).read_text())
    assert meta["name"] == "loans" and meta["version"] == v and len(meta["sha256"]) == 64
    assert (vdir / "report/metrics.json").read_text() == "{}"
    loader = RegistryLoader(reg.store, "loans", signing.raw_public(key))
    X = loans.drop(columns="decision").head(50)
    np.testing.assert_allclose(_proba(loader, v, X), trained_loans_model.predict_proba(X))
    assert loader.load(v).metadata.to_dict() == meta == reg.metadata("loans", v).to_dict()


def test_versions_sort_in_publish_order_and_match_the_pattern(reg, trained_loans_model):
    versions = [reg.publish("m", trained_loans_model, PASSED) for _ in range(3)]
    assert reg.versions("m") == versions == sorted(versions)
    assert all(check_name(v) == v for v in versions)
    assert new_version() != new_version()


def test_failed_publish_leaves_no_version(reg, trained_loans_model):
    class Unserialisable:
        def __bytes__(self):
            raise RuntimeError

    with pytest.raises(TypeError):
        reg.publish("m", trained_loans_model, PASSED, {"report/bad.bin": Unserialisable()})
    assert reg.versions("m") == []
    assert [p.name for p in (reg.root_path / "m").iterdir()] == []


def test_staging_directories_are_not_versions(reg, trained_loans_model):
    reg.publish("m", trained_loans_model, PASSED)
    (reg.root_path / "m" / f"{layout.STAGING_PREFIX}x").mkdir()
    (reg.root_path / "m" / "half-written").mkdir()  # no metadata.json: not complete
    assert len(reg.versions("m")) == 1


def test_a_changed_model_file_is_refused_before_loading(reg, trained_loans_model, key):
    v = reg.publish("m", trained_loans_model, PASSED, signing_key=key)
    model_file = reg.root_path / "m" / v / layout.MODEL_FILE
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        reg.verify("m", v)
    with pytest.raises(IntegrityError, match="changed after the version was signed"):
        RegistryLoader(reg.store, "m", signing.raw_public(key)).load(v)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "v 1", "..", "x;rm"])
def test_invalid_names_and_escapes_are_refused(reg, bad):
    with pytest.raises(RegistryError):
        reg.version_dir("m", bad)


def test_promote_alias_and_rollback(reg, trained_loans_model):
    v1, v2, v3 = (reg.publish("m", trained_loans_model, PASSED) for _ in range(3))
    with pytest.raises(RegistryError, match="no promoted version"):
        reg.resolve("m")
    for v in (v1, v2, v3):
        releases.promote(reg, "m", v)
    assert reg.alias("m") == v3 == reg.resolve("m")
    assert (reg.root_path / "m" / layout.RECORDS_DIR / layout.ALIAS).read_text() == f"{v3}\n"
    assert reg.history("m") == [v1, v2, v3]
    assert releases.rollback(reg, "m") == v2 and reg.resolve("m") == v2
    assert releases.rollback(reg, "m") == v1 and reg.history("m") == [v1]
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        releases.rollback(reg, "m")
    assert reg.resolve("m", "latest") == v3


def test_records_live_apart_from_versions_and_old_stores_still_read(reg, trained_loans_model):
    """The Serve app may write only ``_records/`` (a mount of its own); a store written before
    that directory existed keeps its production until the next promotion moves it there."""
    v1, v2 = (reg.publish("m", trained_loans_model, PASSED) for _ in range(2))
    model_dir = reg.root_path / "m"
    (model_dir / layout.ALIAS).write_text(f"{v1}\n")  # where records sat before
    (model_dir / layout.HISTORY_FILE).write_text(json.dumps([v1]))
    assert reg.alias("m") == v1 and reg.history("m") == [v1]
    releases.promote(reg, "m", v2)
    assert (model_dir / layout.RECORDS_DIR / layout.ALIAS).read_text() == f"{v2}\n"
    assert reg.alias("m") == v2 and reg.history("m") == [v1, v2]
    assert sorted(p.name for p in (model_dir / layout.RECORDS_DIR).iterdir()) == [
        layout.ALIAS,
        layout.HISTORY_FILE,
    ]


def test_promote_refuses_failed_gates_unless_forced(reg, trained_loans_model):
    v = reg.publish("m", trained_loans_model, FAILED)
    with pytest.raises(RegistryError, match="failed its gates"):
        releases.promote(reg, "m", v)
    assert reg.alias("m") is None
    releases.promote(reg, "m", v, force=True)
    assert reg.alias("m") == v


def test_production_moves_only_through_releases():
    """One promotion path: the registry reads aliases; releases decides when they move."""
    public = {n for n in vars(ModelRegistry) if not n.startswith("_")}
    assert {"alias", "history", "resolve"} <= public
    assert not public & {"promote", "rollback", "set_alias", "load"}


def test_file_uri_store(tmp_path, trained_loans_model, loans, key):
    reg = ModelRegistry(f"file://{tmp_path}/uri-store")
    v = reg.publish("m", trained_loans_model, PASSED, signing_key=key)
    releases.promote(reg, "m", v)
    plain = ModelRegistry(tmp_path / "uri-store")
    loader = RegistryLoader(str(tmp_path / "uri-store"), "m", signing.raw_public(key))
    assert len(_proba(loader, plain.resolve("m"), loans.head(3))) == 3
    assert reg.names() == ["m"]


def test_save_model_load_model_round_trip_verifies(tmp_path, trained_loans_model, loans):
    from sparc_ray.training.estimator import SPARCClassificationModel

    trained_loans_model.save_model(tmp_path / "m")
    loaded = SPARCClassificationModel({}).load_model(tmp_path / "m")
    X = loans.drop(columns="decision")
    pd.testing.assert_frame_equal(
        pd.DataFrame(loaded.predict_proba(X)), pd.DataFrame(trained_loans_model.predict_proba(X))
    )
    (tmp_path / "m" / layout.MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        SPARCClassificationModel({}).load_model(tmp_path / "m")


def test_serving_and_batch_scoring_require_a_public_key(tmp_path, capsys, caplog):
    """A key is mandatory; serving unsigned needs `allow_unsigned: true`, and then every load
    says so in the log."""
    import argparse

    from pydantic import ValidationError

    from sparc_ray.batch.job import EXIT_BAD_INPUT, run_job
    from sparc_ray.serving.app import AppArgs, build_app
    from sparc_ray.training.job_args import add_score_arguments

    with pytest.raises(ValidationError, match="public_key is required"):
        build_app(AppArgs(model_store=str(tmp_path), model_name="m"))
    assert AppArgs(model_name="m", allow_unsigned=True).public_key is None
    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    args = parser.parse_args(
        ["--data", "x.csv", "--name", "m", "--store", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert run_job(args) == EXIT_BAD_INPUT
    assert "--public-key is required" in capsys.readouterr().err


def test_an_unsigned_load_warns_every_time(reg, trained_loans_model, caplog):
    v = reg.publish("m", trained_loans_model, PASSED)
    loader = RegistryLoader(reg.store, "m")
    with caplog.at_level("WARNING", logger="ray.serve"):
        loader.load_metadata(v)
        loader.load_metadata(v)
    assert sum("UNSIGNED" in r.message for r in caplog.records) == 2
