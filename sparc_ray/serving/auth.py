"""The API's bearer tokens: one for admin operations, one for ``/feedback``."""

import hmac
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass

from fastapi.responses import Response

from sparc_ray.serving.responses import error_response

MIN_TOKEN_CHARS = 32  # e.g. `openssl rand -hex 16`; secrets.token_urlsafe(32) gives 43
MIN_TOKEN_BITS = 80  # estimated (character frequencies); `openssl rand -hex 16` gives >= 90
MIN_DISTINCT_CHARS = 8


def estimated_bits(token: str) -> float:
    """Length times the Shannon entropy of the token's character frequencies: a floor for
    repeats such as ``"a" * 32`` (0 bits) or ``"ab" * 16`` (32 bits), not a proof of
    randomness."""
    n = len(token)
    return -sum(c * math.log2(c / n) for c in Counter(token).values()) if n else 0.0


logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Tokens:
    """The env vars holding the bearer tokens: the admin token (``/reload-model``, the full
    ``/model`` and ``/metrics``) and the feedback token (``/feedback``). Each token opens only
    its own endpoints."""

    admin_env: str = "SPARC_ADMIN_TOKEN"
    feedback_env: str = "SPARC_FEEDBACK_TOKEN"

    def read(self) -> tuple["BearerToken", "BearerToken"]:
        admin = BearerToken(self.admin_env, "admin")
        feedback = BearerToken(self.feedback_env, "feedback")
        if admin.token and admin.token == feedback.token:  # both stripped
            problem = "must differ from the admin token"
            feedback = BearerToken(self.feedback_env, "feedback", problem)
        return admin, feedback


class BearerToken:
    """One endpoint group's token, read from ``env`` (surrounding whitespace stripped). A
    missing token, one shorter than ``MIN_TOKEN_CHARS``, a guessable one (fewer than
    ``MIN_DISTINCT_CHARS`` distinct characters or ``MIN_TOKEN_BITS`` estimated bits) or one
    refused for another ``problem`` disables the group: 403 saying why (and an error in the
    log), never a weak check."""

    def __init__(self, env: str, purpose: str, problem: str | None = None) -> None:
        value = (os.environ.get(env) or "").strip()
        if not value:
            problem = f"no {purpose} token is configured (${env})"
        elif len(value) < MIN_TOKEN_CHARS:
            problem = f"the {purpose} token (${env}) is shorter than {MIN_TOKEN_CHARS} characters"
        elif len(set(value)) < MIN_DISTINCT_CHARS or estimated_bits(value) < MIN_TOKEN_BITS:
            problem = (
                f"the {purpose} token (${env}) is too repetitive to be secret: use random bytes"
            )
        elif problem:
            problem = f"the {purpose} token (${env}) {problem}"
        self.token = None if problem else value
        self.problem = problem
        if problem and value:
            logger.error("endpoint disabled: %s", problem)

    def check(self, header: str | None) -> Response | None:
        """None if ``header`` carries the token; else the 403 (disabled) or 401 to send."""
        if self.token is None:
            return error_response(403, f"endpoint disabled: {self.problem}")
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return error_response(401, "missing or wrong bearer token")
        return None

    def allows(self, header: str | None) -> bool:
        return self.check(header) is None
