"""Particle extraction: boxes around picks, phase flip, Fourier crop, inversion, normalisation.

The order of operations and the normalisation follow RELION's ``relion_preprocess``
(Scheres 2012): each box is cut at the rounded pick position, optionally phase-flipped with
its CTF, Fourier-cropped to the output box, contrast-inverted (particles white), and normalised
so that the background outside a circle of ``background_radius_px`` has zero mean and unit
variance. Boxes that do not fit entirely inside the micrograph are dropped and counted.

Conventions
-----------
* Pick centres are ``(y, x)`` in micrograph pixels; the particle centre is at pixel
  ``box // 2`` of each box (the FFT origin after ``fftshift``, as RELION and cryoSPARC).
* The CTF is :func:`cryokube.processing.ctf.ctf_2d`; phase flipping multiplies each box's
  Fourier transform by the sign of its CTF.

References
----------
Scheres, S. H. W. (2012) RELION: implementation of a Bayesian approach to cryo-EM structure
determination. J. Struct. Biol. 180, 519-530. doi:10.1016/j.jsb.2012.09.006
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryokube.processing.backend import (
    Array,
    array_module,
    fourier_crop,
    irfft2,
    rfft2,
    to_host,
)
from cryokube.processing.ctf import ctf_2d

__all__ = ["Extraction", "background_mask", "extract_particles", "normalise_background"]

_CTF_KEYS = ("defocus_u_A", "defocus_v_A", "astig_angle_deg", "voltage_kV", "cs_mm", "amp_contrast")


@dataclass(frozen=True)
class Extraction:
    """Extracted particles of one micrograph.

    Attributes
    ----------
    particles : ndarray of shape (n_kept, out_box, out_box)
        Particle images, float32 or float16.
    kept_index : ndarray of shape (n_kept,), int
        Index of each kept particle in the input ``centres_px``.
    n_dropped_edge : int
        Picks whose box crossed the micrograph edge (not extracted).
    pixel_size_A : float
        Pixel size of the particle images (A).
    rows : dict of str to ndarray
        Dataset columns for the kept particles (``location/...``, ``blob/...`` and, with a CTF,
        ``ctf/...``), named as :class:`cryokube.processing.datasets.dataset.Dataset` expects;
        ``blob/path`` is left to the job that writes the stack.
    """

    particles: Array
    kept_index: Array
    n_dropped_edge: int
    pixel_size_A: float
    rows: dict[str, np.ndarray]


def background_mask(box_px: int, radius_px: float, *, xp: Any = np) -> Array:
    """True outside the circle of ``radius_px`` around pixel ``(box // 2, box // 2)``."""
    yy = xp.arange(box_px) - box_px // 2
    return (yy[:, None] ** 2 + yy[None, :] ** 2) > radius_px**2


def normalise_background(images: Array, radius_px: float) -> Array:
    """Scale images (n, box, box) to zero mean, unit variance outside ``radius_px``.

    Raises
    ------
    ValueError
        If the background is empty or has zero variance in an image.
    """
    xp = array_module(images)
    box = images.shape[-1]
    mask = background_mask(box, radius_px, xp=xp)
    if not bool(mask.any()):
        raise ValueError(f"background_radius_px={radius_px} leaves no background in a {box} box")
    values = images[..., mask]
    mean = xp.mean(values, axis=-1)
    sd = xp.std(values, axis=-1)
    if bool(xp.any(sd == 0)):
        raise ValueError("a particle box has a constant background; cannot normalise")
    return (images - mean[..., None, None]) / sd[..., None, None]


def extract_particles(
    micrograph: Array,
    centres_px: Array,
    *,
    pixel_size_A: float,
    box_px: int,
    output_box_px: int | None = None,
    invert_contrast: bool = True,
    normalise: bool = True,
    background_radius_px: float | None = None,
    ctf: dict[str, Any] | None = None,
    phase_flip: bool = False,
    output_float16: bool = False,
    micrograph_path: str | None = None,
) -> Extraction:
    """Extract, crop and normalise particle boxes around picks.

    Parameters
    ----------
    micrograph : ndarray of shape (ny, nx)
        Summed (usually dose-weighted) micrograph.
    centres_px : ndarray of shape (n, 2)
        Pick centres ``(y, x)`` in micrograph pixels.
    pixel_size_A : float
        Pixel size of the micrograph (A).
    box_px : int
        Extraction box (px, even).
    output_box_px : int, optional
        Output box after Fourier cropping (px, even, at most ``box_px``); default ``box_px``.
    invert_contrast : bool
        Multiply by -1 so that particles are white (RELION's ``--invert_contrast``).
    normalise : bool
        Zero mean and unit variance outside ``background_radius_px``.
    background_radius_px : float, optional
        Radius in output pixels; default 75% of half the output box (RELION's default).
    ctf : dict, optional
        The micrograph's CTF as keyword arguments of :func:`cryokube.processing.ctf.ctf_2d`
        (``defocus_u_A``, ``defocus_v_A``, ``astig_angle_deg``, ``voltage_kV``, ``cs_mm``,
        ``amp_contrast``, optionally ``phase_shift_deg``); defocus values may be arrays of
        shape (n,) for per-particle defocus (patch CTF). Written to the rows.
    phase_flip : bool
        Multiply each box's transform by the sign of its CTF (needs ``ctf``).
    output_float16 : bool
        Return float16 particles.
    micrograph_path : str, optional
        Recorded in the rows as ``location/micrograph_path``.

    Returns
    -------
    Extraction

    References
    ----------
    Scheres (2012), doi:10.1016/j.jsb.2012.09.006.
    """
    xp = array_module(micrograph)
    if getattr(micrograph, "ndim", 0) != 2:
        raise ValueError("micrograph must be a 2D array (ny, nx)")
    if np.ndim(centres_px) != 2 or np.shape(centres_px)[-1] != 2:
        raise ValueError("centres_px must have shape (n, 2) as (y, x)")
    centres = xp.asarray(centres_px, dtype=np.float64)
    if pixel_size_A <= 0:
        raise ValueError("pixel_size_A must be positive")
    if box_px < 4 or box_px % 2:
        raise ValueError("box_px must be an even number of at least 4")
    out_box = box_px if output_box_px is None else output_box_px
    if out_box < 4 or out_box % 2 or out_box > box_px:
        raise ValueError("output_box_px must be even, at least 4 and at most box_px")
    if phase_flip and ctf is None:
        raise ValueError("phase_flip needs ctf")
    if ctf is not None and (missing := [k for k in _CTF_KEYS if k not in ctf]):
        raise ValueError(f"ctf is missing {', '.join(missing)}")
    radius = 0.75 * out_box / 2 if background_radius_px is None else background_radius_px
    if normalise and not 0 < radius < out_box * math.sqrt(2) / 2:
        raise ValueError("background_radius_px must be positive and leave background in the box")

    ny, nx = micrograph.shape
    n_picks = centres.shape[0]
    top = xp.rint(centres[:, 0]).astype(np.int64) - box_px // 2
    left = xp.rint(centres[:, 1]).astype(np.int64) - box_px // 2
    inside = (top >= 0) & (left >= 0) & (top + box_px <= ny) & (left + box_px <= nx)
    kept = xp.nonzero(inside)[0]
    top, left = top[kept], left[kept]
    offsets = xp.arange(box_px)
    boxes = micrograph[
        (top[:, None] + offsets[None, :])[:, :, None],
        (left[:, None] + offsets[None, :])[:, None, :],
    ].astype(np.float32)

    kept_host = to_host(kept)
    ctf_kept = None
    if ctf is not None:
        for key, value in ctf.items():
            if np.ndim(value) == 1 and np.shape(value)[0] != n_picks:
                raise ValueError(
                    f"ctf[{key!r}] has {np.shape(value)[0]} values for {n_picks} picks"
                )
        ctf_kept = {
            key: (xp.asarray(value)[kept] if np.ndim(value) == 1 else value)
            for key, value in ctf.items()
        }
    spectra = rfft2(boxes)
    if phase_flip and ctf_kept is not None:
        # Per-particle arrays (n_kept,) and scalars broadcast to a (n_kept, box, box//2+1) CTF.
        spectra = spectra * xp.sign(ctf_2d((box_px, box_px), pixel_size_A, **ctf_kept))
    if out_box != box_px:
        spectra = fourier_crop(spectra, (box_px, box_px), (out_box, out_box))
    particles = irfft2(spectra, (out_box, out_box))
    if invert_contrast:
        particles = -particles
    if normalise and particles.shape[0]:
        particles = normalise_background(particles, radius)
    out_pixel_A = pixel_size_A * box_px / out_box
    rows = _rows(
        to_host(centres)[kept_host],
        (ny, nx),
        out_box,
        out_pixel_A,
        ctf,
        kept_host,
        micrograph_path,
    )
    return Extraction(
        particles=particles.astype(np.float16 if output_float16 else np.float32),
        kept_index=kept,
        n_dropped_edge=int(n_picks - kept_host.shape[0]),
        pixel_size_A=out_pixel_A,
        rows=rows,
    )


def _rows(
    centres: np.ndarray,
    shape: tuple[int, int],
    out_box: int,
    out_pixel_A: float,
    ctf: dict[str, Any] | None,
    kept: np.ndarray,
    micrograph_path: str | None,
) -> dict[str, np.ndarray]:
    """Dataset columns (cryoSPARC field names and units) for the kept particles."""
    n = centres.shape[0]
    rows: dict[str, np.ndarray] = {
        "location/center_x_frac": centres[:, 1] / shape[1],
        "location/center_y_frac": centres[:, 0] / shape[0],
        "location/micrograph_shape": np.tile(np.asarray(shape, dtype=np.uint32), (n, 1)),
        "blob/idx": np.arange(n, dtype=np.uint32),
        "blob/shape": np.tile(np.asarray([out_box, out_box], dtype=np.uint32), (n, 1)),
        "blob/psize_A": np.full(n, out_pixel_A, dtype=np.float32),
    }
    if micrograph_path is not None:
        rows["location/micrograph_path"] = np.full(n, micrograph_path.encode())
    if ctf is not None:

        def per_particle(key: str, default: float = 0.0) -> np.ndarray:
            value = ctf.get(key, default)
            host = np.asarray(to_host(value) if hasattr(value, "shape") else value)
            return (host[kept] if host.ndim == 1 else np.full(n, host)).astype(np.float32)

        rows["ctf/df1_A"] = per_particle("defocus_u_A")
        rows["ctf/df2_A"] = per_particle("defocus_v_A")
        rows["ctf/df_angle_rad"] = np.deg2rad(per_particle("astig_angle_deg"))
        rows["ctf/phase_shift_rad"] = np.deg2rad(per_particle("phase_shift_deg"))
        rows["ctf/accel_kv"] = per_particle("voltage_kV")
        rows["ctf/cs_mm"] = per_particle("cs_mm")
        rows["ctf/amp_contrast"] = per_particle("amp_contrast")
    return rows
