"""Typed app builder: ``serve run serve_config.yaml`` imports ``build_app`` from here.

(No ``from __future__ import annotations``: Serve reads the ``AppArgs`` annotation at runtime
to validate ``args:``.)

    Validator (HTTP ingress, routing, @serve.batch) ──► Model (multiplexed versions, autoscaled)
        │   └──────────────────────────────────────► Postprocessor (monitoring, releases) ──┘
        └──► Explainer (only for "explain": true)                        (shadow copies)

Which version answers comes from the registry's release records (``sparc_ray.registry.releases``);
a pin, if any, is the Validator's ``user_config.model_version``. Resources, autoscaling and
each deployment's typed settings (``user_config``) have their defaults in
``sparc_ray.serving.settings``; serve_config.yaml's ``deployments:`` may override them.
"""

from typing import cast

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve import Application, Deployment

from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import storage
from sparc_ray.registry.layout import DEFAULT_STORE
from sparc_ray.registry.signing import public_key_bytes
from sparc_ray.serving.auth import Tokens
from sparc_ray.serving.explainer import Explainer
from sparc_ray.serving.model import Model
from sparc_ray.serving.postprocessor import Postprocessor
from sparc_ray.serving.settings import DEPLOYMENT_OPTIONS
from sparc_ray.serving.validator import Validator


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_store: str = Field(DEFAULT_STORE, description="registry root: directory or URI")
    model_name: str = Field(..., description="model name in the registry")
    admin_token_env: str = Field(
        "SPARC_ADMIN_TOKEN",
        description="env var with the admin bearer token: /reload-model, and the full /model "
        "and /metrics",
    )
    feedback_token_env: str = Field(
        "SPARC_FEEDBACK_TOKEN", description="env var with the bearer token for /feedback"
    )
    public_key: str | None = Field(
        None,
        description="Ed25519 public key every served version must be signed with: a PEM file "
        "(relative paths resolve like model_store) or the PEM text. Required, unless "
        "allow_unsigned.",
    )
    allow_unsigned: bool = Field(
        False,
        description="development only: serve without public_key (unsigned ONNX versions, "
        "checked by sha256 against the unsigned metadata; the pickled fallback is refused). "
        "Every load logs a warning.",
    )

    @model_validator(mode="after")
    def _key_or_explicitly_unsigned(self) -> "AppArgs":
        if not self.public_key and not self.allow_unsigned:
            raise ValueError(
                "public_key is required: the Ed25519 public key every served version is "
                "signed with (`allow_unsigned: true` serves unsigned versions, for development)"
            )
        return self


def build_app(args: AppArgs) -> Application:
    store = storage.absolute(args.model_store)  # a relative path resolves where the app is built
    # Read here, at deploy time: a missing or malformed key fails the deploy, loudly.
    public_key = public_key_bytes(args.public_key) if args.public_key else None
    loader = RegistryLoader(store, args.model_name, public_key)
    tokens = Tokens(admin_env=args.admin_token_env, feedback_env=args.feedback_token_env)
    # Resources default to DEPLOYMENT_OPTIONS; serve_config.yaml's deployments: override them.
    model = _deployment(Model).bind(loader)
    post = _deployment(Postprocessor).bind(model, loader)
    explainer = _deployment(Explainer).bind(loader)
    return _deployment(Validator).bind(model, post, loader, tokens, explainer)


def _deployment(decorated: object) -> Deployment:
    """A ``@serve.deployment`` class with its default options (mypy sees the class a class
    decorator returns as the undecorated class: Serve returns a ``Deployment``)."""
    deployment = cast(Deployment, decorated)
    return deployment.options(**DEPLOYMENT_OPTIONS[deployment.name])
