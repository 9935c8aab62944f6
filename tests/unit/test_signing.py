"""Signed versions on real files: what serving refuses, and what it loads (and from where)."""

import json
import shutil
import stat

import numpy as np
import pytest

from sparc_ray.cli import main as cli
from sparc_ray.data.loading import columns_from_frame
from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import layout, signing
from sparc_ray.registry.signing import SignatureError
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.job import EXIT_BAD_INPUT
from sparc_ray.training.job import main as train_main
from sparc_ray.training.onnx_export import export_onnx

NAME = "loans"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    private, public = signing.generate_key_pair(d / "a")
    other_private, other_public = signing.generate_key_pair(d / "b")
    return {
        "key": signing.load_private_key(str(private)),
        "pub": signing.public_key_bytes(str(public)),
        "private_path": private,
        "public_path": public,
        "other_key": signing.load_private_key(str(other_private)),
        "other_pub": signing.public_key_bytes(str(other_public)),
    }


@pytest.fixture(scope="module")
def exported(trained_loans_model, loans):
    X = loans.drop(columns="decision")
    data, report = export_onnx(trained_loans_model, X.head(100))
    meta = {
        "gates": {"passed": True, "failed": []},
        "classes": trained_loans_model.classes,
        "features": [f.to_dict() for f in trained_loans_model.schema],
        "onnx": report,
    }
    return meta, {report["file"]: data}, X.head(20)


@pytest.fixture
def reg(tmp_path):
    return ModelRegistry(tmp_path / "store")


def _publish(reg, model, exported, key=None, onnx=True):
    meta, files, _ = exported
    if not onnx:
        meta, files = {**meta, "onnx": {"status": "fallback", "reason": "for a test"}}, {}
    return reg.publish(NAME, model, meta, files, signing_key=key)


def _vdir(reg, version):
    return reg.root_path / NAME / version


def _rewrite_metadata(reg, version, **changes):
    path = _vdir(reg, version) / layout.METADATA_FILE
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_signed_version_loads_with_onnx_and_with_the_sklearn_fallback(
    reg, keys, trained_loans_model, exported
):
    loader = RegistryLoader(str(reg.root_path), NAME, keys["pub"])
    X = exported[2]
    for onnx, engine in ((True, "onnx"), (False, "sklearn")):
        version = _publish(reg, trained_loans_model, exported, keys["key"], onnx=onnx)
        loaded = loader.load(version)
        assert loaded.engine == engine
        assert loaded.describe()["serving"]["signed_by"] == signing.key_id(keys["pub"])
        kinds = loaded.metadata.feature_kinds
        proba = loaded.scorer.predict_proba(columns_from_frame(X, list(X.columns), kinds))
        np.testing.assert_allclose(proba, trained_loans_model.predict_proba(X), atol=1e-5)
        assert reg.verify(NAME, version, keys["pub"]).version == version


def test_metadata_rewritten_to_match_a_swapped_model_file_is_refused(
    reg, keys, trained_loans_model, exported
):
    good = _publish(reg, trained_loans_model, exported, keys["key"], onnx=False)
    other = _publish(reg, trained_loans_model, exported, keys["key"], onnx=False)
    # An attacker with write access: another (here: harmless) pickle and a matching digest.
    (_vdir(reg, other) / layout.MODEL_FILE).write_bytes(b"not the signed pickle")
    _rewrite_metadata(reg, other, sha256=signing.sha256_bytes(b"not the signed pickle"))
    reg.verify(NAME, other)  # the sha256 alone is satisfied ...
    loader = RegistryLoader(str(reg.root_path), NAME, keys["pub"])
    with pytest.raises(SignatureError, match=r"metadata\.json was changed after"):
        loader.load(other)  # ... the signature is not
    with pytest.raises(SignatureError, match=r"metadata\.json was changed after"):
        loader.load_metadata(other)
    assert loader.load(good).version == good


def test_each_kind_of_tampering_is_refused_with_its_reason(
    reg, keys, trained_loans_model, exported
):
    loader = RegistryLoader(str(reg.root_path), NAME, keys["pub"])

    def fresh(key=keys["key"]):
        return _publish(reg, trained_loans_model, exported, key)

    unsigned = fresh(key=None)
    with pytest.raises(SignatureError, match="is unsigned"):
        loader.load(unsigned)
    with pytest.raises(SignatureError, match=r"signed by key .* not the configured key"):
        loader.load(fresh(key=keys["other_key"]))
    swapped_onnx = fresh()
    path = _vdir(reg, swapped_onnx) / layout.ONNX_FILE
    path.write_bytes(path.read_bytes()[:-4] + b"evil")
    with pytest.raises(SignatureError, match=r"model\.onnx was changed after"):
        loader.load(swapped_onnx)
    forged = fresh()
    sig_path = _vdir(reg, forged) / layout.SIGNATURE_FILE
    record = json.loads(sig_path.read_text())
    record["files"][layout.ONNX_FILE] = "0" * 64  # re-pointed digest, old signature
    sig_path.write_text(json.dumps(record))
    with pytest.raises(SignatureError, match="does not match its contents"):
        loader.load(forged)
    moved = fresh()  # a signed version copied under another id
    copy = moved[:-6] + "ffffff"
    shutil.copytree(_vdir(reg, moved), _vdir(reg, copy))
    with pytest.raises(SignatureError, match="the signature is for"):
        loader.load(copy)
    with pytest.raises(SignatureError):  # promotion checks the same
        reg.verify(NAME, unsigned, keys["pub"])


def test_without_a_public_key_only_onnx_is_served_never_a_pickle(
    reg, trained_loans_model, exported
):
    loader = RegistryLoader(str(reg.root_path), NAME)
    assert loader.load(_publish(reg, trained_loans_model, exported)).engine == "onnx"
    fallback = _publish(reg, trained_loans_model, exported, onnx=False)
    with pytest.raises(SignatureError, match="requires a signed version and `public_key`"):
        loader.load(fallback)


def test_signing_an_existing_version_checks_its_files_first(
    reg, keys, trained_loans_model, exported
):
    version = _publish(reg, trained_loans_model, exported)
    files = {
        p.relative_to(_vdir(reg, version)).as_posix(): p for p in _vdir(reg, version).rglob("*")
    }
    recorded = {
        rel: signing.sha256_bytes(p.read_bytes()) for rel, p in files.items() if p.is_file()
    }
    reg.sign(NAME, version, keys["key"], recorded)  # the digests the operator trusts
    reg.verify(NAME, version, keys["pub"])
    broken = _publish(reg, trained_loans_model, exported)
    (_vdir(reg, broken) / layout.MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(signing.IntegrityError):
        reg.sign(NAME, broken, keys["key"], recorded)
    assert not (_vdir(reg, broken) / layout.SIGNATURE_FILE).exists()


def test_keys_are_read_from_a_file_env_or_pem_and_written_private(tmp_path, keys, monkeypatch):
    assert stat.S_IMODE(keys["private_path"].stat().st_mode) == 0o600
    with pytest.raises(signing.SigningKeyError, match="refusing to overwrite"):
        signing.generate_key_pair(keys["private_path"].with_suffix(""))
    pem = keys["private_path"].read_text()
    monkeypatch.setenv(signing.KEY_PEM_ENV, pem)
    assert signing.raw_public(signing.load_private_key()) == keys["pub"]
    monkeypatch.setenv(signing.KEY_FILE_ENV, str(keys["private_path"]))
    assert signing.raw_public(signing.load_private_key()) == keys["pub"]
    assert signing.public_key_bytes(keys["public_path"].read_text()) == keys["pub"]
    with pytest.raises(signing.SigningKeyError, match="No such file"):
        signing.load_private_key(str(tmp_path / "missing.key"))
    with pytest.raises(signing.SigningKeyError, match="not an unencrypted PEM key"):
        signing.load_private_key(str(keys["public_path"]))
    with pytest.raises(signing.SigningKeyError, match="sparc-ray keys generate"):
        signing.public_key_bytes(str(tmp_path / "missing.pub"))


def test_cli_generates_signs_and_verifies(tmp_path, capsys, reg, trained_loans_model, exported):
    prefix = tmp_path / "k" / "signing"
    assert cli(["keys", "generate", "--out", str(prefix)]) == 0
    version = _publish(reg, trained_loans_model, exported)
    store = ["--store", str(reg.root_path), "--name", NAME]
    pub = ["--public-key", f"{prefix}.pub"]
    assert cli(["models", "verify", version, *store, *pub]) == 2  # unsigned
    assert "is unsigned" in capsys.readouterr().err
    # metadata.json vouches for nothing: sign needs the operator's digests (issue 18)
    sign = ["models", "sign", version, *store, "--signing-key", f"{prefix}.key"]
    assert cli(sign) == 2
    assert "sign needs --digests FILE" in capsys.readouterr().err
    vdir = _vdir(reg, version)
    recorded = {
        p.relative_to(vdir).as_posix(): signing.sha256_bytes(p.read_bytes())
        for p in vdir.rglob("*")
        if p.is_file()
    }
    digests = tmp_path / "digests.json"
    digests.write_text(json.dumps({**recorded, "model.joblib": "0" * 64}))
    assert cli([*sign, "--digests", str(digests)]) == 2  # a file that is not as recorded
    digests.write_text(json.dumps(recorded))
    assert cli([*sign, "--digests", str(digests)]) == 0
    assert f"signed these {len(recorded)} files" in capsys.readouterr().out
    assert cli(["models", "verify", version, *store, *pub]) == 0
    assert cli(["models", "promote", version, *store, *pub]) == 0
    assert reg.alias(NAME) == version


def test_training_with_an_unreadable_key_exits_before_writing(tmp_path):
    store = tmp_path / "store"
    code = train_main(
        ["--store", str(store), "--signing-key", str(tmp_path / "nope.key"), "--no-promote"]
    )
    assert code == EXIT_BAD_INPUT and not store.exists()
