"""Tests on a multi-node Ray cluster on this one machine (a head without CPUs and worker nodes,
each in its own network namespace): work spread over nodes, and nodes lost and returning."""
