"""Compiled inference at serving time: score an ONNX graph written by
``sparc_ray.training.onnx_export``
with onnxruntime, from the Validator's per-feature arrays. Loading verifies the file's sha256,
refuses a graph with external data (tensors read from other files), and executes no code
(no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes

OUTPUT = "probabilities"
META_KEY = "sparc.onnx"  # model metadata: {"classes": [...], "categorical_fill": str | None}


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, sparse ones, and node attributes, in
    subgraphs (``If``, ``Loop``, ``Scan`` bodies) too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes: Sequence[onnx.AttributeProto]) -> Iterator[onnx.TensorProto]:
    for attr in attributes:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [attr.sparse_tensor, *attr.sparse_tensors]:
            yield from (sparse.values, sparse.indices)
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for graph in attr.graphs:
            yield from _tensors(graph)


def external_data(data: bytes) -> list[str]:
    """Names of the tensors in an ONNX model whose data lives outside it (``data_location``
    EXTERNAL): onnxruntime would read them from files next to the process."""
    model = onnx.ModelProto.FromString(data)
    tensors = [*_tensors(model.graph)]
    for function in model.functions:
        for node in function.node:
            tensors.extend(_attribute_tensors(node.attribute))
    return [
        t.name or "(unnamed)"
        for t in tensors
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data)
    ]


class OnnxModel:
    """onnxruntime scorer for a graph written by ``export_onnx`` (one thread, no pickle)."""

    def __init__(self, session: Any, names: list[str], kinds: list[str], classes: list) -> None:
        self.session, self.feature_names, self.classes = session, names, classes
        onnx_type = {"numeric": "tensor(double)", "categorical": "tensor(string)"}
        inputs = {i.name: i.type for i in session.get_inputs()}
        if inputs != {n: onnx_type.get(k) for n, k in zip(names, kinds, strict=True)}:
            raise ValueError(f"ONNX inputs {inputs} do not match features {names} / {kinds}")
        meta = json.loads(session.get_modelmeta().custom_metadata_map[META_KEY])
        if list(map(str, meta["classes"])) != list(map(str, classes)):
            raise ValueError(f"ONNX classes {meta['classes']} != {classes}")
        self._numeric = [n for n, k in zip(names, kinds, strict=True) if k == "numeric"]
        self._categorical = [n for n, k in zip(names, kinds, strict=True) if k == "categorical"]
        self._fill = meta["categorical_fill"] or ""
        self._run, self._outputs = session.run, [OUTPUT]

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        expected_sha256: str,
        feature_names: Sequence[str],
        feature_kinds: Sequence[str],
        classes: Sequence[Any],
    ) -> OnnxModel:
        """Verify ``data`` against ``expected_sha256``, then open a single-threaded session."""
        actual = sha256_bytes(data)
        if actual != expected_sha256:
            raise IntegrityError(f"ONNX model sha256 {actual} != recorded {expected_sha256}")
        try:
            external = external_data(data)
        except Exception as exc:  # not a model protobuf: no session for it either
            raise IntegrityError(f"ONNX model does not parse: {type(exc).__name__}") from None
        if external:  # refused before a session exists: it would read files on this host
            raise IntegrityError(f"ONNX model refers to external data: {external[:5]}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        return cls(session, list(feature_names), list(feature_kinds), list(classes))

    def _strings(self, values: np.ndarray) -> np.ndarray:
        """A categorical column (str cells: the input rules admit nothing else) as an object
        array, missing values replaced by the training fill value."""
        values = np.asarray(values, dtype=object)
        missing = pd.isna(values)
        if not missing.any():
            return values
        out = values.copy()
        out[missing] = self._fill
        return out

    def predict_proba(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n_rows, n_classes] float64 probabilities in ``classes`` order.

        ``columns``: numeric float64 1-D arrays (NaN = missing, imputed in the graph);
        categorical 1-D object arrays of str (NaN/None = missing, replaced here by the training
        fill value). Unseen categories one-hot to zeros, as sklearn's ``handle_unknown="ignore"``.
        """
        feed = {n: np.ascontiguousarray(columns[n], float).reshape(-1, 1) for n in self._numeric}
        for name in self._categorical:
            feed[name] = self._strings(columns[name]).reshape(-1, 1)
        if next(iter(feed.values())).shape[0] == 0:
            return np.zeros((0, len(self.classes)))
        return self._run(self._outputs, feed)[0]
