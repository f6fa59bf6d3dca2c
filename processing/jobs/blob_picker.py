"""``blob_picker``: reference-free picking with Gaussian blobs of a diameter range.

References
----------
Punjani, A. et al. cryoSPARC: algorithms for rapid unsupervised cryo-EM structure
determination. Nat. Methods 14, 290-296 (2017). doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

from pydantic import model_validator

from ._picking import run_picker
from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.algorithms.picking import Picks
    from cryokube.processing.worker.context import JobContext


class Params(JobParams):
    """cryoSPARC's *Blob Picker* parameters."""

    diameter_min_A: float = param(
        100.0, description="Smallest particle diameter", unit="A", gt=0.0, le=5000.0
    )
    diameter_max_A: float = param(
        200.0, description="Largest particle diameter", unit="A", gt=0.0, le=5000.0
    )
    lowpass_res_A: float = param(
        20.0, description="Low-pass filter applied before picking", unit="A", gt=0.0, le=200.0
    )
    min_separation: float = param(
        1.0, description="Minimum distance between picks, in particle diameters", ge=0.1, le=10.0
    )
    max_num_hits: int = param(4000, description="Most picks kept per micrograph", ge=1, le=100000)
    min_score: float = param(
        7.0,
        description="Lowest pick score kept, in robust standard deviations of the blob response",
        ge=0.0,
        le=1000.0,
    )
    use_elliptical: bool = param(False, description="Also match elliptical blobs")

    @model_validator(mode="after")
    def _diameters_ordered(self) -> Self:
        if self.diameter_max_A < self.diameter_min_A:
            raise ValueError(
                f"diameter_max_A ({self.diameter_max_A} A) must not be below "
                f"diameter_min_A ({self.diameter_min_A} A)"
            )
        return self


def run(ctx: JobContext) -> None:
    """Pick each micrograph of this shard with Laplacian-of-Gaussian blobs of the diameters."""
    from cryokube.processing.algorithms.picking import pick_blobs

    p = cast(Params, ctx.params)
    if p.use_elliptical:
        ctx.log("use_elliptical is not supported yet: round blobs only", level="warning")
    micrographs = ctx.load_dataset("micrographs")
    psizes = micrographs["micrograph_blob/psize_A"]

    def pick(image: Any, index: int) -> Picks:
        return pick_blobs(
            image,
            pixel_size_A=float(psizes[index]),
            diameter_range_A=(p.diameter_min_A, p.diameter_max_A),
            lowpass_A=p.lowpass_res_A,
            min_separation_A=p.min_separation * p.diameter_min_A,
            max_picks=p.max_num_hits,
            min_score=p.min_score,
        )

    run_picker(ctx, micrographs, pick, lowpass_res_A=p.lowpass_res_A)


JOB = JobType(
    name="blob_picker",
    title="Blob Picker",
    description="Pick particles by normalised cross-correlation with blobs of a diameter range.",
    params=Params,
    inputs=(InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF"),),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Particle locations"),),
    uses_gpu=True,
    shardable=True,
    run=run,
)
