"""``ab_initio``: initial 3D models from 2D particles by stochastic gradient descent.

References
----------
Punjani, A. et al. cryoSPARC: algorithms for rapid unsupervised cryo-EM structure
determination. Nat. Methods 14, 290-296 (2017). doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *Ab-Initio Reconstruction* parameters (resolution schedule in A)."""

    num_classes: int = param(1, description="Number of 3D classes", ge=1, le=20)
    abinit_max_res_A: float = param(
        12.0, description="Final maximum resolution of the schedule", unit="A", gt=0.0, le=100.0
    )
    abinit_init_res_A: float = param(
        35.0, description="Initial maximum resolution of the schedule", unit="A", gt=0.0
    )
    abinit_num_init_iters: int = param(
        200, description="Iterations at the initial resolution", ge=1
    )
    abinit_num_final_iters: int = param(
        300, description="Iterations ramping to the final resolution", ge=1
    )
    abinit_minisize: int = param(90, description="Particles per SGD minibatch", ge=1)
    symmetry: str = param("C1", description="Point-group symmetry (C1, Cn, Dn, T, O, I)")

    @model_validator(mode="after")
    def _schedule_refines(self) -> Self:
        if self.abinit_max_res_A > self.abinit_init_res_A:
            raise ValueError(
                f"abinit_max_res_A ({self.abinit_max_res_A} A) must not be coarser than "
                f"abinit_init_res_A ({self.abinit_init_res_A} A)"
            )
        return self


JOB = JobType(
    name="ab_initio",
    title="Ab-Initio Reconstruction",
    description="Build initial 3D maps from particles by SGD over a coarse-to-fine schedule.",
    params=Params,
    inputs=(InputSlot("particles", DataKind.PARTICLES, "Selected particles"),),
    outputs=(
        OutputGroup("volume", DataKind.VOLUME, "Initial map (class 0)"),
        OutputGroup("particles", DataKind.PARTICLES, "Particles with 3D class and pose"),
    ),
    uses_gpu=True,
)
