"""What serving and scoring read from the store, as a store writer would plant it (issue 18,
items 4 and 8): ONNX graphs that pull in other files, oversized records and odd ids. Real
files on disk; no Ray."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sparc_ray.inference.onnx_model import META_KEY, OUTPUT, OnnxModel
from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes

SECRET = np.array([[0.25, 0.75]])  # what a token file would hold, as two float64s


def _external(name: str, location: str) -> TensorProto:
    """A [1, 2] double tensor whose data is read from ``location`` (relative to the process)."""
    tensor = helper.make_tensor(name, TensorProto.DOUBLE, [1, 2], [0.0, 0.0])
    tensor.ClearField("double_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _model(in_subgraph: bool) -> bytes:
    """probabilities = x * 0 + W, with W from an external file: at the top level, or inside
    an ``If`` branch (a subgraph)."""
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 2])
    zero = helper.make_tensor("zero", TensorProto.DOUBLE, [1], [0.0])
    nodes = [helper.make_node("Mul", ["x", "zero"], ["x0"])]
    inits = [zero]
    if in_subgraph:
        w_out = helper.make_tensor_value_info("w", TensorProto.DOUBLE, [1, 2])
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["w"], value=_external("w_value", "token.bin"))],
            "branch",
            [],
            [w_out],
        )
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        inits.append(cond)
        nodes.append(
            helper.make_node("If", ["cond"], ["w"], then_branch=branch, else_branch=branch)
        )
    else:
        inits.append(_external("w", "token.bin"))
    nodes.append(helper.make_node("Add", ["x0", "w"], [OUTPUT]))
    graph = helper.make_graph(nodes, "g", [x], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = model.metadata_props.add()
    meta.key, meta.value = META_KEY, json.dumps({"classes": ["a", "b"], "categorical_fill": None})
    return model.SerializeToString()


@pytest.mark.parametrize("in_subgraph", [False, True], ids=["initializer", "subgraph"])
def test_an_onnx_model_with_external_data_is_refused_before_a_session(
    tmp_path, monkeypatch, in_subgraph
):
    """A token file in the working directory would come back as probabilities."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "token.bin").write_bytes(SECRET.tobytes())
    data = _model(in_subgraph)
    onnx.checker.check_model(onnx.ModelProto.FromString(data))
    with pytest.raises(IntegrityError, match="external data"):
        OnnxModel.from_bytes(data, sha256_bytes(data), ["x"], ["numeric"], ["a", "b"])


@pytest.fixture
def signed(tmp_path, trained_loans_model):
    """A store with one signed version, and its loader."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sparc_ray.inference.loader import RegistryLoader
    from sparc_ray.registry import signing
    from sparc_ray.registry.store import ModelRegistry

    key = Ed25519PrivateKey.generate()
    reg = ModelRegistry(tmp_path / "store")
    meta = {
        "gates": {"passed": True, "failed": []},
        "classes": trained_loans_model.classes,
        "features": [f.to_dict() for f in trained_loans_model.schema],
    }
    version = reg.publish("m", trained_loans_model, meta, signing_key=key)
    return reg, version, RegistryLoader(reg.store, "m", signing.raw_public(key))


def test_a_huge_signature_or_record_is_refused_without_being_read_whole(signed, monkeypatch):
    import tracemalloc

    from sparc_ray.registry import layout, releases
    from sparc_ray.registry.store import RegistryError

    reg, version, loader = signed
    signature = reg.root_path / "m" / version / layout.SIGNATURE_FILE
    with signature.open("r+b") as fh:  # valid JSON start, then 300 MB (sparse on disk)
        fh.seek(300 * 2**20)
        fh.write(b" ")
    candidate = reg.root_path / "m" / layout.RECORDS_DIR / layout.CANDIDATE_FILE
    candidate.parent.mkdir(exist_ok=True)
    candidate.write_bytes(b"{" + b" " * (50 * 2**20) + b"}")
    tracemalloc.start()
    with pytest.raises(RegistryError, match=r"over .* bytes"):
        loader.load(version)
    with pytest.raises(RegistryError, match=r"over .* bytes"):
        releases.current_release(reg, "m")
    records = loader.release_records()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 * 2**20, peak  # neither file was read whole
    assert records.release is None and "candidate.json" in (records.error or "")


@pytest.mark.parametrize("bad", ["v1\n", "v1\r\n", "\nv1", "v1/..", "v 1"])
def test_a_version_id_with_a_newline_or_separator_is_refused(bad):
    from sparc_ray.registry.store import RegistryError, check_name

    with pytest.raises(RegistryError, match="invalid version"):
        check_name(bad)
    assert check_name("v1.2_3-x") == "v1.2_3-x"


@pytest.mark.parametrize(
    "store, leaked",
    [
        ("s3://models-bucket/prod/registry?endpoint_override=10.0.0.5:9000",
         ["models-bucket/prod/registry/m/v1/metadata.json"]),
        ("file:///srv/sparc/store", ["/srv/sparc/store/m/v1", "file:///srv/sparc/store/m"]),
        ("/srv/sparc/store", ["/srv/sparc/store/m/v1/signature.json"]),
    ],
)  # fmt: skip
def test_errors_shown_to_callers_name_no_store_location(store, leaked):
    from sparc_ray.serving.responses import redact

    for path in leaked:
        text = redact(f"cannot read {path}: denied (store {store}; see s3://other/key?x=1)", store)
        assert text is not None
        for secret in ("models-bucket", "/srv/sparc", "endpoint_override", "10.0.0.5", "other"):
            assert secret not in text, text
        assert text.startswith("cannot read <") and "denied" in text
