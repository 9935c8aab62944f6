"""Registry: the versioned model store (local or any pyarrow URI), the files of a version and
their integrity, the typed ``metadata.json``, Ed25519 signatures, and release records
(production alias, candidate, history) with ``promote``, the one way to move production."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.registry.artifacts import IntegrityError as IntegrityError
    from sparc_ray.registry.metadata import ModelMetadata as ModelMetadata
    from sparc_ray.registry.releases import finish_release as finish_release
    from sparc_ray.registry.releases import promote as promote
    from sparc_ray.registry.releases import rollback as rollback
    from sparc_ray.registry.releases import start_release as start_release
    from sparc_ray.registry.signing import SignatureError as SignatureError
    from sparc_ray.registry.store import ModelRegistry as ModelRegistry
    from sparc_ray.registry.store import RegistryError as RegistryError

__getattr__, __all__ = exports(
    __name__,
    {
        "ModelRegistry": "store",
        "RegistryError": "store",
        "IntegrityError": "artifacts",
        "ModelMetadata": "metadata",
        "SignatureError": "signing",
        "promote": "releases",
        "rollback": "releases",
        "start_release": "releases",
        "finish_release": "releases",
    },
)
