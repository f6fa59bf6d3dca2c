"""CTF estimation from power spectra: exhaustive search, local refinement, patch defocus plane.

The method follows CTFFIND4 (Rohou & Grigorieff 2015): an amplitude spectrum averaged over
tiles, background subtraction, an exhaustive search over defocus (and optionally phase shift)
followed by a local refinement of defocus U, V and the astigmatism angle within a resolution
band, a fit score, and the resolution up to which the fit holds.

Background and score differ from CTFFIND's box convolution and global correlation. For a trial
mean defocus ``D`` each frequency is compared within an annulus exactly one Thon-ring period
wide in ``k^2`` (the period is ``1 / (lambda D - Cs lambda^3 k^2)``): there the spectrum is
regressed on a background ``a + b k^2 + g cos 2theta + h sin 2theta`` plus the model's rings
with an amplitude that may change linearly, ``(c + e k^2) CTF^2``, and the score is the mean
signed fraction of the background residual that the rings explain. A window of one whole
period removes the background at any defocus, where a fixed box is too narrow at low defocus
and low resolution, and the free local ring amplitude removes the bias of a global correlation
where rings fade into noise (measured +3% at 0.5 um on the simulator before). This is what
keeps the fit off harmonics (several times the true defocus), the failure of the CTFFIND run
kept in ``relion30-betagal-sppractice/ctffind_job005_BAD``. The ``cos 2theta``, ``sin 2theta``
terms let the background differ between directions, as CTFFIND's 2D box-convolution
background does: a radially symmetric background turns a background that is not (1-2% on the
eBIC Krios micrograph, 30% on the simulator's test) into several hundred Å of false
astigmatism.

The CTF itself is :func:`cryokube.processing.ctf.ctf_2d`; see it for the sign and astigmatism
angle conventions (those of RELION and CTFFIND).

References
----------
Rohou, A. & Grigorieff, N. (2015) CTFFIND4: Fast and accurate defocus estimation from electron
micrographs. J. Struct. Biol. 192, 216-221. doi:10.1016/j.jsb.2015.08.008
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.optimize
from cryokube.processing.algorithms._ctf_kernels import (
    BACKGROUND_COLUMNS,
    annulus_partial_r2_cpu,
    ring_bin_sums_cpu,
)
from cryokube.processing.algorithms._spectra import centred_power_spectrum
from cryokube.processing.backend import Array, array_module, fourier_crop, radial_frequency, to_host
from cryokube.processing.ctf import ctf_2d, ctf_radial, electron_wavelength_A

_K2_BINS = 4096
"""Number of k^2 bins up to the grid's corner for the annulus statistics (about 50 per ring at
5 um, 300 kV, 5 A); only those up to the band's edge are used."""

__all__ = ["CtfFit", "PatchCtfFit", "estimate_ctf", "estimate_ctf_patches", "fit_ctf_spectrum"]


@dataclass(frozen=True)
class CtfFit:
    """Result of a CTF fit.

    Attributes
    ----------
    defocus_u_A, defocus_v_A : float
        Defocus along the major and minor axes (A, positive underfocus), ``u >= v``.
    astig_angle_deg : float
        Angle of the U axis from the x axis (deg, in [-90, 90)).
    phase_shift_deg : float
        Additional phase shift (deg), 0 unless fitted.
    score : float
        Normalised cross-correlation of data and model within the band (-1 to 1).
    fit_resolution_A : float
        Highest resolution (A) to which the per-shell correlation of data and model stays
        above three noise standard deviations.
    """

    defocus_u_A: float
    defocus_v_A: float
    astig_angle_deg: float
    phase_shift_deg: float
    score: float
    fit_resolution_A: float

    @property
    def defocus_mean_A(self) -> float:
        """Mean of U and V (A)."""
        return 0.5 * (self.defocus_u_A + self.defocus_v_A)

    @property
    def astigmatism_A(self) -> float:
        """U minus V (A)."""
        return self.defocus_u_A - self.defocus_v_A


@dataclass(frozen=True)
class PatchCtfFit:
    """Result of :func:`estimate_ctf_patches`.

    Attributes
    ----------
    overall : CtfFit
        Fit of the whole micrograph.
    centres_px : ndarray of shape (n_patches, 2)
        Patch centres ``(y, x)`` (px).
    patches : list of CtfFit
        Fit of each patch.
    plane_A : ndarray of shape (3,)
        Mean defocus plane ``D(y, x) = c0 + c1 y + c2 x``: c0 in A at the micrograph centre,
        c1 and c2 in A per px.
    tilt_deg : float
        Sample tilt implied by the plane (deg).
    """

    overall: CtfFit
    centres_px: Array
    patches: list[CtfFit]
    plane_A: Array
    tilt_deg: float

    def defocus_at(self, y_px: Array, x_px: Array, image_shape: tuple[int, int]) -> Array:
        """Mean defocus (A) of the plane at pixel positions of a micrograph of ``image_shape``."""
        c = self.plane_A
        return c[0] + c[1] * (y_px - image_shape[0] / 2.0) + c[2] * (x_px - image_shape[1] / 2.0)


@dataclass(frozen=True)
class _Problem:
    """A spectrum prepared for fitting: normalised amplitudes on a cropped rfft grid."""

    amplitude: Array  # (m, m//2+1) amplitude spectrum, rfft layout
    shape: tuple[int, int]  # real-space shape (m, m) of the cropped grid
    grid_pixel_A: float  # pixel size that gives the cropped grid the spectrum's sampling
    k2: Array  # |k|^2 (1/A^2) of every grid point
    cos2: Array  # cos 2theta of every grid point, theta = atan2(ky, kx)
    sin2: Array  # sin 2theta of every grid point
    bins: Array  # flat index of each grid point's k^2 bin
    bin_k2: Array  # k^2 at the centre of each bin up to the band's edge (1/A^2)
    bin_width: float  # width of the k^2 bins (1/A^2)
    k2_centre: float  # middle of the band in k^2, subtracted for conditioning (1/A^2)
    band: Array  # bool, inside the resolution band
    wavelength_A: float
    cs_A: float
    voltage_kV: float
    cs_mm: float
    amp_contrast: float

    @functools.cached_property
    def band_bins(self) -> Array:
        """``bins``, with the points outside the band in a last bin that no annulus reaches."""
        xp = array_module(self.k2)
        return xp.where(self.band.ravel(), self.bins, self.bin_k2.shape[0])

    @functools.cached_property
    def background_columns(self) -> list[Array]:
        """The local background's regressors ``1, k^2 - k2_centre, cos 2theta, sin 2theta``."""
        xp = array_module(self.k2)
        x = self.k2.ravel().astype(np.float64) - self.k2_centre
        return [xp.ones_like(x), x, self.cos2, self.sin2]

    @functools.cached_property
    def fixed_bins(self) -> dict[tuple[Any, Any], Array]:
        """Sums per k^2 bin of the products that do not depend on the CTF model: background by
        background ``(i, j)``, background by data ``(i, "d")`` and ``("d", "d")``."""
        columns = self.background_columns
        d = self.amplitude.ravel().astype(np.float64)
        fixed: dict[tuple[Any, Any], Array] = {("d", "d"): _bin_sums(self, d * d)}
        for i, column in enumerate(columns):
            fixed[i, "d"] = _bin_sums(self, column * d)
            for j in range(i, len(columns)):
                fixed[i, j] = _bin_sums(self, column * columns[j])
        return fixed

    @functools.cached_property
    def fixed_prefix(self) -> dict[tuple[Any, Any], Array]:
        """Prefix sums of :attr:`fixed_bins`. Computed once, they spare each score evaluation
        15 of its 28 passes over the grid."""
        return {key: _cumulative(sums) for key, sums in self.fixed_bins.items()}


@dataclass(frozen=True)
class _Annuli:
    """The one-ring-period annulus around every k^2 bin, for a trial defocus.

    The annulus spans half a Thon-ring period on either side in k^2 (the period is
    ``1 / (lambda D - Cs lambda^3 k^2)``). Grid points are binned finely in k^2 (``_K2_BINS``
    bins); a sum over every annulus is a difference of the prefix sums over bins
    (:func:`_prefix_sums`), so it costs a pass over the grid, or none for sums that do not
    depend on the model (:attr:`_Problem.fixed_prefix`).
    """

    lo: Array
    hi: Array

    def sums(self, prefix: Array) -> Array:
        return prefix[self.hi] - prefix[self.lo]


def _annuli(p: _Problem, defocus_A: float) -> _Annuli:
    xp = array_module(p.k2)
    slope = p.wavelength_A * defocus_A - p.cs_A * p.wavelength_A**3 * p.bin_k2
    half_period = 0.5 / xp.maximum(slope, 0.05 * p.wavelength_A * defocus_A)
    n_bins = p.bin_k2.shape[0]
    lo = xp.clip(xp.rint((p.bin_k2 - half_period) / p.bin_width), 0, n_bins).astype(np.int64)
    hi = xp.clip(xp.rint((p.bin_k2 + half_period) / p.bin_width) + 1, 0, n_bins)
    return _Annuli(lo, hi.astype(np.int64))


def _bin_sums(p: _Problem, weights: Array | None) -> Array:
    """Sums over the k^2 bins of ``weights`` (one per grid point; None counts points), inside
    the band."""
    xp = array_module(p.k2)
    n_bins = p.bin_k2.shape[0]
    return xp.bincount(p.band_bins, weights=weights, minlength=n_bins + 1)[:n_bins]


def _cumulative(bin_sums: Array) -> Array:
    """Prefix sums (one more than bins, starting at 0) of per-bin sums."""
    xp = array_module(bin_sums)
    return xp.concatenate([xp.zeros(1), xp.cumsum(bin_sums)])


def _prefix_sums(p: _Problem, weights: Array | None) -> Array:
    """Prefix sums over the k^2 bins of ``weights`` (see :func:`_bin_sums`)."""
    return _cumulative(_bin_sums(p, weights))


def _model(p: _Problem, params: tuple[float, float, float, float]) -> Array:
    du, dv, angle, phase = params
    xp = array_module(p.amplitude)
    ctf = ctf_2d(
        p.shape,
        p.grid_pixel_A,
        # A device scalar makes the model follow the data's array module.
        defocus_u_A=xp.asarray(du),
        defocus_v_A=dv,
        astig_angle_deg=angle,
        voltage_kV=p.voltage_kV,
        cs_mm=p.cs_mm,
        amp_contrast=p.amp_contrast,
        phase_shift_deg=phase,
    )
    return ctf * ctf


def _annulus_partial_r2(
    p: _Problem, params: tuple[float, float, float, float], *, radial: bool = False
) -> Array:
    """Signed partial R^2 of the CTF rings in the annulus of every k^2 bin.

    In the annulus around each k^2 bin (see :class:`_Annuli`) the data are regressed on a
    local background ``a + b k^2 + g cos 2theta + h sin 2theta`` and on the model with a local
    ring amplitude that changes linearly with frequency, ``(c + e k^2) CTF^2``. The score of
    the annulus is the fraction of the background-only residual that the ring terms explain,
    signed by the ring amplitude at the bin (rings in anti-phase count against). A plain
    correlation is biased where the rings fade with frequency into the noise (it weights each
    ring's inner flank more than its outer one and pulls the defocus up); a local amplitude
    that may vary is not. The angular background terms keep a background that differs between
    directions out of the astigmatism.
    """
    annuli = _annuli(p, 0.5 * (params[0] + params[1]))
    nb = len(p.background_columns)
    ring_prefix = _radial_ring_prefix if radial else _ring_prefix
    prefix = {**p.fixed_prefix, **ring_prefix(p, params)}
    centred_k2 = p.bin_k2 - p.k2_centre
    if isinstance(p.amplitude, np.ndarray) and nb == BACKGROUND_COLUMNS:
        return annulus_partial_r2_cpu(prefix, annuli.lo, annuli.hi, centred_k2)
    return _partial_r2_arrays(prefix, annuli, centred_k2, nb)


def _partial_r2_arrays(
    prefix: dict[tuple[Any, Any], Array], annuli: _Annuli, centred_k2: Array, nb: int
) -> Array:
    """The regression of :func:`_annulus_partial_r2` as array code (CuPy's path; the CPU's is
    :func:`~cryokube.processing.algorithms._ctf_kernels.annulus_partial_r2_cpu`)."""
    xp = array_module(centred_k2)
    n = nb + 2
    sums = {(i, j): annuli.sums(prefix[i, j]) for i in range(n) for j in range(i, n)}
    gram = xp.stack(
        [xp.stack([sums[min(i, j), max(i, j)] for j in range(n)], axis=-1) for i in range(n)],
        axis=-2,
    )
    rhs = xp.stack([annuli.sums(prefix[i, "d"]) for i in range(n)], axis=-1)
    # Partial regression through the Schur complement of the background block: the rings'
    # residual sum of squares after the background is projected out.
    g_bb, g_br, g_rr = gram[:, :nb, :nb], gram[:, :nb, nb:], gram[:, nb:, nb:]
    ridge = 1e-9 * xp.trace(g_bb, axis1=-2, axis2=-1)[:, None, None] + 1e-12
    solved = xp.linalg.solve(
        g_bb + ridge * xp.eye(nb), xp.concatenate([rhs[:, :nb, None], g_br], -1)
    )
    rss0 = annuli.sums(prefix["d", "d"]) - xp.sum(rhs[:, :nb] * solved[..., 0], axis=-1)
    schur = g_rr - xp.swapaxes(g_br, -1, -2) @ solved[..., 1:]
    ring_rhs = rhs[:, nb:] - xp.sum(g_br * solved[..., :1], axis=-2)
    ridge = 1e-9 * xp.trace(schur, axis1=-2, axis2=-1)[:, None, None] + 1e-30
    beta = _solve_2x2(schur + ridge * xp.eye(n - nb), ring_rhs)
    explained = xp.sum(beta * ring_rhs, axis=-1)
    amplitude = beta[:, 0] + beta[:, 1] * centred_k2
    return xp.sign(amplitude) * xp.clip(explained / xp.maximum(rss0, 1e-30), 0, 1)


def _solve_2x2(a: Array, b: Array) -> Array:
    """``linalg.solve(a, b)`` for a batch of 2 x 2 systems ``a`` (..., 2, 2), ``b`` (..., 2) by
    Cramer's rule; the batched LAPACK solve took 0.7 ms per score evaluation (~1,900 bins)."""
    xp = array_module(a)
    det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    x0 = a[..., 1, 1] * b[..., 0] - a[..., 0, 1] * b[..., 1]
    x1 = a[..., 0, 0] * b[..., 1] - a[..., 1, 0] * b[..., 0]
    return xp.stack([x0, x1], axis=-1) / det[..., None]


def _ring_prefix(
    p: _Problem, params: tuple[float, float, float, float]
) -> dict[tuple[Any, Any], Array]:
    """Prefix sums of the products with the ring regressors ``CTF^2`` (column ``nb``) and
    ``(k^2 - k2_centre) CTF^2`` (``nb + 1``), ``nb`` being the background's 4 columns: with
    every column ``(i, nb + a)``, with each other, and with the data ``(nb + a, "d")``."""
    background = p.background_columns
    nb = len(background)
    m = _model(p, params).ravel().astype(np.float64)
    d = p.amplitude.ravel().astype(np.float64)
    if isinstance(m, np.ndarray) and nb == BACKGROUND_COLUMNS:
        rows = ring_bin_sums_cpu(p.band_bins, background, m, d, p.bin_k2.shape[0])
        keys = [(i, j) for j in (nb, nb + 1) for i in range(j + 1)] + [(nb, "d"), (nb + 1, "d")]
        return {key: _cumulative(row) for key, row in zip(keys, rows, strict=True)}
    columns = [*background, m, background[1] * m]
    prefix: dict[tuple[Any, Any], Array] = {
        (i, j): _prefix_sums(p, columns[i] * columns[j]) for j in (nb, nb + 1) for i in range(j + 1)
    }
    for j in (nb, nb + 1):
        prefix[j, "d"] = _prefix_sums(p, columns[j] * d)
    return prefix


def _radial_ring_prefix(
    p: _Problem, params: tuple[float, float, float, float]
) -> dict[tuple[Any, Any], Array]:
    """:func:`_ring_prefix` of a model without astigmatism, whose CTF^2 depends on k^2 alone:
    taken at each k^2 bin's centre, it multiplies the per-bin sums of the fixed products
    (:attr:`_Problem.fixed_bins`), so it costs a pass over the bins, not the grid. The grid
    points of a bin lie within half a bin (1/4096 of the grid's k^2 range) of its centre."""
    xp = array_module(p.amplitude)
    nb = len(p.background_columns)
    bins = p.fixed_bins
    ctf = ctf_radial(
        xp.sqrt(p.bin_k2),
        defocus_A=params[0],
        voltage_kV=p.voltage_kV,
        cs_mm=p.cs_mm,
        amp_contrast=p.amp_contrast,
        phase_shift_deg=params[3],
        dtype=np.float64,
    )
    m = ctf * ctf

    def times_x(i: int) -> tuple[int, int]:
        """The fixed product equal to background column ``i`` times column 1 (``k^2 - c``)."""
        return (min(i, 1), max(i, 1))

    prefix: dict[tuple[Any, Any], Array] = {}
    for i in range(nb):
        prefix[i, nb] = _cumulative(m * bins[0, i])
        prefix[i, nb + 1] = _cumulative(m * bins[times_x(i)])
    prefix[nb, nb] = _cumulative(m * m * bins[0, 0])
    prefix[nb, nb + 1] = _cumulative(m * m * bins[0, 1])
    prefix[nb + 1, nb + 1] = _cumulative(m * m * bins[1, 1])
    prefix[nb, "d"] = _cumulative(m * bins[0, "d"])
    prefix[nb + 1, "d"] = _cumulative(m * bins[1, "d"])
    return prefix


def _score(
    p: _Problem, params: tuple[float, float, float, float], *, radial: bool = False
) -> float:
    """Mean over the band of :func:`_annulus_partial_r2`; ``radial`` for a model without
    astigmatism (``params[0] == params[1]``) evaluated per k^2 bin (:func:`_radial_ring_prefix`)."""
    xp = array_module(p.amplitude)
    partial = _annulus_partial_r2(p, params, radial=radial)
    return float(xp.mean(partial[p.bins[p.band.ravel()]]))


def _prepare(
    spectrum: Array,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float,
    resolution_band_A: tuple[float, float],
    spectrum_kind: str,
    crop: bool,
) -> _Problem:
    xp = array_module(spectrum)
    n = spectrum.shape[0]
    low_A, high_A = resolution_band_A
    values = xp.asarray(spectrum, dtype=np.float32)
    amplitude = xp.sqrt(xp.maximum(values, 0)) if spectrum_kind == "power" else values
    half = xp.fft.ifftshift(amplitude)[:, : n // 2 + 1]
    m = min(n, 2 * math.ceil(n * pixel_size_A / high_A) + 8) if crop else n
    if m != n:
        half = fourier_crop(half.astype(np.complex64), (n, n), (m, m)).real
    grid_pixel_A = n * pixel_size_A / m
    k2 = (radial_frequency((m, m), xp=xp) / np.float32(grid_pixel_A)) ** 2
    bin_width = float(k2.max()) / (_K2_BINS - 1)
    bins = xp.rint(k2.ravel() / bin_width).astype(np.int64)
    band = (k2 >= 1.0 / low_A**2) & (k2 <= 1.0 / high_A**2)
    # The rows and columns through the origin carry the tiles' edge discontinuities (a bright
    # cross in every spectrum of untapered tiles); they would bias the astigmatism.
    iy = xp.abs(xp.fft.fftfreq(m) * m)[:, None]
    ix = xp.arange(m // 2 + 1)[None, :]
    band &= (iy > 2) & (ix > 2)
    if not bool(xp.any(band)):
        raise ValueError(
            f"resolution_band_A {resolution_band_A} holds no frequency of the spectrum"
        )
    theta = xp.arctan2(xp.fft.fftfreq(m)[:, None], xp.fft.rfftfreq(m)[None, :])
    return _Problem(
        amplitude=half.astype(np.float32),
        shape=(m, m),
        grid_pixel_A=grid_pixel_A,
        k2=k2,
        cos2=xp.cos(2 * theta).ravel(),
        sin2=xp.sin(2 * theta).ravel(),
        bins=bins,
        bin_k2=xp.arange(int(xp.max(bins[band.ravel()])) + 1) * bin_width,
        bin_width=bin_width,
        k2_centre=0.5 * (1.0 / low_A**2 + 1.0 / high_A**2),
        band=band,
        wavelength_A=float(electron_wavelength_A(voltage_kV)),
        cs_A=cs_mm * 1e7,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amp_contrast=amp_contrast,
    )


def _fit_resolution(p: _Problem, params: tuple[float, float, float, float], low_A: float) -> float:
    """Highest resolution (A) at which the fit still holds.

    ``p`` covers frequencies up to Nyquist. From the first annulus beyond ``low_A`` where it
    holds, the fit holds while the rings explain a significant part of each annulus: a signed
    partial R^2 above five times its mean for pure noise (two extra regressors over ``n``
    points: ``2 / n``).
    """
    partial = to_host(_annulus_partial_r2(p, params))
    counts = to_host(_annuli(p, 0.5 * (params[0] + params[1])).sums(_prefix_sums(p, None)))
    k2 = to_host(p.bin_k2)
    holds = (counts >= 8) & (partial >= 10.0 / np.maximum(counts, 1))
    first = int(np.searchsorted(k2, 1.0 / low_A**2))
    start = next((i for i in range(first, k2.shape[0]) if holds[i]), k2.shape[0])
    stop = next((i for i in range(start, k2.shape[0]) if not holds[i]), k2.shape[0])
    return 1.0 / math.sqrt(float(k2[max(stop - 1, first)]))


def fit_ctf_spectrum(
    spectrum: Array,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float = 0.1,
    resolution_band_A: tuple[float, float] = (30.0, 5.0),
    defocus_range_A: tuple[float, float] = (5000.0, 50000.0),
    fit_phase_shift: bool = False,
    spectrum_kind: Literal["power", "amplitude"] = "power",
) -> CtfFit:
    """Fit defocus U, V, astigmatism angle (and phase shift) to a centred 2D spectrum.

    Parameters
    ----------
    spectrum : ndarray of shape (n, n)
        Centred power or amplitude spectrum (zero frequency at ``(n // 2, n // 2)``), as
        written by RELION's motion correction or returned by :func:`estimate_ctf`'s tiling.
    pixel_size_A : float
        Pixel size of the spectrum's real-space box (A): frequency index ``i`` is
        ``i / (n * pixel_size_A)`` 1/A.
    voltage_kV, cs_mm, amp_contrast : float
        Acceleration voltage (kV), spherical aberration (mm), amplitude contrast (fraction).
    resolution_band_A : (low, high)
        Resolution band used for fitting (A), for example (30, 5).
    defocus_range_A : (min, max)
        Mean-defocus search range (A).
    fit_phase_shift : bool
        Also search the phase shift (0 to 180 deg), for phase-plate data.
    spectrum_kind : {"power", "amplitude"}
        Whether ``spectrum`` holds power or amplitude.

    Returns
    -------
    CtfFit

    References
    ----------
    Rohou & Grigorieff (2015), doi:10.1016/j.jsb.2015.08.008.
    """
    if getattr(spectrum, "ndim", 0) != 2 or spectrum.shape[0] != spectrum.shape[1]:
        raise ValueError("spectrum must be a square 2D array (n, n)")
    if spectrum_kind not in ("power", "amplitude"):
        raise ValueError("spectrum_kind must be 'power' or 'amplitude'")
    low_A, high_A = resolution_band_A
    if not low_A > high_A >= 2 * pixel_size_A:
        raise ValueError(
            "resolution_band_A must be (low, high) with low > high >= 2 * pixel_size_A (Nyquist)"
        )
    d_min, d_max = defocus_range_A
    if not 0 < d_min < d_max:
        raise ValueError("defocus_range_A must be (min, max) with 0 < min < max")
    if not 0 <= amp_contrast < 1:
        raise ValueError("amp_contrast must be in [0, 1)")
    problem = _prepare(
        spectrum,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amp_contrast=amp_contrast,
        resolution_band_A=resolution_band_A,
        spectrum_kind=spectrum_kind,
        crop=True,
    )
    # 1. Exhaustive search of the mean defocus (2% steps) and phase shift, no astigmatism: the
    # model per k^2 bin, a pass over the bins instead of the grid.
    phases = np.arange(0.0, 180.0, 15.0) if fit_phase_shift else np.zeros(1)
    defoci = np.geomspace(d_min, d_max, int(np.ceil(np.log(d_max / d_min) / np.log(1.02))) + 1)
    best = max(
        ((float(d), float(d), 0.0, float(ph)) for d in defoci for ph in phases),
        key=lambda params: _score(problem, params, radial=True),
    )
    # 2. Astigmatism grid around it.
    mean, phase = best[0], best[3]
    candidates = [best]
    for astig in (0.02 * mean, 0.05 * mean, 0.1 * mean):
        candidates += [
            (mean + astig / 2, mean - astig / 2, float(angle), phase)
            for angle in range(-90, 90, 15)
        ]
    start = max(candidates, key=lambda params: _score(problem, params))

    # 3. Local refinement (Nelder-Mead on mean, half-astigmatism components, phase).
    def unpack(v: np.ndarray) -> tuple[float, float, float, float]:
        mean_d, a_cos, a_sin = float(v[0]), float(v[1]), float(v[2])
        half_astig = math.hypot(a_cos, a_sin)
        angle = 0.5 * math.degrees(math.atan2(a_sin, a_cos))
        ph = float(v[3]) if fit_phase_shift else 0.0
        return (mean_d + half_astig, mean_d - half_astig, angle, ph)

    half0 = 0.5 * (start[0] - start[1])
    theta0 = math.radians(2 * start[2])
    x0 = np.array(
        [0.5 * (start[0] + start[1]), half0 * math.cos(theta0), half0 * math.sin(theta0), start[3]]
    )
    step = np.array([0.01 * x0[0], 0.01 * x0[0], 0.01 * x0[0], 10.0])
    simplex = np.vstack([x0, x0 + np.diag(step)])
    options = {"xatol": 2.0, "fatol": 1e-4, "maxiter": 200}
    result = scipy.optimize.minimize(
        lambda v: -_score(problem, unpack(v)),
        x0,
        method="Nelder-Mead",
        options={"initial_simplex": simplex, **options},
    )
    du, dv, angle, ph = unpack(result.x)
    angle = (angle + 90.0) % 180.0 - 90.0
    params = (du, dv, angle, ph % 180.0 if fit_phase_shift else 0.0)
    full = _prepare(
        spectrum,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amp_contrast=amp_contrast,
        resolution_band_A=(low_A, 2.0 * pixel_size_A),
        spectrum_kind=spectrum_kind,
        crop=False,
    )
    return CtfFit(
        defocus_u_A=du,
        defocus_v_A=dv,
        astig_angle_deg=angle,
        phase_shift_deg=params[3],
        score=_score(problem, params),
        fit_resolution_A=_fit_resolution(full, params, low_A),
    )


def estimate_ctf(
    micrograph: Array,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float = 0.1,
    box_px: int = 512,
    resolution_band_A: tuple[float, float] = (30.0, 5.0),
    defocus_range_A: tuple[float, float] = (5000.0, 50000.0),
    fit_phase_shift: bool = False,
) -> CtfFit:
    """Estimate the CTF of a micrograph from the power spectrum averaged over ``box_px`` tiles.

    Parameters
    ----------
    micrograph : ndarray of shape (ny, nx)
        Summed (preferably not dose-weighted) micrograph.
    pixel_size_A : float
        Pixel size (A).
    box_px : int
        Tile size of the averaged spectrum (px); tiles overlap by half.

    Other parameters are those of :func:`fit_ctf_spectrum`.

    References
    ----------
    Rohou & Grigorieff (2015), doi:10.1016/j.jsb.2015.08.008.
    """
    if getattr(micrograph, "ndim", 0) != 2:
        raise ValueError("micrograph must be a 2D array (ny, nx)")
    spectrum = centred_power_spectrum(micrograph, box_px=box_px)
    return fit_ctf_spectrum(
        spectrum,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amp_contrast=amp_contrast,
        resolution_band_A=resolution_band_A,
        defocus_range_A=defocus_range_A,
        fit_phase_shift=fit_phase_shift,
    )


def estimate_ctf_patches(
    micrograph: Array,
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float = 0.1,
    grid: tuple[int, int] = (3, 3),
    box_px: int = 256,
    resolution_band_A: tuple[float, float] = (30.0, 5.0),
    defocus_range_A: tuple[float, float] = (5000.0, 50000.0),
    search_fraction: float = 0.25,
) -> PatchCtfFit:
    """Fit the CTF of each patch of a grid and a mean-defocus plane (sample tilt) through them.

    Each patch is fitted within ``search_fraction`` of the whole micrograph's mean defocus; the
    plane is the least-squares fit of the patch mean defoci over the patch centres.

    Parameters
    ----------
    micrograph : ndarray of shape (ny, nx)
        Summed micrograph.
    grid : (n_y, n_x)
        Patch grid; each patch must hold at least one ``box_px`` tile.
    box_px : int
        Tile size of each patch's averaged spectrum (px).
    search_fraction : float
        Relative half-width of each patch's defocus search around the overall fit.

    Other parameters are those of :func:`fit_ctf_spectrum`.

    References
    ----------
    Rohou & Grigorieff (2015), doi:10.1016/j.jsb.2015.08.008.
    """
    ny, nx = micrograph.shape
    gy, gx = grid
    if min(grid) < 1 or ny // gy < box_px or nx // gx < box_px:
        raise ValueError(f"grid {grid} leaves patches smaller than box_px={box_px}")
    fit = functools.partial(
        estimate_ctf,
        pixel_size_A=pixel_size_A,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amp_contrast=amp_contrast,
        resolution_band_A=resolution_band_A,
        box_px=box_px,
    )
    overall = fit(micrograph, defocus_range_A=defocus_range_A)
    near = (
        overall.defocus_mean_A * (1 - search_fraction),
        overall.defocus_mean_A * (1 + search_fraction),
    )
    patches = []
    centres = []
    for iy in range(gy):
        for ix in range(gx):
            y0, y1 = iy * ny // gy, (iy + 1) * ny // gy
            x0, x1 = ix * nx // gx, (ix + 1) * nx // gx
            patches.append(fit(micrograph[y0:y1, x0:x1], defocus_range_A=near))
            centres.append(((y0 + y1) / 2.0, (x0 + x1) / 2.0))
    centres_np = np.asarray(centres)
    design = np.column_stack(
        [np.ones(len(centres)), centres_np[:, 0] - ny / 2.0, centres_np[:, 1] - nx / 2.0]
    )
    means = np.array([fit.defocus_mean_A for fit in patches])
    plane, *_ = np.linalg.lstsq(design, means, rcond=None)
    tilt = math.degrees(math.atan(math.hypot(plane[1], plane[2]) / pixel_size_A))
    return PatchCtfFit(
        overall=overall, centres_px=centres_np, patches=patches, plane_A=plane, tilt_deg=tilt
    )
