"""``extract_particles``: cut particle boxes out of micrographs.

Boxes are cut at the nearest whole pixel of each centre; a particle whose box would cross the
micrograph's edge is dropped, as cryoSPARC and RELION do. Each box is optionally phase-flipped
with its micrograph's CTF, Fourier-cropped, contrast-inverted, and normalised to zero mean and
unit standard deviation outside a circle of 3/4 of the box (RELION's background radius).

References
----------
Scheres, S. H. W. RELION: implementation of a Bayesian approach to cryo-EM structure
determination. J. Struct. Biol. 180, 519-530 (2012). doi:10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import numpy.typing as npt
from pydantic import model_validator

from ._items import ItemResult, process_items, publish_mrc, save_output, stem
from ._picking import centres_px, micrograph_ctf
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext


class Params(JobParams):
    """cryoSPARC's *Extract From Micrographs* parameters."""

    box_size_pix: int = param(256, description="Extraction box size", unit="px", ge=16, le=2048)
    bin_size_pix: int | None = param(
        None,
        description="Fourier-crop the box to this size; none: no cropping",
        unit="px",
        ge=8,
        le=2048,
    )
    flip_contrast: bool = param(True, description="Invert contrast so particles are white")
    phase_flip: bool = param(False, description="Multiply by the sign of the CTF")
    recenter_using_shifts: bool = param(True, description="Apply upstream 2D shifts to centres")
    output_f16: bool = param(False, description="Write particle stacks as float16")

    @model_validator(mode="after")
    def _crop_smaller(self) -> Self:
        if self.bin_size_pix is not None and self.bin_size_pix > self.box_size_pix:
            raise ValueError(
                f"bin_size_pix ({self.bin_size_pix} px) must not exceed "
                f"box_size_pix ({self.box_size_pix} px)"
            )
        if self.bin_size_pix is not None and self.bin_size_pix % 2:
            raise ValueError(f"bin_size_pix ({self.bin_size_pix} px) must be even")
        if self.box_size_pix % 2:
            raise ValueError(f"box_size_pix ({self.box_size_pix} px) must be even")
        return self


def _recentred(particles: Dataset, mic_psize_A: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Centres (n, 2) as (x, y) px moved by upstream 2D shifts (RELION: ``X - rlnOriginX``)."""
    centres = centres_px(particles)
    shift = particles.get("alignments2D/shift")
    psize = particles.get("alignments2D/psize_A", default=particles.get("blob/psize_A"))
    if shift is None or psize is None:
        return centres
    moved: npt.NDArray[np.float64] = centres - shift * (psize / mic_psize_A)[:, None]
    return moved


def run(ctx: JobContext) -> None:
    """Extract the particles of each micrograph of this shard into one ``.mrcs`` stack."""
    from cryokube.processing.algorithms.extraction import extract_particles
    from cryokube.processing.backend import to_device, to_host
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.io.mrc import read_mrc

    p = cast(Params, ctx.params)
    micrographs = ctx.load_dataset("micrographs")
    particles = ctx.load_dataset("particles")
    for field in (
        "location/micrograph_path",
        "location/center_x_frac",
        "location/micrograph_shape",
    ):
        if field not in particles:
            raise JobInputError(f"inputs.particles: the dataset has no {field} field")
    mic_paths = micrographs.strings("micrograph_blob/path")
    on_mic = np.asarray(particles.strings("location/micrograph_path"), dtype=str)
    unknown = sorted(set(on_mic.tolist()) - set(mic_paths))
    if unknown:
        raise JobInputError(
            f"inputs.particles: {len(unknown)} micrograph(s) are not in inputs.micrographs, "
            f"first {unknown[0]!r}"
        )
    if p.phase_flip and "ctf/df1_A" not in micrographs:
        raise JobInputError("params.phase_flip: the micrographs have no CTF fit (ctf/df1_A)")
    out_box = p.bin_size_pix or p.box_size_pix
    ctf_fields = [f for f in micrographs.fields if f.startswith("ctf/")]

    order = np.argsort(on_mic, kind="stable")
    starts = np.searchsorted(on_mic[order], mic_paths, side="left")
    stops = np.searchsorted(on_mic[order], mic_paths, side="right")

    def process(index: int) -> ItemResult:
        path = mic_paths[index]
        rows = order[starts[index] : stops[index]]
        mine = particles.take(rows)
        psize = float(micrographs["micrograph_blob/psize_A"][index])
        with ctx.open_input(path) as local:
            image, _ = read_mrc(local, mmap=False)
        centres = (
            _recentred(mine, np.full(len(mine), psize))
            if p.recenter_using_shifts
            else centres_px(mine)
        )
        extraction = extract_particles(
            to_device(image, ctx.device),
            centres[:, ::-1],
            pixel_size_A=psize,
            box_px=p.box_size_pix,
            output_box_px=out_box,
            invert_contrast=p.flip_contrast,
            ctf=micrograph_ctf(micrographs, index) if p.phase_flip else None,
            phase_flip=p.phase_flip,
        )
        kept = mine.take(to_host(extraction.kept_index))
        if not len(kept):
            return ItemResult({"uid": np.zeros(0, dtype=np.uint64)})
        images = to_host(extraction.particles)
        out_psize = extraction.pixel_size_A
        entry = publish_mrc(
            ctx,
            images,
            f"extract/{stem(path)}_particles.mrcs",
            pixel_size_A=out_psize,
            float16=p.output_f16,
            stack=True,
        )
        n = len(kept)
        columns: dict[str, npt.NDArray[Any]] = {f: np.asarray(kept[f]) for f in kept.fields}
        columns |= {
            "blob/path": np.asarray([entry.path] * n, dtype="S"),
            "blob/idx": np.arange(n, dtype=np.uint32),
            "blob/shape": np.tile(np.asarray([out_box, out_box], np.uint32), (n, 1)),
            "blob/psize_A": np.full(n, out_psize, dtype=np.float32),
            "blob/sign": np.full(n, 1.0 if p.flip_contrast else -1.0, dtype=np.float32),
        }
        columns |= {f: np.repeat(micrographs[f][index : index + 1], n, axis=0) for f in ctf_fields}
        return ItemResult(columns, [entry])

    columns, files = process_items(ctx, mic_paths, process, verb="extracted from")
    mine = ctx.my_part(list(range(len(mic_paths))))
    total = int(np.isin(on_mic, [mic_paths[i] for i in mine]).sum())
    n_extracted = len(columns.get("uid", ()))
    dataset = Dataset.from_columns(columns) if columns else None
    summary = {
        "micrographs": len(mine),
        "particles_extracted": n_extracted,
        "dropped_at_edges": total - n_extracted,
        "box_size_px": out_box,
        "pixel_size_A": float(columns["blob/psize_A"][0]) if n_extracted else None,
    }
    save_output(ctx, "particles", dataset, files, summary)
    ctx.log(f"extracted {n_extracted} particles, dropped {total - n_extracted} at the edges")


JOB = JobType(
    name="extract_particles",
    title="Extract From Micrographs",
    description="Extract normalised particle boxes at picked locations, optionally cropped.",
    params=Params,
    inputs=(
        InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF"),
        InputSlot("particles", DataKind.PARTICLES, "Picked particle locations"),
    ),
    outputs=(OutputGroup("particles", DataKind.PARTICLES, "Extracted particle stacks"),),
    uses_gpu=True,
    shardable=True,
    run=run,
)
