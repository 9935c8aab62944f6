"""Signing happens at publish only: a store writer cannot get a tampered version signed by
`models sign`, whatever it writes into the unsigned metadata.json (issue 18, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparc_ray.registry import layout, signing
from sparc_ray.registry.artifacts import sha256_bytes
from sparc_ray.registry.signing import SignatureError, SigningKeyError
from sparc_ray.registry.store import ModelRegistry

NAME = "loans"
META = {"gates": {"passed": True, "failed": []}}
EVIL = b"\x80\x04K\x01."  # any other pickle


@pytest.fixture
def key(tmp_path):
    private, public = signing.generate_key_pair(tmp_path / "keys" / "train")
    return signing.load_private_key(str(private)), signing.public_key_bytes(str(public))


@pytest.fixture
def legacy(tmp_path, trained_loans_model):
    """An unsigned version, and the digests of its files as training recorded them."""
    reg = ModelRegistry(tmp_path / "store")
    meta = {
        **META,
        "classes": trained_loans_model.classes,
        "features": [f.to_dict() for f in trained_loans_model.schema],
    }
    version = reg.publish(NAME, trained_loans_model, meta, {"report/metrics.json": b"{}"})
    vdir = Path(reg.version_dir(NAME, version))
    recorded = {
        p.relative_to(vdir).as_posix(): sha256_bytes(p.read_bytes())
        for p in vdir.rglob("*")
        if p.is_file()
    }
    digests_file = tmp_path / "digests.json"
    digests_file.write_text(json.dumps(recorded))
    return reg, version, vdir, digests_file


def _swap_pickle(vdir: Path) -> None:
    """The writer's attack: another pickle, and metadata.json's sha256 rewritten to match."""
    evil = EVIL
    (vdir / layout.MODEL_FILE).write_bytes(evil)
    meta = json.loads((vdir / layout.METADATA_FILE).read_text())
    meta["sha256"] = sha256_bytes(evil)
    (vdir / layout.METADATA_FILE).write_text(json.dumps(meta, indent=2))


def test_a_swapped_pickle_matching_metadata_json_is_not_signed(legacy, key):
    reg, version, vdir, digests_file = legacy
    _swap_pickle(vdir)
    reg.verify(NAME, version)  # metadata.json agrees with the swapped pickle...
    with pytest.raises(SignatureError, match="needs the sha256 of each of its files"):
        reg.sign(NAME, version, key[0])  # ...which no longer vouches for it
    expected = signing.load_digests(digests_file.read_bytes(), str(digests_file))
    with pytest.raises(SignatureError) as refused:
        reg.sign(NAME, version, key[0], expected)
    assert f"{layout.MODEL_FILE}: sha256 {sha256_bytes(EVIL)}" in str(refused.value)
    assert f"{layout.METADATA_FILE}: sha256" in str(refused.value)
    assert not (vdir / layout.SIGNATURE_FILE).exists()


def test_an_added_or_missing_file_is_not_signed(legacy, key):
    reg, version, vdir, digests_file = legacy
    expected = signing.load_digests(digests_file.read_bytes(), str(digests_file))
    (vdir / "model.onnx").write_bytes(b"planted")  # a file training never wrote
    with pytest.raises(SignatureError, match=r"model.onnx: sha256 .* != expected none"):
        reg.sign(NAME, version, key[0], expected)
    (vdir / "model.onnx").unlink()
    (vdir / "report" / "metrics.json").unlink()  # a file training wrote, gone
    with pytest.raises(SignatureError, match=r"report/metrics.json: sha256 missing != expected"):
        reg.sign(NAME, version, key[0], expected)
    assert not (vdir / layout.SIGNATURE_FILE).exists()


def test_a_version_matching_the_operators_digests_is_signed_and_verifies(legacy, key):
    reg, version, vdir, digests_file = legacy
    expected = signing.load_digests(digests_file.read_bytes(), str(digests_file))
    assert reg.sign(NAME, version, key[0], expected) == expected  # what was signed
    assert reg.verify(NAME, version, key[1]).version == version
    record = json.loads((vdir / layout.SIGNATURE_FILE).read_text())
    assert record["files"] == expected
    # the same digests given as a signature.json-like record
    wrapped = signing.load_digests(json.dumps({"files": expected}).encode(), "wrapped")
    assert wrapped == expected


@pytest.mark.parametrize(
    "blob",
    [b"[]", b"{}", b'{"model.joblib": "abc"}', b'{"model.joblib": 1}', b"not json", b"{" * 2**21],
)
def test_a_digests_file_that_is_not_one_is_refused(blob):
    with pytest.raises(SigningKeyError, match=r"digests d\.json"):
        signing.load_digests(blob, "d.json")
