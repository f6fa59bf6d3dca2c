"""``classify_2d``: reference-free 2D classification by online expectation maximisation.

References
----------
Punjani, A. et al. cryoSPARC: algorithms for rapid unsupervised cryo-EM structure
determination. Nat. Methods 14, 290-296 (2017). doi:10.1038/nmeth.4169
Scheres, S. H. W. RELION: implementation of a Bayesian approach to cryo-EM structure
determination. J. Struct. Biol. 180, 519-530 (2012). doi:10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from ._checkpoint import Checkpoint
from ._items import publish_mrc
from ._particles import NYQUIST_PX, load_images, particle_ctf, pixel_size_of, shift_from_offset
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


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


def run(ctx: JobContext) -> None:
    """Classify the particles and write class averages and per-particle 2D alignments.

    Online-EM mini-batches hold ``batch_size_per_class * num_classes`` particles; at least
    one full pass ends the run (``num_final_full_iters=0`` runs one). Each particle takes its
    best pose within a class (``force_max_over_poses`` is always on, and the initial class
    uncertainty is the algorithm's own: ``uncertainty_factor`` is not used). The iteration
    state is checkpointed (:mod:`._checkpoint`), so a retried pod resumes where its predecessor
    stopped and writes the same outputs as an uninterrupted run.
    """
    from cryokube.processing.algorithms.class2d import Class2DState, classify_2d
    from cryokube.processing.backend import to_device, to_host
    from cryokube.processing.datasets import Dataset

    p = cast(Params, ctx.params)
    particles = ctx.load_dataset("particles")
    pixel_size_A = pixel_size_of(particles, "particles")
    if p.num_classes > len(particles):
        raise JobInputError(
            f"params.num_classes: {p.num_classes} classes for only {len(particles)} particles"
        )
    max_res_A = max(p.max_res_A, NYQUIST_PX * pixel_size_A)
    if max_res_A > p.max_res_A:
        ctx.log(f"max_res_A {p.max_res_A} A is beyond Nyquist; aligning to {max_res_A:.3g} A")
    images = load_images(ctx, particles, "particles")
    box = int(images.shape[-1])
    if p.circular_mask_diameter_A is not None and p.circular_mask_diameter_A > box * pixel_size_A:
        raise JobInputError(
            f"params.circular_mask_diameter_A: {p.circular_mask_diameter_A} A exceeds the "
            f"{box * pixel_size_A:.4g} A box"
        )
    n_full_iterations = max(p.num_final_full_iters, 1)
    checkpoint = Checkpoint(
        ctx, Class2DState, n_iterations=p.num_online_em_iters + n_full_iterations
    )
    resume = checkpoint.start(
        f"classifying {len(particles)} particles into {p.num_classes} classes"
    )
    result = classify_2d(
        to_device(images, ctx.device),
        n_classes=p.num_classes,
        pixel_size_A=pixel_size_A,
        ctf=particle_ctf(particles, box, pixel_size_A, ctx.device),
        max_resolution_A=max_res_A,
        mask_radius_px=(
            None
            if p.circular_mask_diameter_A is None
            else p.circular_mask_diameter_A / (2 * pixel_size_A)
        ),
        n_online_iterations=p.num_online_em_iters,
        online_batch_size=p.batch_size_per_class * p.num_classes,
        n_full_iterations=n_full_iterations,
        resume=resume,
        on_iteration=checkpoint.after,
    )
    ctx.progress(0.9, "writing class averages")
    k = p.num_classes
    averages = publish_mrc(
        ctx,
        to_host(result.class_averages),
        "class_averages.mrcs",
        pixel_size_A=pixel_size_A,
        stack=True,
    )
    resolution_A = np.asarray(result.class_resolution_A, dtype=np.float32)
    templates = Dataset.from_columns(
        {
            "blob/path": [averages.path] * k,
            "blob/idx": np.arange(k, dtype=np.uint32),
            "blob/shape": np.tile(np.asarray([box, box], np.uint32), (k, 1)),
            "blob/psize_A": np.full(k, pixel_size_A, dtype=np.float32),
            "blob/res_A": resolution_A,
            "blob/num_particles": result.class_sizes.astype(np.uint32),
            "alignments2D/class": np.arange(k, dtype=np.uint32),
        },
        uid=ctx.stable_uids([f"class{c}" for c in range(k)]),
    )
    finite = [None if not np.isfinite(r) else round(float(r), 2) for r in resolution_A]
    ctx.add_output(
        "class_averages",
        dataset=ctx.save_dataset(templates, "class_averages.cs"),
        files=[averages],
        n_items=k,
        summary={
            "classes": k,
            "class_sizes": result.class_sizes.tolist(),
            "class_resolution_A": finite,
        },
    )
    classified = particles.with_columns(
        {
            "alignments2D/class": result.assignments.astype(np.uint32),
            "alignments2D/pose": np.radians(result.angles_deg).astype(np.float32),
            "alignments2D/shift": shift_from_offset(result.shifts_px),
            "alignments2D/class_posterior": result.max_probability.astype(np.float32),
            "alignments2D/psize_A": np.full(len(particles), pixel_size_A, dtype=np.float32),
        }
    )
    ctx.add_output(
        "particles",
        dataset=ctx.save_dataset(classified, "particles.cs"),
        n_items=len(classified),
        summary={"particles": len(classified), "classes": k},
    )
    checkpoint.remove()
    ctx.log(f"{len(particles)} particles in {k} classes of sizes {result.class_sizes.tolist()}")


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
    run=run,
)
