"""Where files live: a local path, or any URI pyarrow's filesystem layer understands
(``s3://``, ``gs://``, ``hdfs://``, ``file://``). The data loader, the registry, Tune's
experiment storage and the Serve app all resolve locations here.

S3-compatible servers (MinIO, Ceph, moto, ...) take pyarrow's URI options, e.g.
``s3://models/prod?endpoint_override=minio.example:9000&scheme=http``; credentials come from
the usual AWS variables or instance metadata.
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """A URI unchanged; a local path made absolute (relative to the current directory)."""
    return location if is_uri(location) else os.path.abspath(location)


def open_fs(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it (no scheme, no query) of ``location``."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def is_local(fs: pafs.FileSystem) -> bool:
    """Renames are atomic here (local and POSIX shared filesystems), not on object stores."""
    return isinstance(fs, pafs.LocalFileSystem)


def join(location: str, *parts: str) -> str:
    """``location`` with path parts appended, keeping a URI's options (``?endpoint_override``)."""
    if not is_uri(location):
        return os.path.join(location, *parts)
    url = urlsplit(location)
    return urlunsplit(url._replace(path=posixpath.join(url.path or "/", *parts)))
