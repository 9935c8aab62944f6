"""An S3-compatible server for tests: moto's standalone server (real HTTP, real S3 API) on a
free local port, started in this process, with test credentials in the environment."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def running_s3(ip: str = "127.0.0.1") -> Iterator[tuple[str, Any]]:
    """``(host:port, boto3 client)`` of a fresh server listening on ``ip`` (e.g. the address
    the multi-node cluster's hosts reach); the environment is restored after."""
    mp = pytest.MonkeyPatch()
    for var, value in CREDENTIALS.items():
        mp.setenv(var, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind((ip, 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address=ip, port=port, verbose=False)
    server.start()
    try:
        yield f"{ip}:{port}", boto3.client("s3", endpoint_url=f"http://{ip}:{port}")
    finally:
        server.stop()
        mp.undo()


def s3_uri(endpoint: str, bucket: str, key: str) -> str:
    """A pyarrow-style URI of ``bucket/key`` on the server at ``endpoint``."""
    return f"s3://{bucket}/{key}?endpoint_override={endpoint}&scheme=http"
