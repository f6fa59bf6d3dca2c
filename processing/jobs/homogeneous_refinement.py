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

from typing import Literal

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


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
)
