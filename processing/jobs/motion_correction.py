"""``motion_correction``: patch-based motion correction with dose weighting.

References
----------
Zheng, S. Q. et al. MotionCor2: anisotropic correction of beam-induced motion for improved
cryo-electron microscopy. Nat. Methods 14, 331-332 (2017). doi:10.1038/nmeth.4193
Grant, T. & Grigorieff, N. Measuring the optimal exposure for single particle cryo-EM using a
2.6 A reconstruction of rotavirus VP6. eLife 4, e06980 (2015). doi:10.7554/eLife.06980
"""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *Patch Motion Correction* parameters."""

    res_max_align: float = param(
        5.0, description="Maximum resolution used for alignment", unit="A", gt=0.0, le=100.0
    )
    bfactor: float = param(
        500.0, description="B-factor applied during alignment", unit="A^2", ge=0.0, le=10000.0
    )
    frame_start: int = param(0, description="First frame to use (0-based)", ge=0)
    frame_end: int | None = param(
        None, description="One past the last frame to use; none: all frames", gt=0
    )
    output_fcrop_factor: float = param(
        1.0, description="Fourier-crop factor of the output (1, 1/2, 1/4)", gt=0.0, le=1.0
    )
    override_patch_x: int | None = param(
        None, description="Patches along x; none: chosen from the micrograph size", ge=1, le=50
    )
    override_patch_y: int | None = param(
        None, description="Patches along y; none: chosen from the micrograph size", ge=1, le=50
    )
    dose_per_frame_e_per_A2: float | None = param(
        None,
        description="Dose per frame for dose weighting; none: total dose / frames",
        unit="e/A^2",
        gt=0.0,
        le=100.0,
    )
    do_dose_weighting: bool = param(True, description="Weight frames by the exposure filter")
    output_f16: bool = param(False, description="Write micrographs as float16")

    @model_validator(mode="after")
    def _frames_ordered(self) -> Self:
        if self.frame_end is not None and self.frame_end <= self.frame_start:
            raise ValueError(
                f"frame_end ({self.frame_end}) must exceed frame_start ({self.frame_start})"
            )
        return self


JOB = JobType(
    name="motion_correction",
    title="Patch Motion Correction",
    description="Align movie frames by patches, then sum them with dose weighting.",
    params=Params,
    inputs=(InputSlot("movies", DataKind.MOVIES, "Movies to align"),),
    outputs=(
        OutputGroup("micrographs", DataKind.MICROGRAPHS, "Aligned, dose-weighted micrographs"),
    ),
    uses_gpu=True,
    shardable=True,
)
