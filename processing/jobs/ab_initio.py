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

from ._checkpoint import Checkpoint
from ._particles import (
    NYQUIST_PX,
    check_volume_matches,
    load_images,
    load_volume,
    particle_ctf,
    pixel_size_of,
    publish_volumes,
)
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
    """Build ``num_classes`` initial maps from the particles, in C1.

    Ab-initio always runs without symmetry (as cryoSPARC recommends); ``symmetry`` is checked
    and recorded for the refinement that follows. Poses are marginalised in every mini-batch
    and not kept, so the particles output carries the class only; refinement searches poses
    globally. Classes are numbered by decreasing size; the ``volume`` output holds one map
    per class in that order, so a refinement fed with it starts from the largest class. The
    hand of the maps is unknown unless a map of known hand is connected to
    ``inputs.reference``: each map is then mirrored if its mirror image fits the reference
    better (:func:`~cryokube.processing.algorithms.abinitio.choose_hand`). The SGD state is
    checkpointed after its mini-batches (:mod:`._checkpoint`), so a retried pod resumes where
    its predecessor stopped and writes the same outputs as an uninterrupted run.
    """
    from cryokube.processing.algorithms.abinitio import (
        AbInitioState,
        ab_initio,
        choose_hand,
        mirror_volume,
    )
    from cryokube.processing.algorithms.symmetry import symmetry_group
    from cryokube.processing.backend import to_device, to_host

    p = cast(Params, ctx.params)
    try:
        symmetry_group(p.symmetry)
    except ValueError as error:
        raise JobInputError(f"params.symmetry: {error}") from error
    particles = ctx.load_dataset("particles")
    if p.num_classes > len(particles):
        raise JobInputError(
            f"params.num_classes: {p.num_classes} classes for {len(particles)} particles"
        )
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
    reference = None
    if ctx.input("reference"):
        reference, reference_psize_A = load_volume(ctx, "reference", "map")
        check_volume_matches("reference", reference, reference_psize_A, box, pixel_size_A)
    n_iterations = p.abinit_num_init_iters + p.abinit_num_final_iters
    checkpoint = Checkpoint(ctx, AbInitioState, n_iterations=n_iterations)
    resume = checkpoint.start(
        f"SGD of {p.num_classes} class(es) over {n_iterations} mini-batches of "
        f"{p.abinit_minisize} particles"
    )
    result = ab_initio(
        to_device(images, ctx.device),
        pixel_size_A=pixel_size_A,
        ctf=particle_ctf(particles, box, pixel_size_A, ctx.device),
        n_classes=p.num_classes,
        n_iterations=n_iterations,
        batch_size=p.abinit_minisize,
        initial_resolution_A=p.abinit_init_res_A,
        final_resolution_A=final_res_A,
        resume=resume,
        on_iteration=checkpoint.after,
    )
    resolution_A = float(result.resolution_schedule_A[-1])
    maps = [to_host(volume) for volume in result.volumes]
    hand = "unknown: connect a map of known hand to inputs.reference to decide it"
    if reference is not None:
        ctx.progress(0.9, "comparing each map and its mirror image with the reference")
        mirrored = [
            choose_hand(
                volume, reference, pixel_size_A=pixel_size_A, resolution_A=resolution_A
            ).mirrored
            for volume in maps
        ]
        maps = [mirror_volume(v) if flip else v for v, flip in zip(maps, mirrored, strict=True)]
        hand = "as inputs.reference" + (
            f" (mirrored classes: {[k for k, flip in enumerate(mirrored) if flip]})"
            if any(mirrored)
            else ""
        )
    ctx.progress(0.95, "writing the initial maps")
    for k, volume in enumerate(maps):
        files, dataset = publish_volumes(
            ctx,
            {"map": (volume, f"volume_class_{k:02d}.mrc")},
            f"volume_class_{k:02d}.cs",
            pixel_size_A=pixel_size_A,
        )
        ctx.add_output("volume", dataset=dataset, files=files, n_items=1)
    class_sizes = [int(size) for size in result.class_sizes]
    ctx.add_output(
        "volume",
        summary={
            "resolution_A": round(resolution_A, 2),
            "box_size_px": box,
            "pixel_size_A": pixel_size_A,
            "symmetry": p.symmetry,
            "class_sizes": class_sizes,
            "hand": hand,
        },
    )
    assigned = particles.with_columns(
        {
            "alignments3D/class": np.asarray(result.classes, np.uint32),
            "alignments3D/class_posterior": np.asarray(
                to_host(result.class_posterior.max(axis=-1)), np.float32
            ),
        }
    )
    ctx.add_output(
        "particles",
        dataset=ctx.save_dataset(assigned, "particles.cs"),
        n_items=len(assigned),
        summary={"particles": len(assigned), "class_sizes": class_sizes},
    )
    checkpoint.remove()
    ctx.log(
        f"{p.num_classes} initial map(s) from {len(particles)} particles (class sizes "
        f"{class_sizes}), low-passed to {resolution_A:.1f} A"
    )


JOB = JobType(
    name="ab_initio",
    title="Ab-Initio Reconstruction",
    description="Build initial 3D maps of K classes from particles by SGD over a coarse-to-fine "
    "schedule.",
    params=Params,
    inputs=(
        InputSlot("particles", DataKind.PARTICLES, "Selected particles"),
        InputSlot(
            "reference",
            DataKind.VOLUME,
            "Map of known hand: each class map is mirrored if that fits it better",
            required=False,
        ),
    ),
    outputs=(
        OutputGroup("volume", DataKind.VOLUME, "One initial map per class, largest class first"),
        OutputGroup("particles", DataKind.PARTICLES, "Particles with their 3D class"),
    ),
    uses_gpu=True,
    run=run,
)
