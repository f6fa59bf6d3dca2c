"""``import_movies``: register raw movies (TIFF, MRC, EER) with their acquisition parameters."""

from __future__ import annotations

from .base import DataKind, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """Acquisition parameters of the movies, as cryoSPARC's *Import Movies* asks for them."""

    blob_paths: str = param(
        "movies/*.tif",
        description="Glob of movie files, relative to the project's storage root",
    )
    gain_ref_path: str | None = param(
        None, description="Gain reference (MRC), relative to the storage root; none if applied"
    )
    gain_flip_x: bool = param(False, description="Flip the gain reference left-right")
    gain_rotate_deg: int = param(
        0, description="Rotate the gain reference counter-clockwise", unit="deg", ge=0, le=270
    )
    psize_A: float = param(1.0, description="Raw pixel size", unit="A", gt=0.0, le=20.0)
    accel_kv: float = param(
        300.0, description="Accelerating voltage", unit="kV", ge=60.0, le=1000.0
    )
    cs_mm: float = param(2.7, description="Spherical aberration", unit="mm", ge=0.0, le=10.0)
    total_dose_e_per_A2: float = param(
        50.0, description="Total electron dose over all frames", unit="e/A^2", gt=0.0, le=1000.0
    )
    skip_header_check: bool = param(
        False, description="Trust the first movie's shape instead of reading every header"
    )


JOB = JobType(
    name="import_movies",
    title="Import Movies",
    description="Find movies by glob and record pixel size, voltage, Cs, dose and gain.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("movies", DataKind.MOVIES, "Imported movies with exposure metadata"),),
)
