"""``import_volume``: register a 3D map or mask from an MRC file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from ._particles import publish_volumes
from .base import DataKind, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext

MASK_TOLERANCE = 1e-3
"""How far outside [0, 1] a mask's values may stray (interpolation ringing)."""


class Params(JobParams):
    """The MRC file and what it is (cryoSPARC's *Import 3D Volumes*)."""

    volume_blob_path: str = param(
        "volume.mrc", description="MRC file, relative to the project's storage root"
    )
    volume_type: Literal["map", "mask"] = param("map", description="Import as a map or a mask")
    psize_A: float | None = param(
        None, description="Pixel size; none: read from the MRC header", unit="A", gt=0.0, le=20.0
    )


def run(ctx: JobContext) -> None:
    """Read the MRC, check it is a cube (a mask within [0, 1]), and publish it with its pixel size.

    The map is copied into the job folder so that its header carries the pixel size used.
    """
    from cryokube.processing.io.errors import InputFileError
    from cryokube.processing.io.mrc import read_mrc

    p = cast(Params, ctx.params)
    if not ctx.storage.exists(p.volume_blob_path):
        raise JobInputError(f"params.volume_blob_path: {p.volume_blob_path!r} does not exist")
    try:
        with ctx.open_input(p.volume_blob_path) as local:
            data, info = read_mrc(local, mmap=False)
    except InputFileError as error:
        raise JobInputError(f"params.volume_blob_path: {error}") from error
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise JobInputError(
            f"params.volume_blob_path: {p.volume_blob_path} is not a cubic volume, "
            f"shape {data.shape}"
        )
    pixel_size_A = p.psize_A if p.psize_A is not None else float(info.pixel_size_A)
    if not pixel_size_A > 0:
        raise JobInputError(
            f"params.psize_A: {p.volume_blob_path} has no pixel size in its header; give one"
        )
    volume = np.asarray(data, dtype=np.float32)
    if p.volume_type == "mask" and (
        volume.min() < -MASK_TOLERANCE or volume.max() > 1 + MASK_TOLERANCE
    ):
        raise JobInputError(
            f"params.volume_type: a mask must lie in [0, 1]; {p.volume_blob_path} spans "
            f"{volume.min():.3g} .. {volume.max():.3g}"
        )
    prefix = "map" if p.volume_type == "map" else "mask"
    group = "volume" if p.volume_type == "map" else "mask"
    files, dataset = publish_volumes(
        ctx, {prefix: (volume, f"{group}.mrc")}, f"{group}.cs", pixel_size_A=pixel_size_A
    )
    box = int(volume.shape[0])
    ctx.add_output(
        group,
        dataset=dataset,
        files=files,
        n_items=1,
        summary={"box_size_px": box, "pixel_size_A": round(pixel_size_A, 4)},
    )
    ctx.log(f"imported a {box} px {p.volume_type} at {pixel_size_A:.4g} A/px")


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
    run=run,
)
