"""``import_volume``: register a 3D map or mask from an MRC file."""

from __future__ import annotations

from typing import Literal

from .base import DataKind, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """The MRC file and what it is (cryoSPARC's *Import 3D Volumes*)."""

    volume_blob_path: str = param(
        "volume.mrc", description="MRC file, relative to the project's storage root"
    )
    volume_type: Literal["map", "mask"] = param("map", description="Import as a map or a mask")
    psize_A: float | None = param(
        None, description="Pixel size; none: read from the MRC header", unit="A", gt=0.0, le=20.0
    )


JOB = JobType(
    name="import_volume",
    title="Import 3D Volume",
    description="Read a 3D map or mask from an MRC file with its pixel size.",
    params=Params,
    inputs=(),
    outputs=(
        OutputGroup("volume", DataKind.VOLUME, "The imported map (volume_type=map)"),
        OutputGroup("mask", DataKind.MASK, "The imported mask (volume_type=mask)"),
    ),
)
