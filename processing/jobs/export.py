"""``export``: write particles as a RELION STAR file and/or a cryoSPARC .cs file."""

from __future__ import annotations

from typing import Literal

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """What to write (the stacks are linked, not copied)."""

    formats: list[Literal["star", "cs"]] = param(
        ["star", "cs"], description="Formats to write: RELION 3.1+ STAR and cryoSPARC .cs"
    )
    relion_version: Literal["3.1", "4.0", "5.0"] = param(
        "4.0", description="RELION STAR dialect (optics groups from 3.1 on)"
    )


JOB = JobType(
    name="export",
    title="Export Particles",
    description="Export particles with CTF and poses to RELION STAR and cryoSPARC .cs.",
    params=Params,
    inputs=(InputSlot("particles", DataKind.PARTICLES, "Particles to export"),),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "The exported particle files"),),
)
