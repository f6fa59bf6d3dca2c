"""``import_micrographs``: register already motion-corrected micrographs."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, cast

import numpy as np

from .base import DataKind, JobInputError, JobParams, JobType, OutputGroup, param
from .import_movies import _folder_of

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext


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


def run(ctx: JobContext) -> None:
    """Find the micrographs, read their MRC headers, and write the ``micrographs`` dataset."""
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.io.mrc import read_mrc_header

    p = cast(Params, ctx.params)
    keys = [
        k for k in ctx.storage.list(_folder_of(p.blob_paths)) if fnmatch.fnmatch(k, p.blob_paths)
    ]
    if not keys:
        raise JobInputError(f"params.blob_paths: no file in the project matches {p.blob_paths!r}")
    shapes = []
    for index, key in enumerate(keys):
        with ctx.open_input(key) as path:
            info = read_mrc_header(path)
        if len(info.shape) < 2 or tuple(info.shape[:-2]) not in ((), (1,)):
            raise JobInputError(f"{key}: a micrograph must be one 2D image, got {info.shape}")
        shapes.append(info.shape[-2:])
        ctx.progress((index + 1) / len(keys), f"read {key}")
    n = len(keys)
    dataset = Dataset.from_columns(
        {
            "micrograph_blob/path": keys,
            "micrograph_blob/idx": np.zeros(n, dtype=np.uint32),
            "micrograph_blob/shape": np.asarray(shapes, dtype=np.uint32),
            "micrograph_blob/psize_A": np.full(n, p.psize_A, dtype=np.float32),
            "micrograph_blob/format": ["MRC/1"] * n,
            "mscope_params/accel_kv": np.full(n, p.accel_kv, dtype=np.float32),
            "mscope_params/cs_mm": np.full(n, p.cs_mm, dtype=np.float32),
            "mscope_params/total_dose_e_per_A2": np.full(
                n, p.total_dose_e_per_A2, dtype=np.float32
            ),
            "mscope_params/exp_group_id": np.ones(n, dtype=np.uint32),
        },
        uid=ctx.stable_uids(keys),
    )
    entry = ctx.save_dataset(dataset, "micrographs.cs")
    ny, nx = (int(v) for v in shapes[0])
    ctx.add_output(
        "micrographs",
        dataset=entry,
        n_items=n,
        summary={"micrographs": n, "shape_px": [ny, nx]},
    )
    ctx.log(f"imported {n} micrographs of {nx} x {ny} px")


JOB = JobType(
    name="import_micrographs",
    title="Import Micrographs",
    description="Find micrographs by glob and record their acquisition parameters.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("micrographs", DataKind.MICROGRAPHS, "Imported micrographs"),),
    run=run,
)
