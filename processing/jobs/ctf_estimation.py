"""``ctf_estimation``: per-micrograph defocus, astigmatism and phase shift.

References
----------
Rohou, A. & Grigorieff, N. CTFFIND4: fast and accurate defocus estimation from electron
micrographs. J. Struct. Biol. 192, 216-221 (2015). doi:10.1016/j.jsb.2015.08.008
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import numpy.typing as npt
from pydantic import model_validator

from ._items import ItemResult, check_nyquist, process_items, publish_array, save_output, stem
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext


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


def _fit_source(micrographs: Dataset) -> str:
    """The micrograph column to fit: the sum without dose weighting when motion wrote one."""
    plain = micrographs.get("micrograph_blob_non_dw/path")
    if plain is not None and all(len(v) for v in plain):
        return "micrograph_blob_non_dw"
    if "micrograph_blob/path" not in micrographs:
        raise JobInputError("inputs.micrographs: the dataset has no micrograph_blob/path field")
    return "micrograph_blob"


def _exposure_name(micrographs: Dataset, index: int) -> tuple[str, str]:
    """The exposure's name and movie path as motion correction reported them."""
    source = "movie_blob/path" if "movie_blob/path" in micrographs else "micrograph_blob/path"
    path = micrographs.strings(source)[index]
    return stem(path), path


def fit_curve(
    image: npt.NDArray[Any],
    fit: Any,
    *,
    pixel_size_A: float,
    box_px: int,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float,
) -> npt.NDArray[np.float32]:
    """The CTF-fit plot's data, shape (3, n): 1/Å, the spectrum's rotational average, the model.

    The rotational average of the tiles' power spectrum with a smooth background (a running
    mean over a tenth of the range) removed, scaled to the model's range; the model is the
    fitted CTF squared at the mean defocus. A rotational average blurs the rings of a strongly
    astigmatic micrograph; the fit itself is two-dimensional.
    """
    from cryokube.processing.algorithms._spectra import centred_power_spectrum
    from cryokube.processing.backend import radial_average, to_host
    from cryokube.processing.ctf import ctf_radial

    spectrum = np.fft.ifftshift(to_host(centred_power_spectrum(image, box_px=box_px)))
    profile = to_host(radial_average(spectrum, (box_px, box_px), rfft=False)).astype(np.float64)
    profile = np.log(np.maximum(profile, 1e-30))
    width = max(3, len(profile) // 10)
    background = np.convolve(np.pad(profile, width, mode="edge"), np.ones(width) / width, "same")
    signal = (profile - background[width:-width])[1:]
    freq = np.arange(1, len(profile)) / (box_px * pixel_size_A)
    model = ctf_radial(freq, defocus_A=fit.defocus_mean_A, voltage_kV=voltage_kV, cs_mm=cs_mm,
                       amp_contrast=amp_contrast, phase_shift_deg=fit.phase_shift_deg) ** 2  # fmt: skip
    span = np.ptp(signal) or 1.0
    scaled = (signal - signal.min()) / span
    return np.stack([freq, scaled, np.asarray(model, dtype=np.float64)]).astype(np.float32)


def run(ctx: JobContext) -> None:
    """Fit defocus, astigmatism (and phase shift) to each micrograph of this shard."""
    from cryokube.processing.algorithms.ctf_fit import estimate_ctf
    from cryokube.processing.backend import to_device
    from cryokube.processing.io.mrc import read_mrc

    p = cast(Params, ctx.params)
    micrographs = ctx.load_dataset("micrographs")
    for field in ("micrograph_blob/psize_A", "mscope_params/accel_kv", "mscope_params/cs_mm"):
        if field not in micrographs:
            raise JobInputError(f"inputs.micrographs: the dataset has no {field} field")
    source = _fit_source(micrographs)
    paths = micrographs.strings(f"{source}/path")
    psizes = micrographs["micrograph_blob/psize_A"]
    check_nyquist(p.res_max_align, "res_max_align", psizes, paths)

    def process(index: int) -> ItemResult:
        with ctx.open_input(paths[index]) as local:
            image, _ = read_mrc(local, mmap=False)
        if image.ndim != 2:
            raise JobInputError(f"{paths[index]}: a micrograph must be one 2D image")
        # At least 3 x 3 half-overlapping tiles, so that the averaged spectrum is not one
        # periodogram (whose noise is as large as the signal at every frequency).
        box_px = min(p.box_size_pix, 2 * (min(image.shape) // 4))
        if box_px < p.box_size_pix:
            ctx.log(
                f"{paths[index]}: box_size_pix {p.box_size_pix} cut to {box_px} px (half the image)"
            )
        accel_kv = float(micrographs["mscope_params/accel_kv"][index])
        cs_mm = float(micrographs["mscope_params/cs_mm"][index])
        fit = estimate_ctf(
            to_device(image.astype(np.float32), ctx.device),
            pixel_size_A=float(psizes[index]),
            voltage_kV=accel_kv,
            cs_mm=cs_mm,
            amp_contrast=p.amp_contrast,
            box_px=box_px,
            resolution_band_A=(p.res_min_align, p.res_max_align),
            defocus_range_A=(p.df_search_min, p.df_search_max),
            fit_phase_shift=p.phase_shift,
        )
        curve = fit_curve(
            image.astype(np.float32), fit, pixel_size_A=float(psizes[index]), box_px=box_px,
            voltage_kV=accel_kv, cs_mm=cs_mm, amp_contrast=p.amp_contrast,
        )  # fmt: skip
        name, movie_path = _exposure_name(micrographs, index)
        fit_file = publish_array(ctx, curve, f"ctf/{stem(paths[index])}_ctf_fit.npy")
        ctx.reporter.report(
            "exposures",
            {
                "name": name,
                "movie_path": movie_path,
                "defocus_u_A": fit.defocus_u_A,
                "defocus_v_A": fit.defocus_v_A,
                "astigmatism_angle_deg": fit.astig_angle_deg,
                "ctf_fit_resolution_A": fit.fit_resolution_A,
            },
        )
        group = micrographs.get("mscope_params/exp_group_id")
        return ItemResult(
            {
                "ctf/exp_group_id": np.asarray([1 if group is None else group[index]], np.uint32),
                "ctf/accel_kv": np.asarray([accel_kv], dtype=np.float32),
                "ctf/cs_mm": np.asarray([cs_mm], dtype=np.float32),
                "ctf/amp_contrast": np.asarray([p.amp_contrast], dtype=np.float32),
                "ctf/df1_A": np.asarray([fit.defocus_u_A], dtype=np.float32),
                "ctf/df2_A": np.asarray([fit.defocus_v_A], dtype=np.float32),
                "ctf/df_angle_rad": np.asarray([math.radians(fit.astig_angle_deg)], np.float32),
                "ctf/phase_shift_rad": np.asarray(
                    [math.radians(fit.phase_shift_deg)], dtype=np.float32
                ),
                "ctf/scale": np.ones(1, dtype=np.float32),
                "ctf/bfactor": np.zeros(1, dtype=np.float32),
                "ctf/ctf_fit_to_A": np.asarray([fit.fit_resolution_A], dtype=np.float32),
                "ctf/cross_corr": np.asarray([fit.score], dtype=np.float32),
            },
            [fit_file],
        )

    columns, files = process_items(ctx, paths, process, verb="fitted")
    mine = ctx.my_part(list(range(len(paths))))
    dataset = micrographs.take(mine).with_columns(columns) if mine else None
    summary: dict[str, Any] = {"micrographs": len(mine)}
    if columns:
        mean_A = 0.5 * (columns["ctf/df1_A"].astype(np.float64) + columns["ctf/df2_A"])
        summary |= {
            "defocus_min_A": round(float(mean_A.min()), 1),
            "defocus_max_A": round(float(mean_A.max()), 1),
            "defocus_mean_A": round(float(mean_A.mean()), 1),
            "ctf_fit_to_A_mean": round(float(columns["ctf/ctf_fit_to_A"].mean()), 2),
        }
    save_output(ctx, "micrographs", dataset, files, summary)
    ctx.log(f"fitted {len(mine)} micrographs: {summary}")


JOB = JobType(
    name="ctf_estimation",
    title="Patch CTF Estimation",
    description="Fit defocus, astigmatism and optionally phase shift to each micrograph.",
    params=Params,
    inputs=(InputSlot("micrographs", DataKind.MICROGRAPHS, "Micrographs to fit"),),
    outputs=(OutputGroup("micrographs", DataKind.MICROGRAPHS, "Micrographs with CTF parameters"),),
    uses_gpu=True,
    shardable=True,
    run=run,
)
