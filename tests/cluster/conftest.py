"""One multi-node cluster for every test of this package (started once, ~30 s, and stopped
when the package is done, before the rest of the suite runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sparc_ray.registry import signing
from tests.cluster.netns import NetnsUnavailable
from tests.cluster.nodes import MultiNodeCluster


@pytest.fixture(scope="package")
def multinode(tmp_path_factory) -> Iterator[MultiNodeCluster]:
    """Head (no CPUs) + node_a (where Tune's trials may run) + node_b running; node_c is
    defined but left to the tests to start (a node joining). A signing key pair in
    ``workdir/keys`` as `make demo` makes it."""
    workdir = tmp_path_factory.mktemp("multinode")
    signing.generate_key_pair(workdir / "keys/model_signing")
    try:
        cluster = MultiNodeCluster(workdir, workers=3, trial_nodes=("node_a",))
    except NetnsUnavailable as exc:
        pytest.fail(f"multi-node tests need network namespaces (run as root): {exc}")
    try:
        cluster.start(workers=2)
        yield cluster
    finally:
        cluster.stop()
