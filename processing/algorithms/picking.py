"""Particle picking: multi-scale Laplacian-of-Gaussian blobs and template matching.

Both pickers work on a copy of the micrograph Fourier-cropped to the low-pass resolution
(pixel ``lowpass_A / 2``), score every pixel, keep the local maxima of the score over a disc of
the minimum separation (non-maximum suppression) and return them best first. Each pick also
carries the local power of the low-passed micrograph around it, so that picks on carbon edges
or ice contamination (very high local power) can be removed later with :func:`filter_picks`
without picking again.

Conventions
-----------
* Pick positions are ``(y, x)`` in pixels of the input micrograph (row, column).
* Particles are dark in a raw micrograph (the CTF is negative at low frequency, see
  :mod:`cryokube.processing.ctf`); pass ``dark_particles=False`` for contrast-inverted images.

References
----------
Lindeberg, T. (1998) Feature detection with automatic scale selection. Int. J. Comput. Vis.
30, 79-116. doi:10.1023/A:1008045108935 (scale-normalised LoG blob detection, as RELION's
``--LoG`` picker).

Roseman, A. M. (2003) Particle finding in electron micrographs using a fast local correlation
algorithm. Ultramicroscopy 94, 225-236. doi:10.1016/S0304-3991(02)00333-9 (FindEM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.fft
from cryokube.processing.algorithms._spectra import frequency_grid_per_A, parabola_vertex
from cryokube.processing.algorithms.projection import project
from cryokube.processing.backend import (
    Array,
    array_module,
    fourier_crop,
    irfft2,
    median,
    rfft2,
    rfft2_cropped,
    rotate_image,
)
from cryokube.processing.ctf import ctf_2d

__all__ = ["Picks", "filter_picks", "pick_blobs", "pick_templates", "templates_from_volume"]


@dataclass(frozen=True)
class Picks:
    """Particle picks on one micrograph, best score first.

    Attributes
    ----------
    centres_px : ndarray of shape (n, 2)
        ``(y, x)`` in pixels of the input micrograph.
    scores : ndarray of shape (n,)
        Picker score: LoG response in robust SDs of the response map (blob picker), or
        normalised cross-correlation (template picker).
    diameters_A : ndarray of shape (n,)
        Best-matching blob diameter (A), or the template's mask diameter.
    local_power : ndarray of shape (n,)
        Variance of the low-passed micrograph in a disc of the particle diameter, divided by
        its median over the whole micrograph (dimensionless): about 1 on empty ice, several
        times more on particles, far more on carbon edges and contamination.
    template_index : ndarray of shape (n,), int
        Best template (0 for the blob picker).
    angle_deg : ndarray of shape (n,)
        Best in-plane rotation of the template (deg, 0 for the blob picker).
    """

    centres_px: Array
    scores: Array
    diameters_A: Array
    local_power: Array
    template_index: Array
    angle_deg: Array

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def filter_picks(
    picks: Picks,
    *,
    min_score: float | None = None,
    local_power_range: tuple[float, float] | None = None,
    max_picks: int | None = None,
) -> Picks:
    """Keep the picks that pass inspection thresholds (no re-picking).

    Parameters
    ----------
    picks : Picks
    min_score : float, optional
        Lowest score kept.
    local_power_range : (low, high), optional
        Kept range of ``local_power`` (relative to the micrograph's median).
    max_picks : int, optional
        Keep at most this many, best first.
    """
    xp = array_module(picks.scores)
    keep = xp.ones(picks.scores.shape, dtype=bool)
    if min_score is not None:
        keep &= picks.scores >= min_score
    if local_power_range is not None:
        low, high = local_power_range
        if not low <= high:
            raise ValueError("local_power_range must be (low, high) with low <= high")
        keep &= (picks.local_power >= low) & (picks.local_power <= high)
    index = xp.nonzero(keep)[0]
    if max_picks is not None:
        if max_picks < 0:
            raise ValueError("max_picks must be non-negative")
        index = index[:max_picks]
    return _take(picks, index)


def _take(picks: Picks, index: Array) -> Picks:
    return replace(
        picks,
        centres_px=picks.centres_px[index],
        scores=picks.scores[index],
        diameters_A=picks.diameters_A[index],
        local_power=picks.local_power[index],
        template_index=picks.template_index[index],
        angle_deg=picks.angle_deg[index],
    )


def _working_shape(ny: int, nx: int, factor: float) -> tuple[int, int]:
    """Sides of a micrograph Fourier-cropped by ``factor``: the first sides at most 10% longer
    than ``(ny, nx) / factor``, at the same scale on both axes to within a pixel, whose FFTs
    are fast (factors 2, 3 and 5 only), else those sides rounded.

    A 2048^2 micrograph cropped 5x gives 432^2 (2^4 3^3), not 410^2 (2 x 5 x 41), whose
    transforms took 1.5x as long; the picker makes about a dozen of them.
    """
    rounded = (max(8, round(ny / factor)), max(8, round(nx / factor)))
    for my in range(rounded[0], min(ny, math.floor(1.1 * rounded[0])) + 1):
        if my != scipy.fft.next_fast_len(my, real=True):
            continue
        # within one pixel of the same scale, as rounding both sides gives
        mx = scipy.fft.next_fast_len(math.floor(nx * my / ny), real=True)
        if mx <= min(nx, nx * my / ny + 1):
            return my, mx
    return rounded


def _lowpassed(micrograph: Array, pixel_size_A: float, lowpass_A: float) -> tuple[Array, float]:
    """Fourier-crop to pixel ``lowpass_A / 2`` or a little finer (or keep), normalise; returns
    image and pixel."""
    xp = array_module(micrograph)
    ny, nx = micrograph.shape
    shape = _working_shape(ny, nx, max(1.0, lowpass_A / (2.0 * pixel_size_A)))
    f = rfft2_cropped(micrograph, shape)
    f[0, 0] = 0
    small = irfft2(f, shape)
    small = small / xp.maximum(xp.std(small), 1e-12)
    return small, pixel_size_A * ny / shape[0]


def _check_common(micrograph: Array, pixel_size_A: float, lowpass_A: float) -> None:
    if getattr(micrograph, "ndim", 0) != 2:
        raise ValueError("micrograph must be a 2D array (ny, nx)")
    if pixel_size_A <= 0:
        raise ValueError("pixel_size_A must be positive")
    if lowpass_A < 2 * pixel_size_A:
        raise ValueError("lowpass_A must be at least twice pixel_size_A (Nyquist)")


def _local_maxima(
    score: Array, *, radius_px: float, border_px: int, min_score: float, max_picks: int
) -> Array:
    """Flat indices of maxima of ``score`` over a disc of ``radius_px``, best first.

    A pixel is kept when no pixel of the disc around it scores higher (outside the image counts
    as lower), as a maximum filter with that footprint would decide. Only the pixels above
    ``min_score`` that beat their four neighbours are tested against the rest of the disc, so
    the cost grows with the candidates rather than with the image times the disc.
    """
    xp = array_module(score)
    ny, nx = score.shape
    padded = xp.pad(score, 1, mode="constant", constant_values=-np.inf)
    candidate = score >= min_score
    if radius_px >= 1:
        centre = padded[1:-1, 1:-1]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            candidate &= centre >= padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]
    if border_px > 0:
        candidate[:border_px] = False
        candidate[-border_px:] = False
        candidate[:, :border_px] = False
        candidate[:, -border_px:] = False
    y, x = xp.nonzero(candidate)
    value = score[y, x]
    r = math.floor(radius_px)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > radius_px * radius_px or abs(dy) + abs(dx) <= 1:
                continue
            yy, xx = y + dy, x + dx
            inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            neighbour = score[xp.clip(yy, 0, ny - 1), xp.clip(xx, 0, nx - 1)]
            keep = ~inside | (value >= neighbour)
            y, x, value = y[keep], x[keep], value[keep]
    order = xp.argsort(-value, kind="stable")
    return (y * nx + x)[order][:max_picks]


def _local_power(image: Array, spectrum: Array, radius_px: float) -> Array:
    """Variance of ``image`` (``spectrum`` its ``rfft2``) in a disc of ``radius_px`` around every
    pixel (FFT convolution)."""
    xp = array_module(image)
    ny, nx = image.shape
    yy = xp.fft.fftfreq(ny)[:, None] * ny
    xx = xp.fft.fftfreq(nx)[None, :] * nx
    disc = (yy * yy + xx * xx <= radius_px * radius_px).astype(np.float32)
    disc_f = rfft2(disc / xp.sum(disc))
    mean = irfft2(spectrum * disc_f, (ny, nx))
    mean_sq = irfft2(rfft2(image * image) * disc_f, (ny, nx))
    return xp.maximum(mean_sq - mean * mean, 0)


def _subpixel_peaks(score: Array, index: Array) -> Array:
    """``(y, x)`` of the maxima at flat ``index``, each axis refined by
    :func:`~cryokube.processing.algorithms._spectra.parabola_vertex`.

    The picker works at ``lowpass_A / 2`` per pixel, as coarse as a fifth of a particle; without
    this a pick is off by up to half that pixel.
    """
    xp = array_module(score)
    ny, nx = score.shape
    y, x = index // nx, index % nx
    centre = score[y, x]
    dy = parabola_vertex(
        score[xp.maximum(y - 1, 0), x], centre, score[xp.minimum(y + 1, ny - 1), x]
    )
    dx = parabola_vertex(
        score[y, xp.maximum(x - 1, 0)], centre, score[y, xp.minimum(x + 1, nx - 1)]
    )
    return xp.stack([y + dy, x + dx], axis=1).astype(np.float32)


def _build_picks(
    index: Array,
    score: Array,
    power: Array,
    diameter_A: Array,
    template: Array,
    angle: Array,
    scale_px: float,
) -> Picks:
    xp = array_module(score)
    centres = _subpixel_peaks(score, index) * np.float32(scale_px)
    local = power.ravel()[index] / xp.maximum(median(power), 1e-12)
    return Picks(
        centres_px=centres,
        scores=score.ravel()[index].astype(np.float32),
        diameters_A=diameter_A.ravel()[index].astype(np.float32),
        local_power=local.astype(np.float32),
        template_index=template.ravel()[index].astype(np.int64),
        angle_deg=angle.ravel()[index].astype(np.float32),
    )


def pick_blobs(
    micrograph: Array,
    *,
    pixel_size_A: float,
    diameter_range_A: tuple[float, float],
    lowpass_A: float = 20.0,
    min_separation_A: float | None = None,
    max_picks: int = 5000,
    min_score: float = 7.0,
    n_scales: int = 5,
    dark_particles: bool = True,
) -> Picks:
    """Pick round particles with a multi-scale, scale-normalised Laplacian of Gaussian.

    For each diameter ``d`` in ``n_scales`` geometric steps over ``diameter_range_A`` the
    micrograph is filtered by ``-sigma^2 * LoG_sigma`` with ``sigma = d / (2 sqrt(2))``, whose
    response to a uniform disc of diameter ``d`` peaks at its centre. The score is the maximum
    response over scales divided by the response map's robust standard deviation (1.4826 times
    the median absolute deviation), so that ``min_score`` reads as a number of SDs.

    Parameters
    ----------
    micrograph : ndarray of shape (ny, nx)
        Summed micrograph.
    pixel_size_A : float
        Pixel size (A).
    diameter_range_A : (min, max)
        Particle diameter range (A).
    lowpass_A : float
        Low-pass resolution (A); the picker works at pixel ``lowpass_A / 2``.
    min_separation_A : float, optional
        Smallest distance between two picks (A); default the smallest diameter.
    max_picks : int
        Largest number of picks returned.
    min_score : float
        Lowest score kept (robust SDs).
    n_scales : int
        Number of diameters tried.
    dark_particles : bool
        Particles are darker than the background (raw micrographs).

    Returns
    -------
    Picks

    References
    ----------
    Lindeberg (1998), doi:10.1023/A:1008045108935.
    """
    _check_common(micrograph, pixel_size_A, lowpass_A)
    d_min, d_max = diameter_range_A
    if not 0 < d_min <= d_max:
        raise ValueError("diameter_range_A must be (min, max) with 0 < min <= max")
    if n_scales < 1:
        raise ValueError("n_scales must be at least 1")
    xp = array_module(micrograph)
    image, work_A = _lowpassed(xp.asarray(micrograph, dtype=np.float32), pixel_size_A, lowpass_A)
    if dark_particles:
        image = -image
    shape = image.shape
    k2 = (frequency_grid_per_A(shape, work_A, xp=xp) ** 2).astype(np.float32)
    spectrum = rfft2(image)
    diameters = np.geomspace(d_min, d_max, n_scales)
    best = xp.full(shape, -np.inf, dtype=np.float32)
    best_d = xp.zeros(shape, dtype=np.float32)
    for d in diameters:
        sigma = d / (2.0 * math.sqrt(2.0))
        # Fourier transform of -sigma^2 LoG: 4 pi^2 sigma^2 k^2 exp(-2 pi^2 sigma^2 k^2).
        a = np.float32(2 * math.pi**2 * sigma**2)
        response = irfft2(spectrum * ((2 * a) * k2 * xp.exp(-a * k2)), shape)
        xp.copyto(best_d, np.float32(d), where=response > best)
        xp.maximum(best, response, out=best)
    centre = median(best)
    spread = 1.4826 * median(xp.abs(best - centre))
    score = (best - centre) / xp.maximum(spread, 1e-12)
    separation = d_min if min_separation_A is None else min_separation_A
    index = _local_maxima(
        score,
        radius_px=separation / work_A,
        border_px=math.ceil(0.5 * d_min / work_A),
        min_score=min_score,
        max_picks=max_picks,
    )
    power = _local_power(image, spectrum, 0.5 * d_max / work_A)
    zeros = xp.zeros(shape, dtype=np.float32)
    return _build_picks(
        index, score, power, best_d, zeros.astype(np.int64), zeros, work_A / pixel_size_A
    )


def pick_templates(
    micrograph: Array,
    templates: Array,
    *,
    pixel_size_A: float,
    diameter_A: float,
    lowpass_A: float = 20.0,
    angle_step_deg: float = 10.0,
    ctf: dict[str, Any] | None = None,
    min_separation_A: float | None = None,
    max_picks: int = 5000,
    min_score: float = 0.2,
    dark_particles: bool = True,
) -> Picks:
    """Pick particles by FFT-based normalised cross-correlation with rotated templates.

    Each template, rotated in steps of ``angle_step_deg`` and multiplied by the micrograph's
    CTF when ``ctf`` is given, is masked by a disc of ``diameter_A`` and correlated with the
    low-passed micrograph; the local mean and variance of the micrograph under the mask come
    from two more FFT convolutions (Roseman's fast local correlation), so the score is the
    Pearson correlation under the mask, between -1 and 1.

    Parameters
    ----------
    micrograph : ndarray of shape (ny, nx)
        Summed micrograph.
    templates : ndarray of shape (n_templates, box, box)
        Templates at ``pixel_size_A``, particle white (projections or 2D class averages, not
        CTF-modulated). See :func:`templates_from_volume` for projections of a map.
    pixel_size_A : float
        Pixel size of micrograph and templates (A).
    diameter_A : float
        Mask diameter (A).
    lowpass_A : float
        Low-pass resolution (A).
    angle_step_deg : float
        In-plane rotation step (deg).
    ctf : dict, optional
        Keyword arguments of :func:`cryokube.processing.ctf.ctf_2d` except shape and pixel size
        (``defocus_u_A``, ``defocus_v_A``, ``astig_angle_deg``, ``voltage_kV``, ``cs_mm``,
        ``amp_contrast``); the templates are multiplied by this CTF.
    min_separation_A : float, optional
        Smallest distance between picks (A); default ``diameter_A``.
    max_picks : int
        Largest number of picks.
    min_score : float
        Lowest normalised cross-correlation kept.
    dark_particles : bool
        Particles are darker than the background (raw micrographs); ignored with ``ctf``,
        whose sign already makes them dark.

    Returns
    -------
    Picks

    References
    ----------
    Roseman (2003), doi:10.1016/S0304-3991(02)00333-9.
    """
    _check_common(micrograph, pixel_size_A, lowpass_A)
    if getattr(templates, "ndim", 0) != 3 or templates.shape[1] != templates.shape[2]:
        raise ValueError("templates must have shape (n_templates, box, box)")
    if diameter_A <= 0 or diameter_A > templates.shape[1] * pixel_size_A:
        raise ValueError("diameter_A must be positive and fit in the template box")
    if angle_step_deg <= 0:
        raise ValueError("angle_step_deg must be positive")
    xp = array_module(micrograph)
    box = templates.shape[1]
    templates = xp.asarray(templates, dtype=np.float32)
    if ctf is not None:
        templates = irfft2(rfft2(templates) * ctf_2d((box, box), pixel_size_A, **ctf), (box, box))
    elif dark_particles:
        templates = -templates
    image, work_A = _lowpassed(xp.asarray(micrograph, dtype=np.float32), pixel_size_A, lowpass_A)
    small_box = max(8, 2 * round(box * pixel_size_A / work_A / 2))
    small = irfft2(
        fourier_crop(rfft2(templates), (box, box), (small_box, small_box)),
        (small_box, small_box),
    )
    shape = image.shape
    radius = 0.5 * diameter_A / work_A
    yy, xx = np.mgrid[:small_box, :small_box] - small_box // 2
    mask_np = (yy * yy + xx * xx <= radius * radius).astype(np.float32)
    n_mask = float(mask_np.sum())
    mask = _embed(xp.asarray(mask_np), shape)
    image_f = rfft2(image)
    mask_f = rfft2(mask)
    local_mean = irfft2(image_f * xp.conj(mask_f), shape) / n_mask
    local_sq = irfft2(rfft2(image * image) * xp.conj(mask_f), shape) / n_mask
    local_sd = xp.sqrt(xp.maximum(local_sq - local_mean * local_mean, 1e-12))
    best = xp.full(shape, -np.inf, dtype=np.float32)
    best_t = xp.zeros(shape, dtype=np.int64)
    best_a = xp.zeros(shape, dtype=np.float32)
    inside = xp.asarray(mask_np > 0)
    for t in range(small.shape[0]):
        for angle in np.arange(0.0, 360.0, angle_step_deg):
            rotated = rotate_image(small[t], float(angle), order=1)
            values = rotated[inside]
            centred = xp.where(inside, rotated - xp.mean(values), 0)
            centred = centred / xp.maximum(xp.sqrt(xp.sum(centred * centred)), 1e-12)
            cc = irfft2(image_f * xp.conj(rfft2(_embed(centred, shape))), shape)
            ncc = cc / (local_sd * math.sqrt(n_mask))
            better = ncc > best
            best = xp.where(better, ncc, best)
            best_t = xp.where(better, t, best_t)
            best_a = xp.where(better, np.float32(angle), best_a)
    separation = diameter_A if min_separation_A is None else min_separation_A
    index = _local_maxima(
        best,
        radius_px=separation / work_A,
        border_px=math.ceil(radius),
        min_score=min_score,
        max_picks=max_picks,
    )
    diameters = xp.full(shape, np.float32(diameter_A))
    return _build_picks(index, best, local_sd**2, diameters, best_t, best_a, work_A / pixel_size_A)


def _embed(small: Array, shape: tuple[int, int]) -> Array:
    """Place a centred square box at the FFT origin of an array of ``shape`` (wrapped)."""
    xp = array_module(small)
    out = xp.zeros(shape, dtype=np.float32)
    n = small.shape[0]
    out[:n, :n] = small
    return xp.roll(out, (-(n // 2), -(n // 2)), axis=(0, 1))


def templates_from_volume(volume: Array, rotations: Array) -> Array:
    """Project a map at the given views to make picking templates.

    Parameters
    ----------
    volume : ndarray of shape (N, N, N)
        Map at the micrograph's pixel size, density white.
    rotations : ndarray of shape (B, 3, 3)
        Views (RELION convention, :mod:`cryokube.processing.geometry`); in-plane rotation is
        searched by :func:`pick_templates`, so views need only cover the directions.

    Returns
    -------
    ndarray of shape (B, N, N)
    """
    return project(volume, rotations)
