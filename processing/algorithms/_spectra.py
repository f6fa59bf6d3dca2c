"""Private helpers shared by the pre-processing algorithms: frequency grids, peaks, spectra."""

from __future__ import annotations

from types import ModuleType

import numpy as np
from cryokube.processing.backend import Array, array_module, radial_frequency, rfft2


def frequency_grid_per_A(shape: tuple[int, int], pixel_size_A: float, *, xp: ModuleType) -> Array:
    """|k| in 1/A on an ``rfft2`` grid of real-space ``shape`` (ny, nx)."""
    return radial_frequency(shape, xp=xp) / np.float32(pixel_size_A)


def parabola_vertex(minus: Array, centre: Array, plus: Array) -> Array:
    """Offset (px, within +-0.5) of the vertex of the parabola through values at -1, 0 and +1
    around a maximum; 0 where the three values do not curve downwards."""
    xp = array_module(centre)
    curvature = minus - 2 * centre + plus
    offset = xp.where(
        curvature < 0, 0.5 * (minus - plus) / xp.where(curvature < 0, curvature, -1), 0
    )
    return xp.clip(offset, -0.5, 0.5)


def find_peaks(cc: Array, *, max_shift_px: float) -> Array:
    """Sub-pixel position of the maximum of cross-correlation maps, within a radius.

    Parameters
    ----------
    cc : ndarray of shape (..., ny, nx)
        Real cross-correlation maps with the zero shift at index (0, 0) (FFT order).
    max_shift_px : float
        Only shifts with ``|s| <= max_shift_px`` are considered (px).

    Returns
    -------
    ndarray of shape (..., 2)
        ``(dy, dx)`` of each maximum (px), refined by a parabola through the peak and its
        neighbours along each axis.
    """
    xp = array_module(cc)
    ny, nx = cc.shape[-2:]
    dy = ((xp.arange(ny) + ny // 2) % ny) - ny // 2
    dx = ((xp.arange(nx) + nx // 2) % nx) - nx // 2
    inside = (dy[:, None] ** 2 + dx[None, :] ** 2) <= max_shift_px**2
    lead = cc.shape[:-2]
    flat = cc.reshape((*lead, ny * nx))
    masked = xp.where(inside.ravel(), flat, -xp.inf)
    index = xp.argmax(masked, axis=-1)
    iy, ix = index // nx, index % nx

    def at(oy: int, ox: int) -> Array:
        pos = ((iy + oy) % ny) * nx + (ix + ox) % nx
        return xp.take_along_axis(flat, pos[..., None], axis=-1)[..., 0]

    centre = at(0, 0)
    sy = dy[iy] + parabola_vertex(at(-1, 0), centre, at(1, 0))
    sx = dx[ix] + parabola_vertex(at(0, -1), centre, at(0, 1))
    return xp.stack([sy, sx], axis=-1).astype(np.float32)


def centred_power_spectrum(image: Array, *, box_px: int) -> Array:
    """Average power spectrum of half-overlapping ``box_px`` tiles of a 2D image, centred.

    The mean of each tile is removed; the result has shape (box_px, box_px) with the zero
    frequency at ``(box_px // 2, box_px // 2)`` (the layout of RELION and CTFFIND spectra).
    """
    xp = array_module(image)
    ny, nx = image.shape
    if box_px > min(ny, nx) or box_px < 8:
        raise ValueError(f"box_px must be between 8 and {min(ny, nx)}, got {box_px}")
    step = box_px // 2
    tops = range(0, ny - box_px + 1, step)
    lefts = range(0, nx - box_px + 1, step)
    total = xp.zeros((box_px, box_px // 2 + 1), dtype=np.float32)
    count = 0
    for top in tops:
        rows = xp.stack([image[top : top + box_px, le : le + box_px] for le in lefts])
        rows = rows - xp.mean(rows, axis=(-2, -1), keepdims=True)
        total = total + xp.sum(xp.abs(rfft2(rows)) ** 2, axis=0)
        count += rows.shape[0]
    half = total / (count * box_px * box_px)
    return _full_centred(half, box_px)


def _full_centred(half: Array, box_px: int) -> Array:
    """Expand an ``rfft2`` half spectrum of a real (box, box) image to the full centred plane."""
    xp = array_module(half)
    full = xp.zeros((box_px, box_px), dtype=half.dtype)
    kx = half.shape[-1]
    full[:, :kx] = half
    # Hermitian symmetry: P(-ky, -kx) = P(ky, kx).
    neg_y = (-xp.arange(box_px)) % box_px
    full[:, kx:] = half[neg_y][:, 1 : box_px - kx + 1][:, ::-1]
    return xp.fft.fftshift(full)
