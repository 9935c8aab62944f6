"""Sealed Tune experiments: ``--resume`` unpickles nothing it did not write itself.

``Tuner.restore`` unpickles ``tuner.pkl``, the ``experiment_state-*.json`` (cloudpickled trial
state), the search algorithm's state and the trials' ``params.pkl`` / ``error.pkl``: whoever
can write the experiment could run code in the training driver, beside the signing key. So
when the training job's search stops (finished or interrupted) it seals the experiment:
``SEAL_FILE`` holds the sha256 of *every* file under the experiment directory and an
HMAC-SHA256 over them and the experiment's name, keyed by a key derived (HKDF) from the job's
Ed25519 signing key. ``--resume`` takes the newest ``<name>-YYYYmmdd-HHMMSS`` directory and
verifies its seal, reading files only as bytes, before Tune sees it: a missing or wrong seal,
a file added, removed or changed, or no signing key at all, is refused (``SealError``).

The seal catches changes between two runs; it is not a lock. The Tune storage must still be
writable by the training job alone (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import re

import pyarrow.fs as pafs
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sparc_ray.registry import storage

SEAL_FILE = "sparc-ray-seal.mac"  # not .json/.pkl: Tune copies those to its staging dir
FORMAT = "sparc-ray/tune-experiment-seal/v1"
MAX_SEAL_BYTES = 16 * 2**20  # a seal lists file digests: a larger one is not ours
_CHUNK = 2**20


class SealError(RuntimeError):
    """An experiment that cannot be resumed safely: unsealed, tampered, or no key."""


def experiment_pattern(name: str) -> re.Pattern[str]:
    """The directory names the training job gives ``name``'s experiments, exactly."""
    return re.compile(rf"{re.escape(name)}-\d{{8}}-\d{{6}}")


def latest_experiment(storage_path: str, name: str) -> str | None:
    """Location of the newest ``<name>-<YYYYmmdd-HHMMSS>`` experiment under ``storage_path``."""
    fs, root = storage.open_fs(storage_path)
    pattern = experiment_pattern(name)
    found = sorted(
        i.base_name
        for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        if i.type == pafs.FileType.Directory and pattern.fullmatch(i.base_name)
    )
    return storage.join(storage.absolute(storage_path), found[-1]) if found else None


def mac_key(key: Ed25519PrivateKey) -> bytes:
    """The HMAC key for experiment seals: derived from the signing key, used for nothing else."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    info = FORMAT.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)


def _digests(fs: pafs.FileSystem, root: str) -> dict[str, str]:
    """sha256 of every file under ``root`` but the seal (relative path -> hex)."""
    digests: dict[str, str] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = posixpath.relpath(info.path, root)
        if info.type == pafs.FileType.Directory or rel == SEAL_FILE:
            continue
        h = hashlib.sha256()
        with fs.open_input_stream(info.path) as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digests[rel] = h.hexdigest()
    return dict(sorted(digests.items()))


def _mac(key: bytes, experiment: str, digests: dict[str, str]) -> str:
    body = {"format": FORMAT, "experiment": experiment, "files": digests}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def seal(location: str, key: Ed25519PrivateKey) -> None:
    """Write the seal of the experiment at ``location`` (call once Tune has stopped)."""
    fs, root = storage.open_fs(location)
    digests = _digests(fs, root)
    experiment = posixpath.basename(root.rstrip("/"))
    record = {
        "format": FORMAT,
        "experiment": experiment,
        "files": digests,
        "mac": _mac(mac_key(key), experiment, digests),
    }
    with fs.open_output_stream(posixpath.join(root, SEAL_FILE)) as fh:
        fh.write(json.dumps(record, indent=1).encode())


def verify(location: str, key: Ed25519PrivateKey | None) -> None:
    """Raise SealError unless the experiment at ``location`` carries this key's seal over
    exactly the files it holds now. Reads bytes only: nothing is unpickled."""
    if key is None:
        raise SealError(
            "--resume needs the signing key (--signing-key or $SPARC_SIGNING_KEY_FILE): "
            "an experiment is only resumed once its seal is verified"
        )
    fs, root = storage.open_fs(location)
    experiment = posixpath.basename(root.rstrip("/"))
    seal_path = posixpath.join(root, SEAL_FILE)
    info = fs.get_file_info(seal_path)
    if info.type != pafs.FileType.File:
        raise SealError(
            f"experiment {location} is not sealed (planted, or its job was killed before the "
            "search stopped); refusing to resume it. Remove it or train without --resume"
        )
    if info.size is not None and info.size > MAX_SEAL_BYTES:
        raise SealError(f"experiment {location}: {SEAL_FILE} is too large; refusing to resume")
    with fs.open_input_stream(seal_path) as fh:
        blob = fh.read(MAX_SEAL_BYTES + 1)
    try:
        record = json.loads(blob)
        sealed = {str(k): str(v) for k, v in dict(record["files"]).items()}
        mac = str(record["mac"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SealError(f"experiment {location}: unreadable {SEAL_FILE} ({exc!r})") from None
    if not hmac.compare_digest(mac, _mac(mac_key(key), experiment, sealed)):
        raise SealError(
            f"experiment {location}: the seal was not made by this signing key for this "
            "experiment; refusing to resume it"
        )
    current = _digests(fs, root)
    changed = sorted(
        rel for rel in sealed.keys() | current.keys() if sealed.get(rel) != current.get(rel)
    )
    if changed:
        raise SealError(
            f"experiment {location}: files added, removed or changed since it was sealed "
            f"({', '.join(changed[:5])}); refusing to resume it"
        )


def resumable(storage_path: str, name: str, key: Ed25519PrivateKey | None) -> str | None:
    """The experiment ``--resume`` continues: the newest of ``name``'s, verified (SealError
    otherwise, never an older one instead); None when there is none (a new search)."""
    if key is None:
        verify("", None)  # raises: without the key no seal can be checked
    location = latest_experiment(storage_path, name)
    if location is None:
        print(
            f"[sparc-ray] --resume: no experiment {name}-* under {storage_path}; starting a new one"
        )
        return None
    verify(location, key)
    print(f"[sparc-ray] --resume: experiment {location}: seal verified")
    return location
