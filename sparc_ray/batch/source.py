"""Rows to score as a Ray Data datasource: CSV / Parquet files (a path, a URI or a directory
of them) or a bundled dataset, streamed in Arrow batches that carry a ``row_id``.

Ray's own ``read_csv`` / ``read_parquet`` do not number rows, and a scored row must be traceable
to its input line, so each file is one read task that counts its rows as it streams them. Only
the model's feature columns are read, and checked by the scorer, so one bad cell rejects one
row, not the read. A CSV's numeric features are parsed as numbers (2.5x smaller blocks than
text, nothing to convert later) while every cell passes the input rules; from the first block
with a cell they refuse, the rest of the file is read as text, so that the scorer names that
cell as it is written.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import DataContext, Datasource, ReadTask
from ray.data.block import BlockMetadata

from sparc_ray.data.loading import BUILTIN_PREFIX, load_dataset
from sparc_ray.inference.input_rules import FeatureCheck, check_column
from sparc_ray.registry import storage

ROW_ID, SOURCE = "row_id", "source"
SUFFIXES = (".csv", ".parquet", ".pq")
BATCH_ROWS = 65_536  # Parquet rows per streamed batch
CSV_BLOCK_BYTES = 8 << 20  # CSV bytes parsed per streamed batch


class InputError(ValueError):
    """The input cannot be scored at all (not found, no feature column, ...): exit 2."""


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq"))


def _numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


@dataclass(frozen=True)
class InputFile:
    path: str  # within the filesystem
    name: str  # as shown in the ``source`` column: relative to the input directory
    size: int


class RowSource(Datasource):
    """The files at ``location`` (or ``builtin:NAME``), checked against the model's features."""

    def __init__(self, location: str, features: list[FeatureCheck]) -> None:
        self.location, self.features = location, features
        self.names = [f.name for f in features]
        self.builtin = location.startswith(BUILTIN_PREFIX)
        self.fs: pafs.FileSystem | None = None  # a bundled dataset has no files
        if self.builtin:
            self.files = [InputFile(location, location, 0)]
        else:
            self.fs, self.files = self._list(location)
        self.extra_columns = self._check_columns()

    @property
    def multi_file(self) -> bool:
        return len(self.files) > 1

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The input files' filesystem."""
        if self.fs is None:
            raise InputError(f"{self.location} is a bundled dataset: it has no files to open")
        return self.fs

    def _list(self, location: str) -> tuple[pafs.FileSystem, list[InputFile]]:
        try:
            fs, path = storage.open_fs(location)
            info = fs.get_file_info(path)
        except Exception as exc:
            raise InputError(f"cannot open {location!r}: {exc}") from exc
        if info.type == pafs.FileType.File:
            return fs, [InputFile(path, posixpath.basename(path), info.size or 0)]
        if info.type != pafs.FileType.Directory:
            raise InputError(f"input not found: {location}")
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = [
            InputFile(i.path, posixpath.relpath(i.path, path), i.size or 0)
            for i in sorted(infos, key=lambda i: i.path)
            if i.type == pafs.FileType.File
            and i.path.endswith(SUFFIXES)
            and not any(
                p.startswith((".", "_")) for p in posixpath.relpath(i.path, path).split("/")
            )
        ]
        if not files:
            raise InputError(f"no {'/'.join(SUFFIXES)} files under {location}")
        return fs, files

    def _schema(self, file: InputFile) -> pa.Schema:
        if self.builtin:
            return pa.Schema.from_pandas(load_dataset(file.path)[0], preserve_index=False)
        try:
            if _is_parquet(file.path):
                return pq.read_schema(self.filesystem.open_input_file(file.path))
            with self.filesystem.open_input_stream(file.path) as stream:
                return pacsv.open_csv(stream, convert_options=self._csv_convert()).schema
        except Exception as exc:
            raise InputError(f"cannot read {file.name}: {exc}") from exc

    def _check_columns(self) -> list[str]:
        """Every file has every feature, with a type that can hold it; returns the columns
        that are not features (ignored, e.g. an id or the label)."""
        extra: set[str] = set()
        for file in self.files:
            schema = self._schema(file)
            missing = [n for n in self.names if n not in schema.names]
            if missing:
                raise InputError(f"{file.name}: missing feature columns {missing}")
            for f in self.features:
                t = schema.field(f.name).type
                ok = _numeric_type(t) or _stringy(t) or pa.types.is_decimal(t)
                if not ok or (not f.numeric and pa.types.is_decimal(t)):
                    kind = "numeric" if f.numeric else "categorical"
                    raise InputError(f"{file.name}: column {f.name!r} ({t}) cannot hold {kind}")
            extra |= set(schema.names) - set(self.names)
        return sorted(extra)

    def _csv_convert(
        self, features_only: bool = False, typed: bool = False
    ) -> pacsv.ConvertOptions:
        # Text, or numbers for the numeric features when ``typed``. Empty cells (and NA / NaN /
        # null) are missing values either way, as when training reads a CSV.
        return pacsv.ConvertOptions(
            column_types={
                f.name: pa.float64() if typed and f.numeric else pa.string() for f in self.features
            },
            strings_can_be_null=True,
            include_columns=self.names if features_only else None,
        )

    # -- Ray Data -------------------------------------------------------------------------
    def estimate_inmemory_data_size(self) -> int | None:
        return sum(f.size for f in self.files) or None

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        """One task per file: its rows stream in order, so the row ids count lines."""
        return [
            ReadTask(
                functools.partial(self._read, file),
                BlockMetadata(None, file.size or None, None, input_files=(file.name,)),
                per_task_row_limit=per_task_row_limit,
            )
            for file in self.files
        ]

    def _batches(self, file: InputFile) -> Iterator[pa.RecordBatch | pa.Table]:
        if self.builtin:
            frame = load_dataset(file.path)[0][self.names]
            yield pa.Table.from_pandas(frame, preserve_index=False)
        elif _is_parquet(file.path):
            reader = pq.ParquetFile(self.filesystem.open_input_file(file.path))
            yield from reader.iter_batches(batch_size=BATCH_ROWS, columns=self.names)
        else:
            yield from self._csv_batches(file)

    def _csv_stream(self, file: InputFile, typed: bool) -> Generator[pa.RecordBatch]:
        with self.filesystem.open_input_stream(file.path) as stream:
            yield from pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                convert_options=self._csv_convert(features_only=True, typed=typed),
            )

    def _clean(self, batch: pa.RecordBatch) -> bool:
        """Every numeric cell of a typed block passes the input rules (the scorer's own)."""
        return not any(
            check_column(batch.column(f.name), f).bad.any() for f in self.features if f.numeric
        )

    def _csv_batches(self, file: InputFile) -> Iterator[pa.RecordBatch]:
        """Typed blocks while they are clean; then the rest of the file as text (read again
        from its start, as many rows dropped as were given: ``skip_rows_after_names`` would
        count the blank lines the reader otherwise skips)."""
        given = 0
        typed = self._csv_stream(file, typed=True)
        try:
            for batch in typed:
                if not self._clean(batch):
                    break
                given += batch.num_rows
                yield batch
            else:
                return
        except pa.ArrowInvalid:  # a cell that is no number
            pass
        finally:
            typed.close()
        for batch in self._csv_stream(file, typed=False):
            if given >= batch.num_rows:
                given -= batch.num_rows
                continue
            yield batch.slice(given)
            given = 0

    def _read(self, file: InputFile) -> Iterator[pa.Table]:
        start = 0
        for batch in self._batches(file):
            table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            table = table.select(self.names)
            ids = pa.array(range(start, start + table.num_rows), pa.int64())
            table = table.append_column(ROW_ID, ids)
            if self.multi_file:
                table = table.append_column(SOURCE, pa.array([file.name] * table.num_rows))
            start += table.num_rows
            yield table
