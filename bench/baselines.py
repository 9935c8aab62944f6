"""What a user would run instead of our Serve app, on the same registry artifact: start / stop
context managers that yield a ``Target`` (URL, request body, how to read probabilities back).

* ``uvicorn_server``: bench/uvicorn_server.py under ``uvicorn --workers 2``;
* ``mlserver_server``: MLServer 1.7.1 + mlserver-sklearn with adaptive batching (2 parallel
  workers), from its own venv ``bench/.mlserver-venv`` created on first use;
* ``seed_server``: bench/seed_server.py, the seed document's server (one process).

``wrk`` runs the load (POST a body file at a URL; req/s, p50 / p99, non-2xx) and ``drain``
waits for a server to finish the requests a load run left behind.
Each server runs in its own process group with one model thread per process, and is stopped
by that group id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import sklearn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sparc_ray.client import records  # noqa: E402
from sparc_ray.registry.layout import MODEL_FILE  # noqa: E402
from sparc_ray.registry.metadata import ModelMetadata  # noqa: E402
from sparc_ray.registry.store import ModelRegistry  # noqa: E402
from sparc_ray.training.estimator import SPARCClassificationModel  # noqa: E402

BIN = Path(sys.executable).parent
MLSERVER_VENV = ROOT / "bench/.mlserver-venv"
# mlserver 1.7.1's workers crash with uvloop 0.23. scikit-learn is pinned to the version that
# trained the artifact, so the exported pickle loads into the same code.
MLSERVER_REQUIREMENTS = [
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "uvloop==0.21.0",
    f"scikit-learn=={sklearn.__version__}",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Target:
    """A running server: where to POST, the body for a frame of rows, and how to read the
    probabilities (one row per instance, classes in the model's order) from a response."""

    name: str
    url: str
    make_body: Callable[[pd.DataFrame], dict[str, Any]]
    read_proba: Callable[[dict[str, Any]], np.ndarray]


def ours_body(frame: pd.DataFrame) -> dict[str, Any]:
    """Our /predict body (also the uvicorn and seed baselines')."""
    return {"instances": records(frame), "include_probabilities": True}


def ours_proba(response: dict[str, Any]) -> np.ndarray:
    return np.asarray(response["probabilities"], dtype=float)


def v2_body(frame: pd.DataFrame) -> dict[str, Any]:
    """Open Inference (V2) body, pandas codec: one FP64 input per feature column."""
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": c, "shape": [len(frame), 1], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ],
        "outputs": [{"name": "predict_proba"}],
    }


def v2_proba(response: dict[str, Any]) -> np.ndarray:
    out = next(o for o in response["outputs"] if o["name"] == "predict_proba")
    return np.asarray(out["data"], dtype=float).reshape(out["shape"])


# -- load ------------------------------------------------------------------------------------
def wrk(url: str, body_file: Path, connections: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local f = assert(io.open({json.dumps(str(body_file))}, "rb"))\n'
            'wrk.body = f:read("*a")\nf:close()\n'
        )
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency"]
    out = subprocess.run(
        [*cmd, "--timeout", "30s", "-s", lua.name, url], capture_output=True, text=True, check=True
    ).stdout
    Path(lua.name).unlink()

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:  # no request finished
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(url: str, body: dict[str, Any], quiet_s: float, timeout: float = 180) -> None:
    """Wait until the server has worked off what the last load run left queued (wrk closes
    its connections, but a server still runs the requests it had read): four probes in a row
    must answer within ``quiet_s``."""
    deadline, fast = time.time() + timeout, 0
    while fast < 4 and time.time() < deadline:
        start = time.perf_counter()
        httpx.post(url, json=body, timeout=timeout)
        fast = fast + 1 if time.perf_counter() - start < quiet_s else 0


# -- processes ------------------------------------------------------------------------------
def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group led by ``proc`` (started with start_new_session), wait, then
    SIGKILL whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running(
    name: str, cmd: list[str], ready_url: str, log: Path, env: dict[str, str], cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in a new process group (output to ``log``), wait until ``ready_url``
    answers 200, and stop the group on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **ONE_THREAD, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 180
            while True:
                if proc.poll() is not None or time.time() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} did not become ready ({log}):\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                time.sleep(0.5)
            yield proc
        finally:
            stop_group(proc)


@contextlib.contextmanager
def uvicorn_server(
    store: Path,
    name: str,
    version: str,
    public_key: Path,
    logs: Path,
    workers: int = 2,
    engine: str = "sklearn",
) -> Iterator[Target]:
    """bench/uvicorn_server.py: ``engine`` "sklearn" (the pipeline) or "onnx" (model.onnx)."""
    port = free_port()
    cmd = [
        str(BIN / "uvicorn"),
        "--factory",
        "uvicorn_server:create_app",
        "--app-dir",
        str(ROOT / "bench"),
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {"SPARC_BENCH_STORE": str(store), "SPARC_BENCH_MODEL": name}
    env.update(SPARC_BENCH_VERSION=version, SPARC_BENCH_PUBLIC_KEY=str(public_key))
    env.update(SPARC_BENCH_ENGINE=engine)
    url = f"http://127.0.0.1:{port}"
    label = f"uvicorn x{workers}" + (" + ONNX" if engine == "onnx" else "")
    with running("uvicorn", cmd, f"{url}/health", logs / f"uvicorn-{engine}.log", env):
        yield Target(label, f"{url}/predict", ours_body, ours_proba)


@contextlib.contextmanager
def seed_server(model_dir: Path, logs: Path, n_jobs: int = 1) -> Iterator[Target]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench/seed_server.py"), "--model-path", str(model_dir)]
    cmd += ["--port", str(port), "--n-jobs", str(n_jobs)]
    url = f"http://127.0.0.1:{port}"
    with running("seed", cmd, f"{url}/docs", logs / "seed.log", {}):
        yield Target("seed-style", f"{url}/predict", ours_body, ours_proba)


def ensure_mlserver_venv() -> Path:
    """``bench/.mlserver-venv`` with MLSERVER_REQUIREMENTS (created / updated on first use);
    returns its ``mlserver`` executable."""
    stamp = MLSERVER_VENV / ".bench-requirements"
    wanted = "\n".join(MLSERVER_REQUIREMENTS)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {' '.join(MLSERVER_REQUIREMENTS)} into {MLSERVER_VENV}", flush=True)
        if not (MLSERVER_VENV / "bin/python").exists():
            base = Path(sys.base_prefix) / "bin/python3"
            subprocess.run([str(base), "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = [str(MLSERVER_VENV / "bin/python"), "-m", "pip", "install", "-q"]
        r = subprocess.run([*pip, *MLSERVER_REQUIREMENTS], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip install into {MLSERVER_VENV} failed:\n{r.stderr[-3000:]}")
        stamp.write_text(wanted)
    return MLSERVER_VENV / "bin/mlserver"


def signed_pipeline(
    registry: ModelRegistry, name: str, version: str, public_key: bytes
) -> tuple[SPARCClassificationModel, ModelMetadata]:
    """A version's scikit-learn pipeline, unpickled only after its signature and the pickle's
    signed sha256 check out (as the Serve app's sklearn fallback does): every baseline serves
    the same verified artifact as ours."""
    signed = registry.verify_signature(name, version, public_key)
    data = signed.read(MODEL_FILE)
    return SPARCClassificationModel.from_bytes(data, signed.metadata.sha256), signed.metadata


@contextlib.contextmanager
def mlserver_server(
    registry: ModelRegistry, name: str, version: str, public_key: bytes, workdir: Path, logs: Path
) -> Iterator[Target]:
    """The same fitted pipeline exported with joblib into an MLServer model folder: adaptive
    batching (32 requests / 5 ms) and 2 parallel inference workers, metrics off."""
    mlserver = ensure_mlserver_venv()
    model, _ = signed_pipeline(registry, name, version, public_key)
    model.set_n_jobs(1)
    folder = workdir / "mlserver"
    (folder / name).mkdir(parents=True, exist_ok=True)
    joblib.dump(model.pipeline, folder / name / "model.joblib")  # MLServer's own file
    model_settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": 32,
        "max_batch_time": 0.005,
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (folder / name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    port = free_port()
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_endpoint": None,  # no metrics server
        "metrics_dir": str(folder / ".metrics"),
        "parallel_workers": 2,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    url = f"http://127.0.0.1:{port}"
    cmd = [str(mlserver), "start", str(folder)]
    with running("mlserver", cmd, f"{url}/v2/health/ready", logs / "mlserver.log", {}, folder):
        yield Target("MLServer", f"{url}/v2/models/{name}/infer", v2_body, v2_proba)
