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
