"""Batch scoring with Ray Data: the job (checked before Ray starts, atomic output), the row
source (row-numbered streaming reads) and the scoring actor."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.batch.job import ScorePlan as ScorePlan
    from sparc_ray.batch.job import run as run
    from sparc_ray.batch.scorer import BatchScorer as BatchScorer
    from sparc_ray.batch.source import RowSource as RowSource

__getattr__, __all__ = exports(
    __name__,
    {
        "ScorePlan": "job",
        "run": "job",
        "BatchScorer": "scorer",
        "RowSource": "source",
    },
)
