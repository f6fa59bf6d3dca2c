"""``template_picker``: picking by correlation with 2D templates (class averages).

References
----------
Roseman, A. M. FindEM: a fast, efficient program for automatic selection of particles from
electron micrographs. J. Struct. Biol. 145, 91-99 (2004). doi:10.1016/j.jsb.2003.11.007
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ._picking import micrograph_ctf, run_picker
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.algorithms.picking import Picks
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext


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
    min_score: float = param(
        0.2,
        description="Lowest normalised cross-correlation of a pick with its template",
        ge=-1.0,
        le=1.0,
    )


def _load_templates(ctx: JobContext, templates: Dataset) -> tuple[npt.NDArray[np.float32], float]:
    """The template images (n, box, box) from their stacks, and their pixel size (A)."""
    from cryokube.processing.io.mrc import open_stack

    for field in ("blob/path", "blob/idx", "blob/psize_A"):
        if field not in templates:
            raise JobInputError(f"inputs.templates: the dataset has no {field} field")
    psizes = templates["blob/psize_A"]
    if len(templates) == 0:
        raise JobInputError("inputs.templates: the dataset has no templates")
    if not np.allclose(psizes, psizes[0], rtol=1e-4):
        raise JobInputError("inputs.templates: templates have different pixel sizes (blob/psize_A)")
    images = []
    for path, idx in zip(templates.strings("blob/path"), templates["blob/idx"], strict=True):
        with ctx.open_input(path) as local, open_stack(local) as stack:
            images.append(np.asarray(stack[int(idx)], dtype=np.float32))
    shapes = {image.shape for image in images}
    if len(shapes) != 1 or images[0].shape[0] != images[0].shape[1]:
        raise JobInputError(f"inputs.templates: templates must be square and alike, got {shapes}")
    return np.stack(images), float(psizes[0])


def run(ctx: JobContext) -> None:
    """Pick each micrograph of this shard by correlation with the rotated, CTF-ed templates."""
    from cryokube.processing.algorithms.picking import pick_templates
    from cryokube.processing.backend import fourier_resample, to_device

    p = cast(Params, ctx.params)
    micrographs = ctx.load_dataset("micrographs")
    templates, template_psize = _load_templates(ctx, ctx.load_dataset("templates"))
    box_A = templates.shape[1] * template_psize
    if p.diameter_A > box_A:
        raise JobInputError(
            f"params.diameter_A: {p.diameter_A} A does not fit in the {box_A:.0f} A templates"
        )
    psizes = micrographs["micrograph_blob/psize_A"]
    by_psize: dict[float, Any] = {}

    def at_pixel_size(psize: float) -> Any:
        """Templates resampled to the micrograph's pixel size, on the device."""
        if psize not in by_psize:
            box = templates.shape[1]
            new_box = 2 * max(4, round(box * template_psize / psize / 2))
            scaled = to_device(templates, ctx.device)
            if new_box != box:
                scaled = fourier_resample(scaled, (new_box, new_box))
            by_psize[psize] = scaled
        return by_psize[psize]

    def pick(image: Any, index: int) -> Picks:
        psize = float(psizes[index])
        return pick_templates(
            image,
            at_pixel_size(psize),
            pixel_size_A=psize,
            diameter_A=p.diameter_A,
            lowpass_A=p.lowpass_res_A,
            angle_step_deg=p.angular_sampling_deg,
            ctf=micrograph_ctf(micrographs, index),
            min_separation_A=p.min_separation * p.diameter_A,
            max_picks=p.max_num_hits,
            min_score=p.min_score,
        )

    run_picker(ctx, micrographs, pick, lowpass_res_A=p.lowpass_res_A)


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
    run=run,
)
