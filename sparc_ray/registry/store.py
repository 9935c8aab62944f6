"""Model registry: each model's versions and its records (paths: ``layout``), in a local
directory or any pyarrow URI. Locally a version is staged under a hidden name and renamed into
place; on object stores its files are written in place, ``metadata.json`` last. Records are
replaced atomically. Only ``releases`` moves ``production``; ``inference.loader`` loads."""

from __future__ import annotations

import json
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow.fs as pafs

from sparc_ray.registry import layout, limits, signing, storage
from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes
from sparc_ray.registry.layout import (
    ALIAS,
    HISTORY_FILE,
    METADATA_FILE,
    MODEL_FILE,
    RECORDS_DIR,
    SIGNATURE_FILE,
    STAGING_PREFIX,
)
from sparc_ray.registry.metadata import SCHEMA_VERSION, MetadataError, ModelMetadata

if TYPE_CHECKING:  # scikit-learn is imported only when a pipeline is published
    from sparc_ray.training.estimator import SPARCClassificationModel

VERSION_RE = re.compile(r"^[A-Za-z0-9._-]+\Z")  # \Z, not $: no trailing newline
LATEST = "latest"  # the ref ``resolve`` reads as the newest complete version
SigningKey: TypeAlias = signing.Ed25519PrivateKey
Digests: TypeAlias = dict[str, str] | None  # relative path -> sha256 (``sign``)


class RegistryError(RuntimeError):
    """Unknown model / version, bad name, or a refused operation."""


def _parse_metadata(data: bytes, where: str) -> ModelMetadata:
    """metadata.json's bytes, typed; RegistryError (naming ``where`` and the field) if not."""
    try:
        return ModelMetadata.from_json(data)
    except MetadataError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def check_name(value: str, what: str = "version") -> str:
    if not VERSION_RE.fullmatch(value or "") or value in {".", ".."} or value.startswith("."):
        raise RegistryError(f"invalid {what} {value!r}: must match {VERSION_RE.pattern}")
    return value


class ModelRegistry:
    def __init__(self, store: str | os.PathLike[str]) -> None:
        self.store = str(store)
        self.fs, root = storage.open_fs(self.store)
        self.root = root.rstrip("/")

    @property
    def root_path(self) -> Path:
        """The store as a local path (local stores only)."""
        if not storage.is_local(self.fs):
            raise RegistryError(f"{self.store} is not a local store")
        return Path(self.root)

    # -- paths --------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        """Join under the store and refuse anything that would escape it."""
        path = posixpath.normpath(posixpath.join(self.root, *parts))
        if path != self.root and not path.startswith(self.root + "/"):
            raise RegistryError(f"path {'/'.join(parts)!r} is outside the store")
        return path

    def version_dir(self, name: str, version: str) -> str:
        return self._path(check_name(name, "model name"), check_name(version))

    def _read(self, path: str) -> bytes:  # records: size-capped (``limits``)
        return limits.read_capped(self.fs, path, RegistryError)

    def _write_atomic(self, path: str, data: bytes) -> None:
        if storage.is_local(self.fs):
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(data)
            os.replace(tmp, path)
        else:  # a single-object PUT is atomic on object stores
            with self.fs.open_output_stream(path) as fh:
                fh.write(data)

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    # -- model-level records (aliases, release state) in RECORDS_DIR ----------------------
    def _records(self, name: str, rel: str) -> tuple[str, str]:
        """Where a record is written (RECORDS_DIR), and where one from before it sits."""
        return self._path(check_name(name, "model name"), RECORDS_DIR, rel), self._path(name, rel)

    def _read_record(self, name: str, rel: str) -> bytes | None:
        found = [p for p in self._records(name, rel) if self._exists(p)]
        return self._read(found[0]) if found else None

    def _write_record(self, name: str, rel: str, data: bytes) -> None:
        path = self._records(name, rel)[0]
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        self._write_atomic(path, data)

    def read_json(self, name: str, rel: str) -> Any:
        """A JSON record (e.g. ``candidate.json``), or None."""
        data = self._read_record(name, rel)
        return None if data is None else json.loads(data)

    def write_json(self, name: str, rel: str, value: Any) -> None:
        self._write_record(name, rel, json.dumps(value, indent=2, default=str).encode())

    def delete_record(self, name: str, rel: str) -> None:
        for path in filter(self._exists, self._records(name, rel)):
            self.fs.delete_file(path)

    # -- reading ------------------------------------------------------------------------
    def names(self) -> list[str]:
        sel = pafs.FileSelector(self.root, allow_not_found=True)
        return sorted(
            i.base_name
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory
            and VERSION_RE.fullmatch(i.base_name)
            and not i.base_name.startswith(".")
        )

    def versions(self, name: str) -> list[str]:
        """Complete versions (those with metadata.json), oldest first."""
        sel = pafs.FileSelector(self._path(check_name(name, "model name")), allow_not_found=True)
        found = [
            i.base_name
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")
        ]
        return sorted(
            v
            for v in found
            if self._exists(posixpath.join(self.version_dir(name, v), METADATA_FILE))
        )

    def metadata(self, name: str, version: str) -> ModelMetadata:
        """The version's metadata.json, typed; RegistryError if unknown or unreadable."""
        path = posixpath.join(self.version_dir(name, version), METADATA_FILE)
        if not self._exists(path):
            raise RegistryError(f"model {name!r} has no version {version!r} in {self.store}")
        return _parse_metadata(self._read(path), f"{name}/{version}")

    def alias(self, name: str) -> str | None:
        data = self._read_record(name, ALIAS)
        return None if data is None else data.decode().strip()

    def history(self, name: str) -> list[str]:
        """The promoted versions so far, oldest first (what ``rollback`` goes back through)."""
        data = self._read_record(name, HISTORY_FILE)
        return [] if data is None else json.loads(data)

    def resolve(self, name: str, ref: str = ALIAS) -> str:
        """A version id, or ``production`` / ``latest`` resolved to one."""
        if ref == ALIAS:
            version = self.alias(name)
            if version is None:
                raise RegistryError(f"model {name!r} has no promoted version in {self.store}")
            return version
        if ref == LATEST:
            versions = self.versions(name)
            if not versions:
                raise RegistryError(f"model {name!r} has no versions in {self.store}")
            return versions[-1]
        return check_name(ref)

    def read_file(self, name: str, version: str, rel: str) -> bytes:
        """A file of a version (e.g. ``model.onnx``); the caller verifies its sha256."""
        return self._read(self._path(check_name(name, "model name"), check_name(version), rel))

    def read_optional(self, name: str, version: str, rel: str) -> bytes | None:
        path = self._path(check_name(name, "model name"), check_name(version), rel)
        return self._read(path) if self._exists(path) else None

    def verify_signature(
        self, name: str, version: str, public_key: bytes
    ) -> signing.VerifiedVersion:
        """Check the version's signature with the raw Ed25519 ``public_key``; the result reads
        files against the signed digests (``sparc_ray.registry.signing``)."""
        self.metadata(name, version)  # unknown versions: RegistryError, as everywhere
        try:
            return signing.verify(
                public_key, name, version, lambda rel: self.read_optional(name, version, rel)
            )
        except MetadataError as exc:  # signed, but not metadata this code can read
            raise RegistryError(f"{name}/{version}: {exc}") from None

    def verify(self, name: str, version: str, public_key: bytes | None = None) -> ModelMetadata:
        """Check every file a replica may load against the sha256 in metadata.json (and, with a
        ``public_key``, the signature over all of them); returns the metadata. Raises
        IntegrityError naming the file and both digests."""
        if public_key is not None:
            signed = self.verify_signature(name, version, public_key)
            for rel in self._loadable(signed.metadata):
                signed.read(rel)
            return signed.metadata
        meta = self.metadata(name, version)
        for rel, expected in self._loadable(meta).items():
            actual = sha256_bytes(self.read_file(name, version, rel))
            if actual != expected:
                raise IntegrityError(f"{version}/{rel}: sha256 {actual} != recorded {expected}")
        return meta

    @staticmethod
    def _loadable(meta: ModelMetadata) -> dict[str, str]:
        """The files a replica may load, with their recorded sha256."""
        files = {MODEL_FILE: meta.sha256}
        if (onnx := meta.onnx_file()) is not None:
            onnx_file, onnx_sha256 = onnx
            files[onnx_file] = onnx_sha256
        return files

    # -- writing ------------------------------------------------------------------------
    def publish(
        self,
        name: str,
        model: SPARCClassificationModel,
        metadata: dict[str, Any],
        files: dict[str, bytes] | None = None,
        version: str | None = None,
        signing_key: signing.Ed25519PrivateKey | None = None,
    ) -> str:
        """Write a new version (model, extra files, its signature when a ``signing_key`` is
        given, then metadata.json) and return its id. ``metadata`` gets ``schema_version``,
        ``name``, ``version``, ``model_file`` and ``sha256``, and must then fit the schema
        (``sparc_ray.registry.metadata``); RegistryError names the field that does not."""
        version = check_name(version or layout.new_version())
        final = self.version_dir(name, version)
        if self._exists(final):
            raise RegistryError(f"version {version!r} of {name!r} already exists")
        # Staged and renamed into place locally; written in place on object stores.
        local = storage.is_local(self.fs)
        staging = self._path(name, f"{STAGING_PREFIX}{version}") if local else final
        data = model.to_bytes()
        meta = {
            "schema_version": SCHEMA_VERSION,
            **metadata,
            "name": name,
            "version": version,
            "model_file": MODEL_FILE,
            "sha256": sha256_bytes(data),
        }
        contents = {MODEL_FILE: data, **(files or {})}
        contents[METADATA_FILE] = json.dumps(meta, indent=2, default=str).encode()
        _parse_metadata(contents[METADATA_FILE], f"cannot publish {name}/{version}")  # as read
        if signing_key is not None:
            contents[SIGNATURE_FILE] = signing.sign(signing_key, name, version, contents)
        contents[METADATA_FILE] = contents.pop(METADATA_FILE)  # written last
        self.fs.create_dir(staging, recursive=True)
        try:
            for rel, content in contents.items():
                target = posixpath.join(staging, rel)
                self.fs.create_dir(posixpath.dirname(target), recursive=True)
                with self.fs.open_output_stream(target) as fh:
                    fh.write(content)
            if local:
                self.fs.move(staging, final)
        except BaseException:
            if self._exists(staging):
                self.fs.delete_dir(staging)
            raise
        return version

    def sign(
        self, name: str, version: str, key: SigningKey, expected: Digests = None
    ) -> dict[str, str]:
        """Sign a legacy version if its files are exactly ``expected``, sha256 from a record the
        operator trusts (``signing.check_digests``); returns the digests signed."""
        root = self.version_dir(name, version) if self.metadata(name, version) else ""
        contents = {
            posixpath.relpath(i.path, root): self._read(i.path)
            for i in self.fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.type == pafs.FileType.File
        }
        contents.pop(SIGNATURE_FILE, None)
        digests = signing.check_digests(f"{name}/{version}", contents, expected)
        blob = signing.sign(key, name, version, contents)
        self._write_atomic(posixpath.join(root, SIGNATURE_FILE), blob)
        return digests

    def _set_alias(self, name: str, version: str, history: list[str]) -> None:
        """Point ``production`` at ``version`` (``history``: the promotions up to it). Only
        ``sparc_ray.registry.releases`` calls this: it checks the version, ends the release."""
        self._write_record(name, HISTORY_FILE, json.dumps(history).encode())
        self._write_record(name, ALIAS, f"{check_name(version)}\n".encode())
