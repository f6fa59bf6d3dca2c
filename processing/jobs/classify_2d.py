"""``classify_2d``: reference-free 2D classification by online expectation maximisation.

References
----------
Punjani, A. et al. cryoSPARC: algorithms for rapid unsupervised cryo-EM structure
determination. Nat. Methods 14, 290-296 (2017). doi:10.1038/nmeth.4169
Scheres, S. H. W. RELION: implementation of a Bayesian approach to cryo-EM structure
determination. J. Struct. Biol. 180, 519-530 (2012). doi:10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *2D Classification* parameters."""

    num_classes: int = param(50, description="Number of 2D classes", ge=1, le=1000)
    max_res_A: float = param(
        6.0, description="Maximum resolution considered", unit="A", gt=0.0, le=100.0
    )
    num_online_em_iters: int = param(20, description="Online-EM iterations", ge=1, le=200)
    batch_size_per_class: int = param(100, description="Particles per class per batch", ge=1)
    num_final_full_iters: int = param(1, description="Full-dataset iterations at the end", ge=0)
    circular_mask_diameter_A: float | None = param(
        None, description="Circular mask diameter; none: 0.9 of the box", unit="A", gt=0.0
    )
    force_max_over_poses: bool = param(True, description="Assign each image its best pose")
    uncertainty_factor: float = param(
        2.0, description="Initial class-assignment uncertainty", gt=0.0, le=100.0
    )


JOB = JobType(
    name="classify_2d",
    title="2D Classification",
    description="Group particles into 2D class averages by online EM over shifts and rotations.",
    params=Params,
    inputs=(InputSlot("particles", DataKind.PARTICLES, "Extracted particles"),),
    outputs=(
        OutputGroup("particles", DataKind.PARTICLES, "Particles with class assignments"),
        OutputGroup("class_averages", DataKind.TEMPLATES, "2D class averages"),
    ),
    uses_gpu=True,
)
