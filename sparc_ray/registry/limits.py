"""How much of a store file a reader takes in. The release records and a version's
``metadata.json`` / ``signature.json`` are small; anyone who can write the store can make them
huge, so a larger one is refused after reading at most ``MAX_RECORD_BYTES + 1`` bytes."""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from sparc_ray.registry import layout

RECORD_FILES = frozenset(
    {
        layout.METADATA_FILE,
        layout.SIGNATURE_FILE,
        layout.ALIAS,
        layout.HISTORY_FILE,
        layout.CANDIDATE_FILE,
        layout.RELEASE_LOG,
    }
)
MAX_RECORD_BYTES = 8 * 2**20


def read_capped(fs: pafs.FileSystem, path: str, error: type[Exception] = ValueError) -> bytes:
    """A file's bytes; a record (``RECORD_FILES``) over ``MAX_RECORD_BYTES`` raises ``error``
    without being read whole."""
    name = posixpath.basename(path)
    with fs.open_input_stream(path) as fh:
        if name not in RECORD_FILES:
            return fh.read()
        data = fh.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise error(f"{name} is over {MAX_RECORD_BYTES} bytes: refused unread")
    return data
