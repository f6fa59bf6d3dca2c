"""``homogeneous_refinement``: gold-standard 3D refinement to high resolution.

References
----------
Scheres, S. H. W. & Chen, S. Prevention of overfitting in cryo-EM structure determination.
Nat. Methods 9, 853-854 (2012). doi:10.1038/nmeth.2115
Rosenthal, P. B. & Henderson, R. Optimal determination of particle orientation, absolute hand,
and contrast loss in single-particle electron cryomicroscopy. J. Mol. Biol. 333, 721-745 (2003).
doi:10.1016/j.jmb.2003.07.013
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from ._checkpoint import Checkpoint
from ._items import publish_array
from ._particles import (
    check_volume_matches,
    load_images,
    load_volume,
    particle_ctf,
    pixel_size_of,
    publish_volumes,
    shift_from_offset,
)
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext

BASE_ITERATIONS = 4
"""Refinement iterations before ``refine_num_final_iterations``: two global pose searches
(grid, then local shifts) and two local ones whose steps halve each time."""

MASK_RADIUS = 0.4
"""Radius of the refinement's soft spherical mask, as a fraction of the box (its default)."""


class Params(JobParams):
    """cryoSPARC's *Homogeneous Refinement* parameters."""

    refine_symmetry: str = param("C1", description="Point-group symmetry (C1, Cn, Dn, T, O, I)")
    refine_res_init_A: float = param(
        30.0, description="Initial low-pass of the reference", unit="A", gt=0.0, le=100.0
    )
    max_res_A: float | None = param(
        None, description="Resolution limit of alignment; none: no limit", unit="A", gt=0.0
    )
    refine_mask: Literal["dynamic", "static", "null"] = param(
        "dynamic", description="Mask type: dynamic from the map, static from the mask input"
    )
    refine_num_final_iterations: int = param(
        1, description="Extra iterations after convergence", ge=0, le=20
    )
    refine_ctf_global_refine: bool = param(False, description="Refine per-group CTF aberrations")
    refine_defocus_refine: bool = param(False, description="Refine per-particle defocus")
    fsc_threshold: float = param(
        0.143, description="FSC threshold for the resolution", gt=0.0, lt=1.0
    )


def _check_params(p: Params) -> None:
    """Reject options this refinement does not implement, naming the parameter."""
    if p.max_res_A is not None:
        raise JobInputError("params.max_res_A: an alignment resolution limit is not implemented")
    for name in ("refine_ctf_global_refine", "refine_defocus_refine"):
        if getattr(p, name):
            raise JobInputError(f"params.{name}: CTF refinement is not implemented")


def _fsc_curves(curves: Any, box: int, pixel_size_A: float) -> tuple[Any, dict[str, Any]]:
    """The FSC curves of shells 1 .. N/2: a (5, N/2) table and JSON-ready summary lists.

    The table's rows are the frequency (1/A) then the corrected, unmasked, masked and
    phase-randomised FSC (the console's ``*_fsc.npy`` layout); the summary has
    ``fsc_resolution_A`` and ``fsc_<curve>`` lists.
    """
    from cryokube.processing.algorithms.fsc import shell_resolution_A
    from cryokube.processing.backend import to_host

    names = ("corrected", "unmasked", "masked", "phase_randomized")
    values = [np.asarray(to_host(getattr(curves, name)), np.float64)[1:] for name in names]
    shells = np.arange(1, box // 2 + 1, dtype=np.float64)
    resolution_A = np.asarray(
        shell_resolution_A(box // 2 + 1, box_size_px=box, pixel_size_A=pixel_size_A)
    )[1:]
    table = np.stack([shells / (box * pixel_size_A), *values]).astype(np.float32)
    summary: dict[str, Any] = {"fsc_resolution_A": [round(float(r), 3) for r in resolution_A]}
    for name, curve in zip(names, values, strict=True):
        summary[f"fsc_{name}"] = [round(float(v), 4) for v in curve]
    return table, summary


def run(ctx: JobContext) -> None:
    """Refine the map and poses with independent half sets; report the masked FSC resolution.

    The mask of the final FSC is the input mask for ``refine_mask="static"``, none for
    ``"null"``, and for ``"dynamic"`` the refinement's own soft sphere of 0.4 of the box
    (a map-derived mask is not implemented). The published map is the average of the half
    maps weighted by ``sqrt(2 FSC / (1 + FSC))`` per shell, without a B-factor. The iteration
    state is checkpointed (:mod:`._checkpoint`), so a retried pod resumes where its predecessor
    stopped and writes the same outputs as an uninterrupted run.
    """
    from cryokube.processing.algorithms.fsc import (
        masked_fsc,
        resolution_at_threshold,
        sharpen,
        soft_spherical_mask,
    )
    from cryokube.processing.algorithms.refine import RefinementState, refine_3d
    from cryokube.processing.algorithms.symmetry import symmetry_group
    from cryokube.processing.backend import to_device, to_host
    from cryokube.processing.geometry import matrix_to_axis_angle

    p = cast(Params, ctx.params)
    _check_params(p)
    try:
        group = symmetry_group(p.refine_symmetry)
    except ValueError as error:
        raise JobInputError(f"params.refine_symmetry: {error}") from error
    particles = ctx.load_dataset("particles")
    pixel_size_A = pixel_size_of(particles, "particles")
    reference, reference_psize_A = load_volume(ctx, "volume", "map")
    mask: Any = None
    if p.refine_mask == "static":
        if not ctx.input("mask"):
            raise JobInputError("params.refine_mask: 'static' needs a mask on inputs.mask")
        mask, _ = load_volume(ctx, "mask", "mask")
    images = load_images(ctx, particles, "particles")
    box = int(images.shape[-1])
    check_volume_matches("volume", reference, reference_psize_A, box, pixel_size_A)
    if mask is not None and mask.shape != reference.shape:
        raise JobInputError(f"inputs.mask: shape {mask.shape} differs from the map's")
    n_iterations = BASE_ITERATIONS + p.refine_num_final_iterations
    checkpoint = Checkpoint(ctx, RefinementState, n_iterations=n_iterations)
    resume = checkpoint.start(f"refining {len(particles)} particles over {n_iterations} iterations")
    result = refine_3d(
        to_device(images, ctx.device),
        to_device(reference, ctx.device),
        pixel_size_A=pixel_size_A,
        ctf=particle_ctf(particles, box, pixel_size_A, ctx.device),
        symmetry=None if len(group) == 1 else to_device(group.astype(np.float32), ctx.device),
        n_iterations=n_iterations,
        initial_resolution_A=p.refine_res_init_A,
        mask_radius_px=MASK_RADIUS * box,
        resume=resume,
        on_iteration=checkpoint.after,
    )
    ctx.progress(0.9, "writing maps, FSC and poses")
    half_a, half_b = result.half_maps
    if p.refine_mask == "dynamic":
        curves = result.fsc
        mask = soft_spherical_mask((box, box, box), radius_px=MASK_RADIUS * box)
    else:
        if mask is None:
            mask = np.ones((box, box, box), np.float32)
        curves = masked_fsc(
            half_a, half_b, to_device(mask, ctx.device), rng=np.random.default_rng(0)
        )
    resolution_A = resolution_at_threshold(
        to_host(curves.corrected),
        box_size_px=box,
        pixel_size_A=pixel_size_A,
        threshold=p.fsc_threshold,
    )
    full = sharpen(
        result.full_map, b_factor_A2=0.0, pixel_size_A=pixel_size_A, fsc_curve=curves.corrected
    )
    files, dataset = publish_volumes(
        ctx,
        {
            "map": (to_host(full), "volume.mrc"),
            "map_half_A": (to_host(half_a), "volume_half_A.mrc"),
            "map_half_B": (to_host(half_b), "volume_half_B.mrc"),
        },
        "volume.cs",
        pixel_size_A=pixel_size_A,
    )
    fsc_table, fsc_summary = _fsc_curves(curves, box, pixel_size_A)
    files.append(publish_array(ctx, fsc_table, "volume_fsc.npy"))
    ctx.add_output(
        "volume",
        dataset=dataset,
        files=files,
        n_items=1,
        summary={
            "resolution_A": round(resolution_A, 3),
            "fsc_threshold": p.fsc_threshold,
            "mask": p.refine_mask,
            "symmetry": p.refine_symmetry,
            "resolution_history_A": [round(r, 3) for r in result.resolution_history_A],
            **fsc_summary,
            "hand": "that of the input map (arbitrary after ab-initio)",
        },
    )
    mask_files, mask_dataset = publish_volumes(
        ctx, {"mask": (to_host(mask), "mask.mrc")}, "mask.cs", pixel_size_A=pixel_size_A
    )
    ctx.add_output("mask", dataset=mask_dataset, files=mask_files, n_items=1)
    n = len(particles)
    refined = particles.with_columns(
        {
            "alignments3D/pose": np.asarray(
                matrix_to_axis_angle(to_host(result.rotations).astype(np.float64)), np.float32
            ),
            "alignments3D/shift": shift_from_offset(to_host(result.shifts_px)),
            "alignments3D/split": result.halves.astype(np.uint32),
            "alignments3D/psize_A": np.full(n, pixel_size_A, dtype=np.float32),
            "alignments3D/class": np.zeros(n, np.uint32),
        }
    )
    ctx.add_output(
        "particles",
        dataset=ctx.save_dataset(refined, "particles.cs"),
        n_items=n,
        summary={"particles": n},
    )
    checkpoint.remove()
    ctx.log(
        f"gold-standard resolution {resolution_A:.2f} A (FSC {p.fsc_threshold}, {p.refine_mask} mask)"
    )


JOB = JobType(
    name="homogeneous_refinement",
    title="Homogeneous Refinement",
    description="Refine a map and particle poses with independent half-maps (gold standard).",
    params=Params,
    inputs=(
        InputSlot("particles", DataKind.PARTICLES, "Particles to refine"),
        InputSlot("volume", DataKind.VOLUME, "Initial reference map"),
        InputSlot("mask", DataKind.MASK, "Static mask", required=False),
    ),
    outputs=(
        OutputGroup("volume", DataKind.VOLUME, "Refined sharpened map with half-maps and FSC"),
        OutputGroup("particles", DataKind.PARTICLES, "Particles with refined poses"),
        OutputGroup("mask", DataKind.MASK, "Final refinement mask"),
    ),
    uses_gpu=True,
    run=run,
)
