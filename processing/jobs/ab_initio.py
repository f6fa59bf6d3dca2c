"""``ab_initio``: initial 3D models from 2D particles by stochastic gradient descent.

References
----------
Punjani, A. et al. cryoSPARC: algorithms for rapid unsupervised cryo-EM structure
determination. Nat. Methods 14, 290-296 (2017). doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, cast

import numpy as np
from pydantic import model_validator

from ._particles import NYQUIST_PX, load_images, particle_ctf, pixel_size_of, publish_volumes
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


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


def run(ctx: JobContext) -> None:
    """Build one initial map (class 0) from the particles, in C1.

    Ab-initio always runs without symmetry (as cryoSPARC recommends); ``symmetry`` is checked
    and recorded for the refinement that follows. Poses are marginalised in every mini-batch
    and not kept, so the particles output carries the class only; refinement searches poses
    globally. The hand of the map is arbitrary (see
    :func:`~cryokube.processing.algorithms.abinitio.mirror_volume`). The SGD runs in one call
    (no per-iteration hook), so a retried pod starts it again with the same seed and result.
    """
    from cryokube.processing.algorithms.abinitio import ab_initio
    from cryokube.processing.algorithms.symmetry import symmetry_group
    from cryokube.processing.backend import to_device, to_host

    p = cast(Params, ctx.params)
    if p.num_classes != 1:
        raise JobInputError(f"params.num_classes: only 1 class is implemented, got {p.num_classes}")
    try:
        symmetry_group(p.symmetry)
    except ValueError as error:
        raise JobInputError(f"params.symmetry: {error}") from error
    particles = ctx.load_dataset("particles")
    pixel_size_A = pixel_size_of(particles, "particles")
    final_res_A = max(p.abinit_max_res_A, NYQUIST_PX * pixel_size_A)
    if final_res_A > p.abinit_init_res_A:
        raise JobInputError(
            f"params.abinit_init_res_A: {p.abinit_init_res_A} A is finer than Nyquist "
            f"({final_res_A:.3g} A) of the particles"
        )
    if final_res_A > p.abinit_max_res_A:
        ctx.log(
            f"abinit_max_res_A {p.abinit_max_res_A} A is beyond Nyquist; ending at {final_res_A:.3g} A"
        )
    images = load_images(ctx, particles, "particles")
    box = int(images.shape[-1])
    n_iterations = p.abinit_num_init_iters + p.abinit_num_final_iters
    ctx.progress(0.1, f"SGD over {n_iterations} mini-batches of {p.abinit_minisize} particles")
    result = ab_initio(
        to_device(images, ctx.device),
        pixel_size_A=pixel_size_A,
        ctf=particle_ctf(particles, box, pixel_size_A, ctx.device),
        n_iterations=n_iterations,
        batch_size=p.abinit_minisize,
        initial_resolution_A=p.abinit_init_res_A,
        final_resolution_A=final_res_A,
    )
    ctx.progress(0.95, "writing the initial map")
    files, dataset = publish_volumes(
        ctx,
        {"map": (to_host(result.volume), "volume_class_00.mrc")},
        "volume_class_00.cs",
        pixel_size_A=pixel_size_A,
    )
    resolution_A = float(result.resolution_schedule_A[-1])
    ctx.add_output(
        "volume",
        dataset=dataset,
        files=files,
        n_items=1,
        summary={
            "resolution_A": round(resolution_A, 2),
            "box_size_px": box,
            "pixel_size_A": pixel_size_A,
            "symmetry": p.symmetry,
            "hand": "arbitrary: compare the map and its mirror image with a known feature",
        },
    )
    assigned = particles.with_columns({"alignments3D/class": np.zeros(len(particles), np.uint32)})
    ctx.add_output(
        "particles",
        dataset=ctx.save_dataset(assigned, "particles.cs"),
        n_items=len(assigned),
        summary={"particles": len(assigned)},
    )
    ctx.log(f"initial map from {len(particles)} particles, low-passed to {resolution_A:.1f} A")


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
    run=run,
)
