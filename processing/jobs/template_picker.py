"""``template_picker``: picking by correlation with 2D templates (class averages).

References
----------
Roseman, A. M. FindEM: a fast, efficient program for automatic selection of particles from
electron micrographs. J. Struct. Biol. 145, 91-99 (2004). doi:10.1016/j.jsb.2003.11.007
"""

from __future__ import annotations

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *Template Picker* parameters."""

    diameter_A: float = param(150.0, description="Particle diameter", unit="A", gt=0.0, le=5000.0)
    lowpass_res_A: float = param(
        20.0, description="Low-pass filter applied before picking", unit="A", gt=0.0, le=200.0
    )
    angular_sampling_deg: float = param(
        5.0, description="In-plane rotation step of the templates", unit="deg", gt=0.0, le=90.0
    )
    min_separation: float = param(
        0.5, description="Minimum distance between picks, in particle diameters", ge=0.1, le=10.0
    )
    max_num_hits: int = param(4000, description="Most picks kept per micrograph", ge=1, le=100000)


JOB = JobType(
    name="template_picker",
    title="Template Picker",
    description="Pick particles by CTF-corrected cross-correlation with rotated 2D templates.",
    params=Params,
    inputs=(
        InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF"),
        InputSlot("templates", DataKind.TEMPLATES, "2D templates (selected class averages)"),
    ),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Particle locations"),),
    uses_gpu=True,
    shardable=True,
)
