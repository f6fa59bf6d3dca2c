"""``export``: write particles as a RELION STAR file and/or a cryoSPARC .cs file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from ._particles import check_fields
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


class Params(JobParams):
    """What to write (the stacks are linked, not copied)."""

    formats: list[Literal["star", "cs"]] = param(
        ["star", "cs"], description="Formats to write: RELION 3.1+ STAR and cryoSPARC .cs"
    )
    relion_version: Literal["3.1", "4.0", "5.0"] = param(
        "4.0", description="RELION STAR dialect (optics groups from 3.1 on)"
    )


def run(ctx: JobContext) -> None:
    """Write ``particles.star`` and/or ``particles.cs``; image paths stay project-relative.

    Every RELION version offered (3.1, 4.0, 5.0) reads the same optics-group layout, so the
    STAR file is written in that style for all of them.
    """
    from cryokube.processing.datasets import save_star

    p = cast(Params, ctx.params)
    if not p.formats:
        raise JobInputError("params.formats: name at least one of 'star' and 'cs'")
    particles = ctx.load_dataset("particles")
    check_fields(particles, "particles", ("blob/path", "blob/idx"))
    files = []
    if "star" in p.formats:
        dark = int(np.sum(np.asarray(particles.get("blob/sign", default=np.zeros(0))) < 0))
        if dark:
            raise JobInputError(
                f"inputs.particles: {dark} particles keep the raw "
                "contrast (blob/sign -1, protein dark) and RELION expects contrast-inverted "
                "particles; re-extract them with flip_contrast, or export only 'cs'"
            )
        local = ctx.scratch_path("particles.star")
        try:
            save_star(particles, local, style="relion31")
        except ValueError as error:
            raise JobInputError(f"inputs.particles: cannot write STAR: {error}") from error
        files.append(ctx.publish(local, "particles.star"))
    dataset = ctx.save_dataset(particles, "particles.cs") if "cs" in p.formats else None
    ctx.add_output(
        "particles",
        dataset=dataset,
        files=files,
        n_items=len(particles),
        summary={
            "particles": len(particles),
            "formats": sorted(set(p.formats)),
            "relion_version": p.relion_version,
            "paths": "relative to the project's storage root (RELION's project folder)",
        },
    )
    ctx.log(f"exported {len(particles)} particles as {' and '.join(sorted(set(p.formats)))}")


JOB = JobType(
    name="export",
    title="Export Particles",
    description="Export particles with CTF and poses to RELION STAR and cryoSPARC .cs.",
    params=Params,
    inputs=(InputSlot("particles", DataKind.PARTICLES, "Particles to export"),),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "The exported particle files"),),
    run=run,
)
