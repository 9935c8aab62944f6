"""The capture's files: private writes, retention and erasure (``sparc-ray capture purge``).

Captured rows are personal data as far as this project knows: raw feature rows and the
labels that arrived for them. So, on local disks, every directory the capture creates is
mode 0700 and every file 0600 (created so, never widened after); on object stores the
bucket's policy decides. Date partitions older than the retention are deleted by the writer
(``expire``); ``purge`` erases what an operator names (rows before a date, or every row and
label of some prediction ids), rewriting each affected file atomically: a local file is
replaced by rename, an object by a single PUT of the same key.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sparc_ray.registry import storage
from sparc_ray.registry.layout import CAPTURE_DATE_KEY, CAPTURE_LABELS, CAPTURE_PREDICTIONS

logger = logging.getLogger(__name__)
DIR_MODE, FILE_MODE = 0o700, 0o600
KINDS = (CAPTURE_PREDICTIONS, CAPTURE_LABELS)


def make_dirs(fs: pafs.FileSystem, root: str, parts: list[str]) -> str:
    """``root/parts...``, created as needed: 0700 on local disks (``root`` included, not its
    parents)."""
    directory = posixpath.join(root, *parts)
    if not storage.is_local(fs):
        fs.create_dir(directory, recursive=True)
        return directory
    os.makedirs(os.path.dirname(root) or "/", exist_ok=True)
    for depth in range(len(parts) + 1):
        path = posixpath.join(root, *parts[:depth])
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(path, DIR_MODE)  # whatever the umask
    return directory


def write_table(fs: pafs.FileSystem, directory: str, name: str, table: pa.Table) -> None:
    """``directory/name``: readers never see half a file (local: written as a hidden file
    with mode 0600, then renamed; object stores: one PUT)."""
    path = posixpath.join(directory, name)
    if not storage.is_local(fs):
        pq.write_table(table, path, filesystem=fs)
        return
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dates(fs: pafs.FileSystem, root: str) -> Iterable[tuple[str, str]]:
    """``(path, date)`` of every date partition under ``root``'s predictions and labels."""
    for kind in KINDS:
        selector = pafs.FileSelector(posixpath.join(root, kind), allow_not_found=True)
        for info in fs.get_file_info(selector):
            base = info.base_name
            if info.type == pafs.FileType.Directory and base.startswith(f"{CAPTURE_DATE_KEY}="):
                yield info.path, base.split("=", 1)[1]


def delete_before(location: str, before: dt.date) -> int:
    """Delete every date partition older than ``before``; returns how many."""
    fs, root = storage.open_fs(location)
    cutoff, deleted = before.isoformat(), 0
    for path, day in list(_dates(fs, root)):
        if day < cutoff:
            fs.delete_dir(path)
            deleted += 1
    return deleted


def expire(location: str, retention_days: int, now: dt.datetime | None = None) -> int:
    """Enforce the retention: partitions dated more than ``retention_days`` days before
    today (UTC) are deleted."""
    today = (now or dt.datetime.now(dt.UTC)).date()
    return delete_before(location, today - dt.timedelta(days=retention_days))


@dataclass
class Purged:
    partitions: int = 0  # date partitions deleted (--before)
    rows: int = 0  # rows and labels erased from files that stay (--prediction-id)
    files_rewritten: int = 0
    files_deleted: int = 0


def purge(
    location: str, before: dt.date | None = None, prediction_ids: Iterable[str] = ()
) -> Purged:
    """Erase captured rows and labels: every partition dated before ``before``, and every
    row and label of ``prediction_ids`` (each affected file rewritten without them)."""
    out = Purged()
    if before is not None:
        out.partitions = delete_before(location, before)
    ids = pa.array(sorted(set(prediction_ids)), pa.string())
    if len(ids) == 0:
        return out
    fs, root = storage.open_fs(location)
    for kind in KINDS:
        selector = pafs.FileSelector(posixpath.join(root, kind), True, recursive=True)
        for info in fs.get_file_info(selector):
            base = info.base_name
            if base.endswith(".parquet") and not base.startswith((".", "_")):
                _purge_file(fs, info.path, ids, out)
    return out


def _purge_file(fs: pafs.FileSystem, path: str, ids: pa.Array, out: Purged) -> None:
    with fs.open_input_file(path) as f:
        table = pq.ParquetFile(f).read()  # the file alone: no partition columns added
    hit = pc.is_in(table["prediction_id"], value_set=ids)
    n = pc.sum(hit).as_py() or 0
    if not n:
        return
    out.rows += n
    kept = table.filter(pc.invert(hit))
    if kept.num_rows == 0:
        fs.delete_file(path)
        out.files_deleted += 1
        return
    directory, name = posixpath.split(path)
    write_table(fs, directory, name, kept)
    out.files_rewritten += 1
