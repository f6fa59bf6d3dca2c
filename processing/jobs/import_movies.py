"""``import_movies``: register raw movies (TIFF, MRC, EER) with their acquisition parameters."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, cast

import numpy as np

from .base import DataKind, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


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


def _folder_of(pattern: str) -> str:
    """The longest folder prefix of a glob without wildcards (where to list)."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed)


def run(ctx: JobContext) -> None:
    """Find the movies, read their headers, and write the ``movies`` dataset."""
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.io.movies import read_movie_info

    p = cast(Params, ctx.params)
    keys = [
        k for k in ctx.storage.list(_folder_of(p.blob_paths)) if fnmatch.fnmatch(k, p.blob_paths)
    ]
    if not keys:
        raise JobInputError(f"params.blob_paths: no file in the project matches {p.blob_paths!r}")
    if p.gain_ref_path is not None and not ctx.storage.exists(p.gain_ref_path):
        raise JobInputError(f"params.gain_ref_path: {p.gain_ref_path!r} does not exist")
    shapes: list[tuple[int, ...]] = []
    for index, key in enumerate(keys):
        if index == 0 or not p.skip_header_check:
            with ctx.open_input(key) as path:
                info = read_movie_info(path)
            shape = (info.n_frames, *info.frame_shape)
            if shapes and shape != shapes[0]:
                raise JobInputError(f"{key}: shape {shape} differs from {keys[0]}: {shapes[0]}")
        shapes.append(shape)
        ctx.progress((index + 1) / len(keys), f"read {key}")
    n = len(keys)
    dataset = Dataset.from_columns(
        {
            "movie_blob/path": keys,
            "movie_blob/shape": np.asarray(shapes, dtype=np.uint32),
            "movie_blob/psize_A": np.full(n, p.psize_A, dtype=np.float32),
            "movie_blob/is_gain_corrected": np.full(n, p.gain_ref_path is None, dtype=np.uint32),
            "gain_ref_blob/path": [p.gain_ref_path or ""] * n,
            "gain_ref_blob/flip_x": np.full(n, p.gain_flip_x, dtype=np.uint32),
            "gain_ref_blob/rotate_num": np.full(n, p.gain_rotate_deg // 90, dtype=np.uint32),
            "mscope_params/accel_kv": np.full(n, p.accel_kv, dtype=np.float32),
            "mscope_params/cs_mm": np.full(n, p.cs_mm, dtype=np.float32),
            "mscope_params/total_dose_e_per_A2": np.full(
                n, p.total_dose_e_per_A2, dtype=np.float32
            ),
            "mscope_params/exp_group_id": np.ones(n, dtype=np.uint32),
        },
        uid=ctx.stable_uids(keys),
    )
    entry = ctx.save_dataset(dataset, "movies.cs")
    ctx.add_output(
        "movies",
        dataset=entry,
        n_items=n,
        summary={"movies": n, "frames": int(shapes[0][0]), "frame_shape_px": list(shapes[0][1:])},
    )
    ctx.log(f"imported {n} movies of {shapes[0][0]} frames, {shapes[0][2]} x {shapes[0][1]} px")


JOB = JobType(
    name="import_movies",
    title="Import Movies",
    description="Find movies by glob and record pixel size, voltage, Cs, dose and gain.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("movies", DataKind.MOVIES, "Imported movies with exposure metadata"),),
    run=run,
)
