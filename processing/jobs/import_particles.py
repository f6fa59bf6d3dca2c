"""``import_particles``: register a particle stack from RELION (STAR) or cryoSPARC (.cs)."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

from .base import DataKind, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext


class Params(JobParams):
    """Where the particle metadata and stacks are (cryoSPARC's *Import Particle Stack*)."""

    particle_meta_path: str = param(
        "particles.star",
        description="RELION .star or cryoSPARC .cs file, relative to the project's storage root",
    )
    particle_blob_path: str | None = param(
        None,
        description="Folder the stack paths in the metadata are relative to; none: its folder",
    )
    meta_format: Literal["auto", "star", "cs"] = param(
        "auto", description="Metadata format; auto picks by file extension"
    )
    psize_A: float | None = param(
        None, description="Pixel size if the metadata lacks it", unit="A", gt=0.0, le=20.0
    )
    accel_kv: float = param(
        300.0, description="Accelerating voltage", unit="kV", ge=60.0, le=1000.0
    )
    cs_mm: float = param(2.7, description="Spherical aberration", unit="mm", ge=0.0, le=10.0)
    amp_contrast: float = param(0.1, description="Amplitude contrast fraction", ge=0.0, le=1.0)
    protein_contrast: Literal["auto", "white", "dark"] = param(
        "auto",
        description=(
            "How protein looks in the stored images: white (contrast-inverted, RELION's "
            "convention) or dark (raw micrograph contrast); auto takes blob/sign from a .cs "
            "file and white otherwise"
        ),
    )


def _read_metadata(ctx: JobContext, p: Params) -> Dataset:
    """The particles of the STAR or .cs file, with deterministic uids for STAR items."""
    from cryokube.processing.datasets import Dataset, dataset_from_star, load_cs
    from cryokube.processing.datasets.cs import DatasetFileError

    fmt = p.meta_format
    if fmt == "auto":
        suffix = posixpath.splitext(p.particle_meta_path)[1].lower()
        if suffix not in (".star", ".cs"):
            raise JobInputError(
                f"params.particle_meta_path: cannot tell the format of {p.particle_meta_path!r}; "
                "name a .star or .cs file or set meta_format"
            )
        fmt = "star" if suffix == ".star" else "cs"
    if not ctx.storage.exists(p.particle_meta_path):
        raise JobInputError(f"params.particle_meta_path: {p.particle_meta_path!r} does not exist")
    try:
        with ctx.open_input(p.particle_meta_path) as local:
            dataset = dataset_from_star(local) if fmt == "star" else load_cs(local)
    except DatasetFileError as error:
        raise JobInputError(f"params.particle_meta_path: {error}") from error
    if "blob/path" not in dataset or "blob/idx" not in dataset:
        raise JobInputError(
            f"params.particle_meta_path: {p.particle_meta_path} names no particle images "
            "(rlnImageName or blob/path and blob/idx)"
        )
    if fmt == "star":
        names = [
            f"{i}@{path}"
            for i, path in zip(dataset["blob/idx"], dataset.strings("blob/path"), strict=True)
        ]
        dataset = Dataset.from_columns(
            {f: dataset[f] for f in dataset.fields if f != "uid"}, uid=ctx.stable_uids(names)
        )
    return dataset


def _stack_keys(ctx: JobContext, p: Params, paths: list[str]) -> dict[str, str]:
    """Project key of each distinct stack path, confined to the project and existing."""
    from cryokube.processing.storage import confine_key
    from cryokube.processing.storage.base import StoragePathError

    folder = (
        posixpath.dirname(p.particle_meta_path)
        if p.particle_blob_path is None
        else p.particle_blob_path
    )
    keys: dict[str, str] = {}
    for path in dict.fromkeys(paths):
        joined = posixpath.normpath(posixpath.join(folder, path)) if folder else path
        try:
            if posixpath.isabs(path):
                raise StoragePathError(path, "absolute stack paths are not allowed")
            key = confine_key(joined)
        except StoragePathError as error:
            raise JobInputError(f"params.particle_meta_path: stack {path!r}: {error}") from error
        if not ctx.storage.exists(key):
            raise JobInputError(
                f"params.particle_meta_path: stack {key!r} (from {path!r}) does not exist"
            )
        keys[path] = key
    return keys


def run(ctx: JobContext) -> None:
    """Read the metadata, check every stack's header, and write the ``particles`` dataset.

    Stacks are referenced in place (``blob/path`` becomes their project key), not copied.
    """
    from cryokube.processing.io.errors import InputFileError
    from cryokube.processing.io.mrc import read_mrc_header

    p = cast(Params, ctx.params)
    dataset = _read_metadata(ctx, p)
    paths = dataset.strings("blob/path")
    keys = _stack_keys(ctx, p, paths)
    index = np.asarray(dataset["blob/idx"], dtype=np.int64)
    shapes: dict[str, tuple[int, int]] = {}
    for done, (path, key) in enumerate(keys.items()):
        try:
            with ctx.open_input(key) as local:
                info = read_mrc_header(local)
        except InputFileError as error:
            raise JobInputError(f"params.particle_meta_path: stack {key}: {error}") from error
        n_images = info.shape[0] if len(info.shape) == 3 else 1
        rows = np.flatnonzero(np.asarray(paths) == path)
        if index[rows].max() >= n_images:
            raise JobInputError(
                f"params.particle_meta_path: image {int(index[rows].max()) + 1} of {key} "
                f"requested, the stack holds {n_images}"
            )
        shapes[path] = (int(info.shape[-2]), int(info.shape[-1]))
        ctx.progress((done + 1) / len(keys), f"checked {key}")
    if len(set(shapes.values())) != 1:
        raise JobInputError(f"params.particle_meta_path: stacks differ in image shape {shapes}")
    n = len(dataset)
    columns: dict[str, npt.NDArray[Any]] = {
        "blob/path": np.asarray([keys[path] for path in paths], dtype="S"),
        "blob/shape": np.tile(np.asarray(next(iter(shapes.values())), np.uint32), (n, 1)),
    }
    if "blob/psize_A" not in dataset:
        if p.psize_A is None:
            raise JobInputError(
                "params.psize_A: the metadata has no pixel size (rlnImagePixelSize or "
                "blob/psize_A); give one"
            )
        columns["blob/psize_A"] = np.full(n, p.psize_A, dtype=np.float32)
    if "ctf/df1_A" in dataset:
        for field, value in (
            ("ctf/accel_kv", p.accel_kv),
            ("ctf/cs_mm", p.cs_mm),
            ("ctf/amp_contrast", p.amp_contrast),
        ):
            if field not in dataset:
                columns[field] = np.full(n, value, dtype=np.float32)
    if p.protein_contrast != "auto" or "blob/sign" not in dataset:
        sign = -1.0 if p.protein_contrast == "dark" else 1.0
        columns["blob/sign"] = np.full(n, sign, dtype=np.float32)
    dataset = dataset.with_columns(columns)
    psize_A = float(dataset["blob/psize_A"][0])
    ctx.add_output(
        "particles",
        dataset=ctx.save_dataset(dataset, "particles.cs"),
        n_items=n,
        summary={
            "particles": n,
            "stacks": len(keys),
            "box_size_px": shapes[paths[0]][0],
            "pixel_size_A": round(psize_A, 4),
            "has_ctf": "ctf/df1_A" in dataset,
            "has_poses": "alignments3D/pose" in dataset,
            "protein": _protein_contrast(dataset["blob/sign"]),
        },
    )
    ctx.log(f"imported {n} particles from {len(keys)} stacks at {psize_A:.4g} A/px")


def _protein_contrast(signs: Any) -> str:
    """``white``, ``dark``, or ``mixed (k dark)`` where the stacks disagree."""
    dark = int(np.count_nonzero(np.asarray(signs) < 0))
    if dark == 0:
        return "white"
    return "dark" if dark == len(signs) else f"mixed ({dark} dark)"


JOB = JobType(
    name="import_particles",
    title="Import Particle Stack",
    description="Read particle poses and CTF from a RELION STAR or cryoSPARC .cs file.",
    params=Params,
    inputs=(),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Imported particles"),),
    run=run,
)
