"""A Postprocessor built in this process, without Serve, for tests of its own logic, and the
fake loaders it reads metadata from."""

from __future__ import annotations

from typing import Any

from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.postprocessor import Postprocessor


class Loader:
    """Two classes, "a" and "b"; no drift reference."""

    name = "m"
    registry = None
    reference: dict[str, Any] | None = None

    def release_state(self):
        return "v1", None

    def load_metadata(self, version):
        # model_construct: unvalidated, so a broken reference reaches monitoring.
        return ModelMetadata.model_construct(
            version=version, classes=["a", "b"], reference=self.reference
        )


class BrokenReferenceLoader(Loader):
    """Metadata whose drift reference cannot be used: drift monitoring raises."""

    reference = {"broken": True}


async def local_postprocessor(loader: Loader, config: dict[str, Any] | None = None) -> Any:
    """The deployment's class, constructed (its background loops running) in the caller's event
    loop, with no Model handle, then reconfigured with ``config``; cancel ``post.tasks`` at the
    end."""
    cls = Postprocessor.func_or_class
    post = cls.__new__(cls)
    await post.__init__(None, loader)
    if config is not None:
        await post.reconfigure(config)
    return post
