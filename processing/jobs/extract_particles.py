"""``extract_particles``: cut particle boxes out of micrographs."""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *Extract From Micrographs* parameters."""

    box_size_pix: int = param(256, description="Extraction box size", unit="px", ge=16, le=2048)
    bin_size_pix: int | None = param(
        None,
        description="Fourier-crop the box to this size; none: no cropping",
        unit="px",
        ge=8,
        le=2048,
    )
    flip_contrast: bool = param(True, description="Invert contrast so particles are white")
    phase_flip: bool = param(False, description="Multiply by the sign of the CTF")
    recenter_using_shifts: bool = param(True, description="Apply upstream 2D shifts to centres")
    output_f16: bool = param(False, description="Write particle stacks as float16")

    @model_validator(mode="after")
    def _crop_smaller(self) -> Self:
        if self.bin_size_pix is not None and self.bin_size_pix > self.box_size_pix:
            raise ValueError(
                f"bin_size_pix ({self.bin_size_pix} px) must not exceed "
                f"box_size_pix ({self.box_size_pix} px)"
            )
        if self.bin_size_pix is not None and self.bin_size_pix % 2:
            raise ValueError(f"bin_size_pix ({self.bin_size_pix} px) must be even")
        if self.box_size_pix % 2:
            raise ValueError(f"box_size_pix ({self.box_size_pix} px) must be even")
        return self


JOB = JobType(
    name="extract_particles",
    title="Extract From Micrographs",
    description="Extract normalised particle boxes at picked locations, optionally cropped.",
    params=Params,
    inputs=(
        InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF"),
        InputSlot("particles", DataKind.PARTICLES, "Picked particle locations"),
    ),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Extracted particle stacks"),),
    uses_gpu=True,
    shardable=True,
)
