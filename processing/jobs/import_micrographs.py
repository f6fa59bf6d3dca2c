"""``import_micrographs``: register already motion-corrected micrographs."""

from __future__ import annotations

from .base import DataKind, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """Acquisition parameters of the micrographs (cryoSPARC's *Import Micrographs*)."""

    blob_paths: str = param(
        "micrographs/*.mrc",
        description="Glob of micrograph files, relative to the project's storage root",
    )
    psize_A: float = param(1.0, description="Pixel size", unit="A", gt=0.0, le=20.0)
    accel_kv: float = param(
        300.0, description="Accelerating voltage", unit="kV", ge=60.0, le=1000.0
    )
    cs_mm: float = param(2.7, description="Spherical aberration", unit="mm", ge=0.0, le=10.0)
    total_dose_e_per_A2: float = param(
        50.0, description="Total electron dose", unit="e/A^2", gt=0.0, le=1000.0
    )


JOB = JobType(
    name="import_micrographs",
    title="Import Micrographs",
    description="Find micrographs by glob and record their acquisition parameters.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("micrographs", DataKind.MICROGRAPHS, "Imported micrographs"),),
)
