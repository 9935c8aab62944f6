"""Signed model versions (Ed25519).

Training signs a version at publish time: ``signature.json`` beside ``metadata.json`` holds
the sha256 of every file of the version (``metadata.json`` included), the model name and the
version id, and an Ed25519 signature over exactly those fields. Serving holds only the public
key; it verifies the signature, then reads each file it loads and checks it against the
*signed* digest, and parses ``metadata.json`` from the verified bytes. Whoever can write the
store but does not hold the private key can therefore neither swap a model file (even with a
``metadata.json`` rewritten to match) nor move a signed version under another name.

The private key comes from a PEM file (``--signing-key``, ``SPARC_SIGNING_KEY_FILE``; on
Kubernetes a mounted Secret) or from the PEM text in ``SPARC_SIGNING_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes
from sparc_ray.registry.layout import METADATA_FILE, SIGNATURE_FILE
from sparc_ray.registry.metadata import ModelMetadata

FORMAT = "sparc-ray/signature/v1"
KEY_FILE_ENV, KEY_PEM_ENV = "SPARC_SIGNING_KEY_FILE", "SPARC_SIGNING_KEY"


class SignatureError(IntegrityError):
    """A version is unsigned, signed by another key, or a file differs from what was signed."""


class SigningKeyError(ValueError):
    """A signing or public key that cannot be read."""


# -- keys ---------------------------------------------------------------------------------------
def generate_key_pair(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, mode 0600) and ``PREFIX.pub``; refuses to overwrite."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path} exists; refusing to overwrite a key")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: str | None = None) -> Ed25519PrivateKey | None:
    """The signing key from ``path``, else ``$SPARC_SIGNING_KEY_FILE``, else the PEM text in
    ``$SPARC_SIGNING_KEY``; None when none is given."""
    path = path or os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"signing key {path}: {exc.strerror}") from None
        where = path
    elif os.environ.get(KEY_PEM_ENV):
        pem, where = os.environ[KEY_PEM_ENV].encode(), f"${KEY_PEM_ENV}"
    else:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {where} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {where} is not an Ed25519 key")
    return key


def public_key_bytes(value: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as a PEM file path or PEM text."""
    pem = value.encode() if value.lstrip().startswith("-----BEGIN") else None
    if pem is None:
        try:
            pem = Path(value).read_bytes()
        except OSError as exc:
            raise SigningKeyError(
                f"public key {value}: {exc.strerror} (create a key pair with "
                "`sparc-ray keys generate`)"
            ) from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise SigningKeyError(f"public key {value[:60]!r} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("the public key is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw_public: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- signing and verifying ----------------------------------------------------------------------
def _payload(name: str, version: str, digests: Mapping[str, str]) -> bytes:
    body = {"format": FORMAT, "name": name, "version": version, "files": dict(digests)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, name: str, version: str, files: Mapping[str, bytes]) -> bytes:
    """``signature.json`` for a version made of ``files`` (relative path -> content)."""
    digests = {rel: sha256_bytes(data) for rel, data in sorted(files.items())}
    record = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "files": digests,
        "algorithm": "ed25519",
        "key_id": key_id(raw_public(key)),
        "signature": base64.b64encode(key.sign(_payload(name, version, digests))).decode(),
    }
    return json.dumps(record, indent=2).encode()


MAX_DIGESTS_BYTES = 2**20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_digests(blob: bytes, where: str) -> dict[str, str]:
    """The operator's expected digests for ``models sign``: JSON ``{"path": "sha256", ...}``
    or ``{"files": {...}}`` (a ``signature.json``-like record), e.g. saved from the training
    log or the MLflow run. SigningKeyError when it is not that."""
    try:
        if len(blob) > MAX_DIGESTS_BYTES:
            raise ValueError(f"larger than {MAX_DIGESTS_BYTES} bytes")
        value = json.loads(blob)
        files = value.get("files", value) if isinstance(value, dict) else None
        if not isinstance(files, dict) or not files:
            raise ValueError("expected a JSON object mapping file paths to sha256")
        bad = [k for k, v in files.items() if not isinstance(v, str) or not _SHA256.fullmatch(v)]
        if bad:
            raise ValueError(f"not a lowercase hex sha256: {bad[:5]}")
    except ValueError as exc:
        raise SigningKeyError(f"digests {where}: {exc}") from None
    return dict(files)


def check_digests(
    where: str, files: Mapping[str, bytes], expected: Mapping[str, str] | None
) -> dict[str, str]:
    """The sha256 of ``files`` if they are exactly ``expected`` (same paths, same digests),
    else SignatureError naming every difference: what signs a legacy version."""
    if expected is None:
        raise SignatureError(
            f"{where}: signing an existing version needs the sha256 of each of its files from "
            "a record you trust (models sign --digests FILE); metadata.json does not count"
        )
    actual = {rel: sha256_bytes(data) for rel, data in sorted(files.items())}
    problems = [
        f"{rel}: sha256 {actual.get(rel, 'missing')} != expected {expected.get(rel, 'none')}"
        for rel in sorted(actual.keys() | expected.keys())
        if actual.get(rel) != expected.get(rel)
    ]
    if problems:
        raise SignatureError(
            f"{where} does not match the expected digests; not signed:\n  " + "\n  ".join(problems)
        )
    return actual


class VerifiedVersion:
    """A version whose signature checked out: reads its files against the signed digests.
    ``metadata`` is parsed from the verified bytes (``MetadataError`` if it does not fit)."""

    def __init__(self, digests: dict[str, str], read: Callable[[str], bytes]) -> None:
        self.digests, self._read = digests, read
        self.metadata: ModelMetadata = ModelMetadata.from_json(self.read(METADATA_FILE))

    def read(self, rel: str) -> bytes:
        if rel not in self.digests:
            raise SignatureError(f"{rel} is not covered by the signature")
        data = self._read(rel)
        if sha256_bytes(data) != self.digests[rel]:
            raise SignatureError(f"{rel} was changed after the version was signed")
        return data


def verify(
    raw_public: bytes, name: str, version: str, read: Callable[[str], bytes | None]
) -> VerifiedVersion:
    """Check ``signature.json`` of ``name/version`` (``read(rel)`` returns a file of the
    version, or None when it is missing) against the public key; raises SignatureError."""
    blob = read(SIGNATURE_FILE)
    if blob is None:
        raise SignatureError(f"{version} is unsigned (no {SIGNATURE_FILE})")
    try:
        record = json.loads(blob)
        digests = dict(record["files"])
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{version}: unreadable {SIGNATURE_FILE} ({exc!r})") from None
    expected = key_id(raw_public)
    if record.get("key_id") != expected:
        raise SignatureError(
            f"{version} is signed by key {record.get('key_id')}, not the configured key {expected}"
        )
    if (record.get("name"), record.get("version")) != (name, version):
        raise SignatureError(
            f"{version}: the signature is for {record.get('name')}/{record.get('version')}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw_public).verify(
            signature, _payload(name, version, digests)
        )
    except InvalidSignature:
        raise SignatureError(f"{version}: the signature does not match its contents") from None

    def read_present(rel: str) -> bytes:
        data = read(rel)
        if data is None:
            raise SignatureError(f"{version}/{rel} is missing")
        return data

    return VerifiedVersion(digests, read_present)
