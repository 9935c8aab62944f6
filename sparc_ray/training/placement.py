"""Where Tune's trial actors may run: never on the training head, which holds the signing key.

A trial requests no CPU (its folds do), so Ray would happily place it on the head, whose
``num-cpus`` is 0, and code running there as the same user can read the private key. Worker
nodes that may run trials advertise a custom resource, ``ray start
--resources='{"sparc_trials": 100}'`` (kuberay/rayjob-train.yaml: the worker group's
``rayStartParams.resources``); each trial then requests one unit of it, which the head never
offers. A cluster where no node advertises it (``make demo``, a laptop, the tests: one node
that is also the head) keeps the previous placement, and the job says so in its log. The
check looks at the cluster when the search starts, so an autoscaled cluster must keep at
least one such worker up (rayjob-train.yaml: ``minReplicas: 1``).
"""

from __future__ import annotations

from collections.abc import Mapping

TRIAL_NODE_RESOURCE = "sparc_trials"
TRIAL_NODE_UNITS = 100  # what a worker advertises: how many trials it may hold at once
# A trial holds no CPU (its folds do): a little memory, so that its request is not empty.
TRIAL_RESOURCES: dict[str, float] = {"cpu": 0, "memory": 128 * 2**20}


def trial_resources(cluster: Mapping[str, float]) -> dict[str, float]:
    """A trial's resource request on a cluster with ``cluster`` resources (e.g.
    ``ray.cluster_resources()``): one ``sparc_trials`` unit when any node offers them."""
    if cluster.get(TRIAL_NODE_RESOURCE, 0) >= 1:
        return {**TRIAL_RESOURCES, TRIAL_NODE_RESOURCE: 1}
    print(
        f"[sparc-ray] warning: no node advertises the {TRIAL_NODE_RESOURCE!r} resource: Tune "
        "trials may run on any node, the training head included (fine on a single-node dev "
        f'cluster; elsewhere start workers with --resources=\'{{"{TRIAL_NODE_RESOURCE}": '
        f"{TRIAL_NODE_UNITS}}}')",
        flush=True,
    )
    return dict(TRIAL_RESOURCES)
