"""HTTP client for the sparc-ray service, and bulk CSV scoring in chunks."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import numpy as np
import pandas as pd


class PredictionError(RuntimeError):
    """The service answered with an error; ``body`` holds its JSON (error, details)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: missing values become null (NaN is not valid JSON)."""
    clean = df.astype(object).where(df.notna(), None)
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in clean.to_dict("records")
    ]


class SparcClient:
    """``token``: release control (``reload``, the full ``model``); ``feedback_token``:
    ``feedback``. Each is sent only to its own endpoints."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60.0,
        feedback_token: str | None = None,
    ) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._auth = {"release": token, "feedback": feedback_token}

    def _bearer(self, which: str) -> dict[str, str]:
        token = self._auth[which]
        return {"Authorization": f"Bearer {token}"} if token else {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SparcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        body = (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        )
        if r.status_code >= 400:
            raise PredictionError(r.status_code, body)
        return body

    def predict(
        self, rows: list[dict[str, Any]] | pd.DataFrame, include_probabilities: bool = False
    ) -> dict[str, Any]:
        instances = records(rows) if isinstance(rows, pd.DataFrame) else rows
        return self._call(
            "POST",
            "/predict",
            json={"instances": instances, "include_probabilities": include_probabilities},
        )

    def health(self) -> dict[str, Any]:
        r = self.http.get("/health")
        return r.json()

    def model(self) -> dict[str, Any]:
        return self._call("GET", "/model", headers=self._bearer("release"))

    def reload(self, version: str | None = None, force: bool = False) -> dict[str, Any]:
        """Promote ``version`` to production (``force``: despite failed gates), or with no
        version make the replica re-read the registry; returns the state reached."""
        body: dict[str, Any] = {"version": version} if version else {}
        if force:
            body["force"] = True
        return self._call("POST", "/reload-model", json=body, headers=self._bearer("release"))

    def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/feedback", json=items, headers=self._bearer("feedback"))


def score_csv(
    url: str,
    input_path: str,
    output_path: str | None,
    chunk_size: int = 500,
    include_probabilities: bool = False,
) -> int:
    """Score a CSV chunk by chunk; writes the input columns plus ``prediction`` (and
    ``proba_<class>`` columns). Returns the number of rows scored."""
    client = SparcClient(url)
    out = open(output_path, "w", newline="") if output_path else sys.stdout  # noqa: SIM115
    total = 0
    try:
        for i, chunk in enumerate(pd.read_csv(input_path, chunksize=chunk_size)):
            body = client.predict(chunk, include_probabilities)
            scored = chunk.copy()
            scored["prediction"] = body["predictions"]
            if include_probabilities:
                proba = np.asarray(body["probabilities"])
                for k, cls in enumerate(body["classes"]):
                    scored[f"proba_{cls}"] = proba[:, k]
            scored["model_version"] = body["model_version"]
            scored.to_csv(out, index=False, header=i == 0)
            total += len(chunk)
    finally:
        client.close()
        if output_path:
            out.close()
    return total
