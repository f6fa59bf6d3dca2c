"""``select_2d``: keep the particles of chosen 2D classes."""

from __future__ import annotations

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """Which classes to keep: explicit indices, or an automatic rule when none are given."""

    class_indices: list[int] | None = param(
        None, description="0-based indices of the classes to keep; none: automatic selection"
    )
    min_res_A: float = param(
        30.0, description="Automatic: drop classes worse than this resolution", unit="A", gt=0.0
    )
    min_particles: int = param(10, description="Automatic: drop classes with fewer particles", ge=0)


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
)
