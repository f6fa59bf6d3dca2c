"""``select_2d``: keep the particles of chosen 2D classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from ._particles import check_fields
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


class Params(JobParams):
    """Which classes to keep: explicit indices, or an automatic rule when none are given."""

    class_indices: list[int] | None = param(
        None, description="0-based indices of the classes to keep; none: automatic selection"
    )
    min_res_A: float = param(
        30.0, description="Automatic: drop classes worse than this resolution", unit="A", gt=0.0
    )
    min_particles: int = param(10, description="Automatic: drop classes with fewer particles", ge=0)


def run(ctx: JobContext) -> None:
    """Split the particles by their class and keep the chosen (or automatically good) ones."""
    from cryokube.processing.algorithms.select2d import select_2d

    p = cast(Params, ctx.params)
    particles = ctx.load_dataset("particles")
    classes = ctx.load_dataset("class_averages")
    check_fields(particles, "particles", ("alignments2D/class",))
    check_fields(classes, "class_averages", ("alignments2D/class", "blob/res_A"))
    n_classes = len(classes)
    if not np.array_equal(classes["alignments2D/class"], np.arange(n_classes)):
        raise JobInputError("inputs.class_averages: alignments2D/class must be 0 .. K-1 in order")
    labels = np.asarray(particles["alignments2D/class"], dtype=np.int64)
    if labels.size and labels.max() >= n_classes:
        raise JobInputError(
            f"inputs.particles: class {int(labels.max())} is not among the {n_classes} "
            "class averages"
        )
    if p.class_indices is not None:
        bad = [c for c in p.class_indices if not 0 <= c < n_classes]
        if bad:
            raise JobInputError(f"params.class_indices: {bad} not in 0 .. {n_classes - 1}")
        selection = select_2d(labels, n_classes=n_classes, classes=p.class_indices)
    else:
        selection = select_2d(
            labels,
            n_classes=n_classes,
            class_resolution_A=classes["blob/res_A"],
            min_particles=p.min_particles,
            max_resolution_A=p.min_res_A,
        )
    if not selection.particle_mask.any():
        best = float(np.min(classes["blob/res_A"])) if n_classes else float("inf")
        raise JobInputError(
            f"params.min_res_A: no class with at least {p.min_particles} particles reaches "
            f"{p.min_res_A} A (best class: {best:.3g} A); relax min_res_A or min_particles, "
            "or name class_indices"
            if p.class_indices is None
            else "params.class_indices: the named classes hold no particles"
        )
    kept = particles.mask(selection.particle_mask)
    excluded = particles.mask(~selection.particle_mask)
    templates = classes.take(selection.classes)
    kept_classes = selection.classes.tolist()
    summary = {"classes_kept": kept_classes, "particles_kept": len(kept)}
    for name, dataset in (
        ("particles_selected", kept),
        ("particles_excluded", excluded),
        ("templates_selected", templates),
    ):
        ctx.add_output(
            name,
            dataset=ctx.save_dataset(dataset, f"{name}.cs"),
            n_items=len(dataset),
            summary=summary if name != "particles_excluded" else {"particles": len(dataset)},
        )
    ctx.log(
        f"kept {len(kept_classes)} of {n_classes} classes ({kept_classes}) with "
        f"{len(kept)} of {len(particles)} particles"
    )


JOB = JobType(
    name="select_2d",
    title="Select 2D Classes",
    description="Keep particles of the chosen classes and export their averages as templates.",
    params=Params,
    inputs=(
        InputSlot("particles", DataKind.PARTICLES, "Classified particles"),
        InputSlot("class_averages", DataKind.TEMPLATES, "Class averages"),
    ),
    outputs=(
        OutputGroup("particles_selected", DataKind.PARTICLES, "Particles in kept classes"),
        OutputGroup("particles_excluded", DataKind.PARTICLES, "Particles in rejected classes"),
        OutputGroup("templates_selected", DataKind.TEMPLATES, "Kept class averages"),
    ),
    run=run,
)
