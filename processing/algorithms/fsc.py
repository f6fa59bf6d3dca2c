"""Fourier shell correlation, resolution, masks and FSC-based filters.

Shells follow :func:`cryokube.processing.backend.radial_average`: shell ``i`` holds the
Fourier components with ``round(|k| * n) == i`` where ``|k|`` is in cycles per pixel and ``n``
is the (cubic or square) box size in pixels, so shell ``i`` has the resolution
``n * pixel_size_A / i`` in Angstrom, as in RELION's ``_rlnSpectralIndex``.

References
----------
.. [1] Rosenthal, P. B. & Henderson, R. (2003). Optimal determination of particle orientation,
   absolute hand, and contrast loss in single-particle electron cryomicroscopy. J. Mol. Biol.
   333, 721-745. doi:10.1016/j.jmb.2003.07.013
.. [2] Chen, S. et al. (2013). High-resolution noise substitution to measure overfitting and
   validate resolution in 3D structure determination by single particle electron cryomicroscopy.
   Ultramicroscopy 135, 24-35. doi:10.1016/j.ultramic.2013.06.004
.. [3] Scheres, S. H. W. (2012). RELION: implementation of a Bayesian approach to cryo-EM
   structure determination. J. Struct. Biol. 180, 519-530. doi:10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from cryokube.processing.backend import (
    Array,
    array_module,
    as_float,
    irfftn,
    radial_average,
    radial_frequency,
    rfftn,
    to_host,
)

__all__ = [
    "FSC_THRESHOLD_GOLD_STANDARD",
    "MaskedFSC",
    "apply_shell_filter",
    "correct_masked_fsc",
    "fsc",
    "fsc_weight",
    "low_pass",
    "masked_fsc",
    "randomize_phases",
    "resolution_at_threshold",
    "sharpen",
    "shell_index",
    "shell_resolution_A",
    "soft_spherical_mask",
]

FSC_THRESHOLD_GOLD_STANDARD = 0.143
"""FSC threshold for two independent half maps (Rosenthal & Henderson 2003, [1]_)."""


def _check_pair(map1: Array, map2: Array, ndim: int) -> tuple[int, ...]:
    if map1.shape != map2.shape:
        raise ValueError(f"map1 and map2 must have equal shapes, got {map1.shape} and {map2.shape}")
    if ndim not in (2, 3) or map1.ndim < ndim:
        raise ValueError(f"ndim must be 2 or 3 and at most map1.ndim, got ndim={ndim}")
    shape = tuple(int(s) for s in map1.shape[-ndim:])
    if len(set(shape)) != 1:
        raise ValueError(f"map1 must be square or cubic over its last {ndim} axes, got {shape}")
    return shape


def _hermitian_weight(shape: tuple[int, ...], xp: Any) -> Array:
    """Multiplicity of each ``rfftn`` component in the full spectrum (1 or 2)."""
    n_last = shape[-1]
    weight = xp.full(n_last // 2 + 1, 2.0, dtype=np.float32)
    weight[0] = 1.0
    if n_last % 2 == 0:
        weight[-1] = 1.0
    return weight


def fsc(map1: Array, map2: Array, *, ndim: int | None = None) -> Array:
    """Fourier shell (3D) or ring (2D) correlation between two maps.

    Parameters
    ----------
    map1, map2 : array of shape (..., n, n) or (..., n, n, n)
        Real-space maps of equal shape; leading axes are a batch (for example, K class
        averages from two half sets).
    ndim : int, optional
        Number of trailing axes transformed (2 for FRC, 3 for FSC). Default: 3 for 3D input
        and 2 for 2D input; batched input must give it.

    Returns
    -------
    array of shape (..., n // 2 + 1)
        FSC per shell ``i`` (``round(|k| n) == i``), float32. Shell 0 is the mean.

    Notes
    -----
    Sums run over the full spectrum: components of the ``rfftn`` half spectrum other than the
    ``kx = 0`` and Nyquist planes count twice.
    """
    ndim = map1.ndim if ndim is None else ndim
    shape = _check_pair(map1, map2, ndim)
    xp = array_module(map1, map2)
    axes = tuple(range(-ndim, 0))
    f1 = rfftn(map1, axes=axes)
    f2 = rfftn(map2, axes=axes)
    weight = _hermitian_weight(shape, xp)
    cross = radial_average(weight * (f1 * xp.conj(f2)).real, shape)
    power1 = radial_average(weight * (f1.real**2 + f1.imag**2), shape)
    power2 = radial_average(weight * (f2.real**2 + f2.imag**2), shape)
    denominator = xp.sqrt(power1 * power2)
    tiny = np.finfo(np.float32).tiny
    return (cross / xp.maximum(denominator, tiny)).astype(np.float32)


def shell_resolution_A(n_shells: int, *, box_size_px: int, pixel_size_A: float) -> Array:
    """Resolution in Angstrom of shells ``0 .. n_shells - 1`` (``inf`` for shell 0)."""
    if box_size_px <= 0:
        raise ValueError(f"box_size_px must be positive, got {box_size_px}")
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    shells = np.arange(n_shells, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return box_size_px * pixel_size_A / shells


def resolution_at_threshold(
    fsc_curve: Array,
    *,
    box_size_px: int,
    pixel_size_A: float,
    threshold: float = FSC_THRESHOLD_GOLD_STANDARD,
    interpolate: bool = False,
) -> float:
    """Resolution (Angstrom) where an FSC curve first falls below ``threshold``.

    Parameters
    ----------
    fsc_curve : array of shape (n_shells,)
        FSC per shell as returned by :func:`fsc` (shell 0 is ignored).
    box_size_px : int
        Box size ``n`` in pixels; shell ``i`` has resolution ``n * pixel_size_A / i``.
    pixel_size_A : float
        Pixel size in Angstrom.
    threshold : float, optional
        0.143 for gold-standard half maps [1]_, 0.5 against a reference.
    interpolate : bool, optional
        False (default) applies RELION's rule: the answer is the last shell before the
        first shell whose FSC is below ``threshold``, without interpolation (RELION 3.0.8
        postprocess reports 16.36 A = shell 44 of a 96 px box at 7.5 A/px, where the FSC is
        0.160 at shell 44 and 0.136 at shell 45). True interpolates linearly in spatial
        frequency between those two shells.

    Returns
    -------
    float
        Resolution in Angstrom; the Nyquist resolution ``2 * pixel_size_A`` (or the last
        shell's) when the curve never falls below the threshold, ``inf`` when shell 1 does.
    """
    curve = np.asarray(fsc_curve, dtype=np.float64)
    if curve.ndim != 1 or curve.size < 2:
        raise ValueError(f"fsc_curve must be 1D with at least 2 shells, got shape {curve.shape}")
    resolution = shell_resolution_A(curve.size, box_size_px=box_size_px, pixel_size_A=pixel_size_A)
    below = np.flatnonzero(curve[1:] < threshold)
    if below.size == 0:
        return float(resolution[-1])
    first = int(below[0]) + 1
    if first == 1:
        return float("inf")
    if not interpolate:
        return float(resolution[first - 1])
    lo, hi = curve[first - 1], curve[first]
    t = (lo - threshold) / (lo - hi)
    shell = (first - 1) + t
    return float(box_size_px * pixel_size_A / shell)


def shell_index(shape: tuple[int, ...], *, xp: Any = np) -> Array:
    """Integer shell ``round(|k| n)`` of each component of an ``rfftn`` grid of ``shape``."""
    n = min(shape)
    return xp.rint(radial_frequency(shape, xp=xp) * n).astype(np.int64)


def apply_shell_filter(volume: Array, shell_filter: Array) -> Array:
    """Multiply the spectrum of ``volume`` by a per-shell factor.

    Parameters
    ----------
    volume : array of shape (..., n, n) or (..., n, n, n)
        Real-space image(s) or volume; the filter's shells refer to the trailing axes, whose
        number is 3 for a 3D ``volume`` and 2 otherwise.
    shell_filter : array of shape (n_shells,)
        Factor per shell; shells beyond its end are set to zero.

    Returns
    -------
    array like ``volume``
        The filtered map (float32 unless ``volume`` is float64).
    """
    xp = array_module(volume)
    ndim = 3 if volume.ndim == 3 else 2
    shape = tuple(int(s) for s in volume.shape[-ndim:])
    axes = tuple(range(-ndim, 0))
    factors = xp.asarray(shell_filter, dtype=np.float32)
    if factors.ndim != 1:
        raise ValueError(f"shell_filter must be 1D, got shape {factors.shape}")
    padded = xp.concatenate([factors, xp.zeros(1, dtype=np.float32)])
    index = xp.minimum(shell_index(shape, xp=xp), factors.size)
    spectrum = rfftn(as_float(volume), axes=axes) * padded[index]
    return irfftn(spectrum, shape, axes=axes)


def fsc_weight(fsc_curve: Array) -> Array:
    """FSC-based optimal filter ``sqrt(2 FSC / (1 + FSC))`` per shell (the ``C_ref`` of [1]_).

    Parameters
    ----------
    fsc_curve : array of shape (n_shells,)
        Half-map FSC; negative values give a weight of 0.

    Returns
    -------
    array of shape (n_shells,)
        Weights in [0, 1] that Wiener-filter the full map, whose SNR is twice a half map's.
    """
    xp = array_module(fsc_curve)
    f = xp.clip(xp.asarray(fsc_curve, dtype=np.float32), 0.0, 1.0)
    return xp.sqrt(2.0 * f / (1.0 + f))


def low_pass(
    volume: Array, *, resolution_A: float, pixel_size_A: float, edge_width_shells: float = 2.0
) -> Array:
    """Low-pass filter to ``resolution_A`` with a raised-cosine edge.

    Parameters
    ----------
    volume : array of shape (..., n, n) or (..., n, n, n)
        Real-space map(s).
    resolution_A : float
        Cut-off resolution in Angstrom; the filter is 0.5 at this frequency.
    pixel_size_A : float
        Pixel size in Angstrom.
    edge_width_shells : float, optional
        Width of the cosine edge in shells (1/(n pixel_size_A) per shell).
    """
    if resolution_A <= 0:
        raise ValueError(f"resolution_A must be positive, got {resolution_A}")
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    n = int(volume.shape[-1])
    n_shells = n // 2 + 1
    cutoff_shell = n * pixel_size_A / resolution_A
    shells = np.arange(n_shells, dtype=np.float64)
    t = np.clip((shells - cutoff_shell) / max(edge_width_shells, 1e-6) + 0.5, 0.0, 1.0)
    factors = 0.5 * (1.0 + np.cos(np.pi * t))
    xp = array_module(volume)
    return apply_shell_filter(volume, xp.asarray(factors, dtype=np.float32))


def sharpen(
    volume: Array,
    *,
    b_factor_A2: float,
    pixel_size_A: float,
    fsc_curve: Array | None = None,
) -> Array:
    """Apply a B-factor ``exp(-B s^2 / 4)`` and optionally the FSC weight of :func:`fsc_weight`.

    Parameters
    ----------
    volume : array of shape (n, n, n)
        Full map (average of the half maps).
    b_factor_A2 : float
        B-factor in square Angstrom; negative values sharpen (RELION's sign convention).
    pixel_size_A : float
        Pixel size in Angstrom.
    fsc_curve : array of shape (n // 2 + 1,), optional
        Gold-standard FSC; when given, the map is also Wiener-filtered by ``sqrt(2F/(1+F))``.

    Notes
    -----
    ``s`` is the spatial frequency in 1/Angstrom of each shell centre, so the amplitude at
    resolution ``d`` changes by ``exp(-B / (4 d^2))`` [1]_.
    """
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    n = int(volume.shape[-1])
    xp = array_module(volume)
    shells = np.arange(n // 2 + 1, dtype=np.float64)
    s_per_A = shells / (n * pixel_size_A)
    factors = xp.asarray(np.exp(-b_factor_A2 * s_per_A**2 / 4.0), dtype=np.float32)
    if fsc_curve is not None:
        weight = fsc_weight(xp.asarray(fsc_curve))
        if weight.shape != factors.shape:
            raise ValueError(f"fsc_curve must have {factors.size} shells, got {weight.shape}")
        factors = factors * weight
    return apply_shell_filter(volume, factors)


def soft_spherical_mask(
    shape: tuple[int, ...],
    *,
    radius_px: float,
    edge_width_px: float = 3.0,
    xp: Any = np,
) -> Array:
    """Spherical (3D) or circular (2D) mask with a raised-cosine edge.

    Parameters
    ----------
    shape : tuple of int
        Box shape, (n, n) or (n, n, n); the centre is pixel ``n // 2`` on each axis.
    radius_px : float
        Radius in pixels where the mask starts to fall from 1.
    edge_width_px : float, optional
        Width in pixels over which it falls to 0.
    xp : module, optional
        numpy or cupy.

    Returns
    -------
    array of ``shape``, float32 in [0, 1]
    """
    if radius_px <= 0:
        raise ValueError(f"radius_px must be positive, got {radius_px}")
    if edge_width_px < 0:
        raise ValueError(f"edge_width_px must be non-negative, got {edge_width_px}")
    grids = [
        (xp.arange(n, dtype=np.float32) - n // 2).reshape(
            [-1 if a == i else 1 for a in range(len(shape))]
        )
        for i, n in enumerate(shape)
    ]
    r = xp.sqrt(sum(g * g for g in grids))
    if edge_width_px == 0:
        return (r <= radius_px).astype(np.float32)
    t = xp.clip((r - radius_px) / edge_width_px, 0.0, 1.0)
    return (0.5 * (1.0 + xp.cos(np.pi * t))).astype(np.float32)


def randomize_phases(volume: Array, *, from_shell: int, rng: np.random.Generator) -> Array:
    """Replace the Fourier phases at shells ``>= from_shell`` by uniform random phases [2]_.

    Parameters
    ----------
    volume : array of shape (n, n, n) or (n, n)
        Real-space map.
    from_shell : int
        First randomised shell.
    rng : numpy.random.Generator
        Source of the random phases (drawn on the host, then moved to the map's device).
    """
    if from_shell < 1:
        raise ValueError(f"from_shell must be at least 1, got {from_shell}")
    xp = array_module(volume)
    shape = tuple(int(s) for s in volume.shape)
    spectrum = rfftn(volume)
    phases = xp.asarray(rng.uniform(0.0, 2.0 * np.pi, size=spectrum.shape).astype(np.float32))
    randomized = xp.abs(spectrum) * xp.exp(1j * phases)
    spectrum = xp.where(shell_index(shape, xp=xp) >= from_shell, randomized, spectrum)
    return irfftn(spectrum.astype(np.complex64), shape)


@dataclass(frozen=True)
class MaskedFSC:
    """FSC curves of a masked half-map comparison (the columns of RELION's postprocess).

    Attributes
    ----------
    unmasked, masked, phase_randomized, corrected : array of shape (n // 2 + 1,)
        FSC of the unmasked maps, the masked maps, the masked phase-randomised maps, and the
        corrected FSC of [2]_.
    randomize_from_shell : int
        First phase-randomised shell.
    """

    unmasked: Array
    masked: Array
    phase_randomized: Array
    corrected: Array
    randomize_from_shell: int


def correct_masked_fsc(
    masked: Array, phase_randomized: Array, *, randomize_from_shell: int
) -> Array:
    """Chen et al. correction ``(FSC_m - FSC_r) / (1 - FSC_r)`` beyond the randomised shell.

    Shells up to ``randomize_from_shell + 1`` keep the masked FSC, as RELION 3.0.8 does
    (its postprocess.star in the shared test data matches this to 1e-5).
    """
    xp = array_module(masked)
    masked = xp.asarray(masked, dtype=np.float64)
    rand = xp.asarray(phase_randomized, dtype=np.float64)
    shells = xp.arange(masked.size)
    corrected = (masked - rand) / xp.maximum(1.0 - rand, 1e-12)
    return xp.where(shells > randomize_from_shell + 1, corrected, masked).astype(np.float32)


def masked_fsc(
    half1: Array,
    half2: Array,
    mask: Array,
    *,
    rng: np.random.Generator,
    randomize_below_fsc: float = 0.8,
) -> MaskedFSC:
    """Masked FSC corrected for the mask by high-resolution noise substitution [2]_.

    Parameters
    ----------
    half1, half2 : array of shape (n, n, n)
        Independently refined half maps.
    mask : array of shape (n, n, n)
        Soft mask in [0, 1].
    rng : numpy.random.Generator
        Source of the random phases.
    randomize_below_fsc : float, optional
        Phases are randomised from the first shell where the unmasked FSC falls below this
        (RELION's default 0.8).

    Returns
    -------
    MaskedFSC
    """
    if mask.shape != half1.shape:
        raise ValueError(f"mask must have the half maps' shape {half1.shape}, got {mask.shape}")
    unmasked = fsc(half1, half2)
    masked = fsc(half1 * mask, half2 * mask)
    below = np.flatnonzero(to_host(unmasked)[1:] < randomize_below_fsc)
    from_shell = int(below[0]) + 1 if below.size else unmasked.size - 1
    rand1 = randomize_phases(half1, from_shell=from_shell, rng=rng)
    rand2 = randomize_phases(half2, from_shell=from_shell, rng=rng)
    randomized = fsc(rand1 * mask, rand2 * mask)
    corrected = correct_masked_fsc(masked, randomized, randomize_from_shell=from_shell)
    return MaskedFSC(unmasked, masked, randomized, corrected, from_shell)
