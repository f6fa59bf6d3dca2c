"""``ctf_estimation``: per-micrograph defocus, astigmatism and phase shift.

References
----------
Rohou, A. & Grigorieff, N. CTFFIND4: fast and accurate defocus estimation from electron
micrographs. J. Struct. Biol. 192, 216-221 (2015). doi:10.1016/j.jsb.2015.08.008
"""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup, param


class Params(JobParams):
    """cryoSPARC's *Patch CTF Estimation* parameters (defocus positive for underfocus)."""

    amp_contrast: float = param(0.1, description="Amplitude contrast fraction", ge=0.0, le=1.0)
    res_min_align: float = param(
        25.0, description="Lowest resolution fitted", unit="A", gt=0.0, le=1000.0
    )
    res_max_align: float = param(
        4.0, description="Highest resolution fitted", unit="A", gt=0.0, le=100.0
    )
    df_search_min: float = param(
        1000.0, description="Lowest defocus searched", unit="A", ge=0.0, le=100000.0
    )
    df_search_max: float = param(
        40000.0, description="Highest defocus searched", unit="A", gt=0.0, le=100000.0
    )
    phase_shift: bool = param(False, description="Fit a phase shift (phase plate data)")
    phase_shift_min_deg: float = param(
        0.0, description="Lowest phase shift searched", unit="deg", ge=0.0, le=180.0
    )
    phase_shift_max_deg: float = param(
        180.0, description="Highest phase shift searched", unit="deg", ge=0.0, le=180.0
    )
    box_size_pix: int = param(
        512, description="Power-spectrum tile size", unit="px", ge=64, le=2048
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Self:
        if self.res_max_align >= self.res_min_align:
            raise ValueError(
                f"res_max_align ({self.res_max_align} A) must be finer (smaller) than "
                f"res_min_align ({self.res_min_align} A)"
            )
        if self.df_search_max <= self.df_search_min:
            raise ValueError(
                f"df_search_max ({self.df_search_max} A) must exceed "
                f"df_search_min ({self.df_search_min} A)"
            )
        return self


JOB = JobType(
    name="ctf_estimation",
    title="Patch CTF Estimation",
    description="Fit defocus, astigmatism and optionally phase shift to each micrograph.",
    params=Params,
    inputs=(InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs to fit"),),
    outputs=(OutputGroup("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF parameters"),),
    uses_gpu=True,
    shardable=True,
)
