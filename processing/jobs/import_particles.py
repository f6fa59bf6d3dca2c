"""``import_particles``: register a particle stack from RELION (STAR) or cryoSPARC (.cs)."""

from __future__ import annotations

from typing import Literal

from .base import DataKind, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """Where the particle metadata and stacks are (cryoSPARC's *Import Particle Stack*)."""

    particle_meta_path: str = param(
        "particles.star",
        description="RELION .star or cryoSPARC .cs file, relative to the project's storage root",
    )
    particle_blob_path: str | None = param(
        None,
        description="Folder the stack paths in the metadata are relative to; none: its folder",
    )
    meta_format: Literal["auto", "star", "cs"] = param(
        "auto", description="Metadata format; auto picks by file extension"
    )
    psize_A: float | None = param(
        None, description="Pixel size if the metadata lacks it", unit="A", gt=0.0, le=20.0
    )
    accel_kv: float = param(
        300.0, description="Accelerating voltage", unit="kV", ge=60.0, le=1000.0
    )
    cs_mm: float = param(2.7, description="Spherical aberration", unit="mm", ge=0.0, le=10.0)
    amp_contrast: float = param(0.1, description="Amplitude contrast fraction", ge=0.0, le=1.0)


JOB = JobType(
    name="import_particles",
    title="Import Particle Stack",
    description="Read particle poses and CTF from a RELION STAR or cryoSPARC .cs file.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Imported particles"),),
)
