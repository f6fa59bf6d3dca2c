"""Back-projection by Fourier insertion and reconstruction from known poses.

Each image spectrum is inserted as a central slice into a zero-padded 3D half spectrum by
trilinear gridding, at the frequencies of :func:`~cryokube.processing.algorithms.projection.
central_slice_frequencies` (the projector's own convention, so the two are adjoint up to the
normalisation). Next to the CTF-weighted data ``sum CTF * F`` the accumulator keeps the weights
``sum CTF^2``; the reconstruction divides the two, Wiener-style, with an optional inverse
spectral SNR as the regulariser, transforms back, crops the padding and divides by the
real-space transform of the trilinear kernel (the gridding correction shared with the projector).

Conventions are those of :mod:`cryokube.processing.algorithms.projection`: volumes ``[z, y, x]``
centred at voxel ``N//2``, images ``[y, x]`` centred at pixel ``N//2``, poses ``A`` with
``r_image = A @ r_volume`` (RELION), frequencies in cycles/px.

References
----------
.. [1] Scheres, S. H. W. (2012). RELION: implementation of a Bayesian approach to cryo-EM
   structure determination. J. Struct. Biol. 180, 519-530. doi:10.1016/j.jsb.2012.09.006
.. [2] Penczek, P. A. (2010). Fundamentals of three-dimensional reconstruction from
   projections. Methods Enzymol. 482, 1-33. doi:10.1016/S0076-6879(10)82001-4
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from cryokube.processing.algorithms.fsc import shell_index
from cryokube.processing.algorithms.projection import (
    central_slice_frequencies,
    gridding_correction,
)
from cryokube.processing.algorithms.symmetry import expand_poses
from cryokube.processing.backend import (
    Array,
    array_module,
    as_float,
    fft_freqs,
    fourier_shift,
    irfftn,
    rfft2,
)

__all__ = [
    "FourierAccumulator",
    "centred_spectra",
    "insert_slices",
    "new_accumulator",
    "reconstruct",
    "volume_from_accumulator",
]

_CHUNK_SAMPLES = 1 << 20
"""Image spectrum samples inserted at once; bounds the temporaries to about 200 MB."""


@dataclass
class FourierAccumulator:
    """Running sums of a Fourier back-projection on a padded half grid.

    Attributes
    ----------
    data : complex64 array of shape (P, P, P//2 + 1)
        ``sum w CTF F`` gridded trilinearly; the volume centre sits at index 0.
    weight : float32 array of shape (P, P, P//2 + 1)
        ``sum w CTF^2`` gridded the same way.
    box_size : int
        Edge length ``N`` of the volume (px).
    oversampling : int
        Padding factor; ``P = oversampling * N``.
    """

    data: Array
    weight: Array
    box_size: int
    oversampling: int

    @property
    def padded_size(self) -> int:
        """Edge length ``P`` of the padded grid (px)."""
        return self.box_size * self.oversampling


def new_accumulator(
    box_size: int, *, oversampling: int = 2, xp: ModuleType = np
) -> FourierAccumulator:
    """An empty accumulator for volumes of ``box_size`` px on the device of module ``xp``."""
    if box_size < 2:
        raise ValueError(f"box_size must be at least 2 px, got {box_size}")
    if oversampling not in (1, 2, 3, 4):
        raise ValueError(f"oversampling must be an integer from 1 to 4, got {oversampling!r}")
    p = box_size * oversampling
    shape = (p, p, p // 2 + 1)
    return FourierAccumulator(
        xp.zeros(shape, dtype=np.complex64),
        xp.zeros(shape, dtype=np.float32),
        box_size,
        oversampling,
    )


def centred_spectra(images: Array, *, shifts_px: Array | None = None) -> Array:
    """``rfft2`` spectra of images with the particle centre moved to the origin.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images whose rotation centre is pixel ``N//2`` plus ``shifts_px``.
    shifts_px : array of shape (B, 2), optional
        ``(dy, dx)`` offset of each particle from the box centre in pixels (the translation
        that was applied to the centred projection, backend :func:`fourier_shift` sign).

    Returns
    -------
    complex array of shape (B, N, N//2 + 1)
        Spectra with the particle centre at pixel (0, 0), as slices of a volume spectrum whose
        centre is voxel 0.
    """
    x = as_float(images)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must have shape (B, N, N), got {x.shape}")
    xp = array_module(x)
    n = x.shape[-1]
    offsets = xp.full((x.shape[0], 2), float(n // 2), dtype=np.float32)
    if shifts_px is not None:
        shifts = xp.asarray(shifts_px, dtype=np.float32)
        if shifts.shape != (x.shape[0], 2):
            raise ValueError(f"shifts_px must have shape ({x.shape[0]}, 2), got {shifts.shape}")
        offsets = offsets + shifts
    return fourier_shift(rfft2(x), -offsets, (n, n))


def insert_slices(
    acc: FourierAccumulator,
    spectra: Array,
    rotations: Array,
    *,
    ctf: Array | None = None,
    weights: Array | None = None,
    max_frequency: float = 0.5,
) -> None:
    """Add central slices to ``acc`` in place (Fourier back-projection).

    Parameters
    ----------
    acc : FourierAccumulator
        From :func:`new_accumulator`; updated in place.
    spectra : complex array of shape (B, N, N//2 + 1)
        Image spectra centred at the origin (:func:`centred_spectra`).
    rotations : array of shape (B, 3, 3)
        Poses ``A`` (RELION convention).
    ctf : array of shape (B, N, N//2 + 1), optional
        Contrast transfer function of each image on its ``rfft2`` grid; the data get
        ``CTF * F`` and the weights ``CTF^2``. None means a CTF of 1.
    weights : array of shape (B,), optional
        Per-slice weight (for example a pose probability); default 1.
    max_frequency : float, optional
        Samples beyond this image frequency (cycles/px, at most 0.5) are left out.
    """
    xp = array_module(acc.data)
    n, p = acc.box_size, acc.padded_size
    half = p // 2 + 1
    if spectra.ndim != 3 or spectra.shape[1:] != (n, n // 2 + 1):
        raise ValueError(f"spectra must have shape (B, {n}, {n // 2 + 1}), got {spectra.shape}")
    b = spectra.shape[0]
    if rotations.shape != (b, 3, 3):
        raise ValueError(f"rotations must have shape ({b}, 3, 3), got {rotations.shape}")
    if ctf is not None and ctf.shape != spectra.shape:
        raise ValueError(f"ctf must have the spectra's shape {spectra.shape}, got {ctf.shape}")
    if weights is not None and weights.shape != (b,):
        raise ValueError(f"weights must have shape ({b},), got {weights.shape}")
    if not 0 < max_frequency <= 0.5:
        raise ValueError(f"max_frequency must be in (0, 0.5] cycles/px, got {max_frequency}")
    ky, kx = fft_freqs((n, n), xp=xp)
    inside = ((kx * kx + ky * ky) <= max_frequency**2).reshape(-1)
    per_view = int(inside.sum())
    step = max(1, _CHUNK_SAMPLES // per_view)
    data_flat = acc.data.reshape(-1)
    weight_flat = acc.weight.reshape(-1)
    size = data_flat.size
    for start in range(0, b, step):
        stop = min(b, start + step)
        values = spectra[start:stop].reshape(stop - start, -1)[:, inside].astype(np.complex64)
        if ctf is None:
            transfer = xp.ones(values.shape, dtype=np.float32)
        else:
            transfer = xp.asarray(ctf[start:stop], dtype=np.float32).reshape(stop - start, -1)
            transfer = transfer[:, inside]
        if weights is not None:
            w_slice = xp.asarray(weights[start:stop], dtype=np.float32)[:, None]
        else:
            w_slice = xp.ones((stop - start, 1), dtype=np.float32)
        values = (values * (transfer * w_slice)).reshape(-1)
        sample_weight = (transfer * transfer * w_slice).reshape(-1)
        rot = xp.asarray(rotations[start:stop], dtype=np.float32)
        freqs = central_slice_frequencies(rot, n).reshape(stop - start, -1, 3)[:, inside]
        freqs = freqs.reshape(-1, 3)
        # the half grid holds kx >= 0; a sample at kx < 0 goes in as its Friedel mate
        flip = freqs[:, 0] < 0
        freqs = xp.where(flip[:, None], -freqs, freqs)
        values = xp.where(flip, xp.conj(values), values)
        g = freqs * np.float32(p)
        base = xp.floor(g)
        frac = g - base
        base_i = base.astype(xp.int64)
        indices = []
        corner_weights = []
        for dz in (0, 1):
            wz = frac[:, 2] if dz else 1 - frac[:, 2]
            iz = (base_i[:, 2] + dz) % p
            for dy in (0, 1):
                wzy = wz * (frac[:, 1] if dy else 1 - frac[:, 1])
                iy = (base_i[:, 1] + dy) % p
                for dx in (0, 1):
                    w = wzy * (frac[:, 0] if dx else 1 - frac[:, 0])
                    ix = base_i[:, 0] + dx
                    w = xp.where(ix < half, w, 0)
                    indices.append((iz * p + iy) * half + xp.minimum(ix, half - 1))
                    corner_weights.append(w)
        index = xp.concatenate(indices)
        cw = xp.concatenate(corner_weights)
        tiled = xp.concatenate([values] * 8)
        data_flat += (
            xp.bincount(index, weights=cw * tiled.real, minlength=size)
            + 1j * xp.bincount(index, weights=cw * tiled.imag, minlength=size)
        ).astype(np.complex64)
        weight_flat += xp.bincount(
            index, weights=cw * xp.concatenate([sample_weight] * 8), minlength=size
        ).astype(np.float32)


def _hermitian_plane(plane: Array, conjugate: bool) -> Array:
    """``plane[z, y] + plane[-z, -y]`` (conjugated for data): symmetrise a kx = const plane."""
    xp = array_module(plane)
    mirror = xp.roll(xp.flip(plane, axis=(0, 1)), 1, axis=(0, 1))
    return plane + (xp.conj(mirror) if conjugate else mirror)


def volume_from_accumulator(
    acc: FourierAccumulator,
    *,
    inverse_ssnr: Array | float | None = None,
    weight_floor: float = 1e-3,
) -> Array:
    """Divide data by weights, transform back, crop and gridding-correct.

    Parameters
    ----------
    acc : FourierAccumulator
        Accumulated slices.
    inverse_ssnr : array of shape (N//2 + 1,) or float, optional
        Wiener regulariser added to the weights per shell of the output box: the ratio of
        noise power to signal power of one image's Fourier component (in the units of the
        CTF-squared weights). RELION adds ``1 / tau^2`` the same way [1]_. None adds nothing.
    weight_floor : float, optional
        Weights below ``weight_floor * mean(weight)`` (over voxels that received any) are
        raised to it, so sparsely sampled voxels do not blow up.

    Returns
    -------
    float32 array of shape (N, N, N)
        The reconstructed volume indexed ``[z, y, x]``, centred at voxel ``N//2``, in the
        units of a projection sum (the projector's scale).
    """
    xp = array_module(acc.data)
    n, p = acc.box_size, acc.padded_size
    data = acc.data.copy()
    weight = acc.weight.copy()
    planes = [0, p // 2] if p % 2 == 0 else [0]
    for plane in planes:
        data[:, :, plane] = _hermitian_plane(acc.data[:, :, plane], True)
        weight[:, :, plane] = _hermitian_plane(acc.weight[:, :, plane], False)
    sampled = weight > 0
    mean_weight = xp.sum(weight) / xp.maximum(xp.sum(sampled), 1)
    denominator = xp.maximum(weight, weight_floor * mean_weight)
    if inverse_ssnr is not None:
        # shells of the output box: padded frequencies scale by 1/oversampling
        shells = xp.rint(shell_index((p, p, p), xp=xp) / acc.oversampling).astype(xp.int64)
        reg = xp.asarray(inverse_ssnr, dtype=np.float32)
        if reg.ndim == 0:
            denominator = denominator + reg
        else:
            if reg.shape != (n // 2 + 1,):
                raise ValueError(f"inverse_ssnr must have shape ({n // 2 + 1},), got {reg.shape}")
            padded = xp.concatenate([reg, reg[-1:]])
            denominator = denominator + padded[xp.minimum(shells, n // 2 + 1)]
    spectrum = xp.where(sampled, data / denominator, 0).astype(np.complex64)
    padded_volume = irfftn(spectrum, (p, p, p), axes=(0, 1, 2))
    volume = xp.roll(padded_volume, (n // 2,) * 3, axis=(0, 1, 2))[:n, :n, :n]
    return volume / gridding_correction(n, acc.oversampling, xp=xp)


def reconstruct(
    images: Array,
    rotations: Array,
    *,
    shifts_px: Array | None = None,
    ctf: Array | None = None,
    symmetry: Array | None = None,
    oversampling: int = 2,
    inverse_ssnr: Array | float | None = None,
    max_frequency: float = 0.5,
    batch_size: int = 512,
) -> Array:
    """Reconstruct a volume from particle images at known poses.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images (float32 unless float64), rotation centre at pixel ``N//2`` plus
        ``shifts_px``.
    rotations : array of shape (B, 3, 3)
        Poses ``A`` (RELION convention, :mod:`cryokube.processing.geometry`).
    shifts_px : array of shape (B, 2), optional
        ``(dy, dx)`` particle offsets in pixels (see :func:`centred_spectra`).
    ctf : array of shape (B, N, N//2 + 1), optional
        Each image's CTF on its ``rfft2`` grid (phase flipping and amplitude weighting come
        from the ``CTF``/``CTF^2`` sums).
    symmetry : array of shape (order, 3, 3), optional
        Point group from :func:`~cryokube.processing.algorithms.symmetry.symmetry_group`; each
        image is inserted at every symmetry-equivalent pose.
    oversampling : int, optional
        Padding factor of the Fourier grid (2 keeps interpolation errors near 1%).
    inverse_ssnr : array of shape (N//2 + 1,) or float, optional
        Wiener regulariser, see :func:`volume_from_accumulator`.
    max_frequency : float, optional
        Highest image frequency used (cycles/px).
    batch_size : int, optional
        Images Fourier transformed at once.

    Returns
    -------
    float32 array of shape (N, N, N)
        Volume on the device of ``images``, on the projector's scale (projecting it at the
        same poses gives back the images' signal).

    References
    ----------
    Scheres (2012) [1]_; Penczek (2010) [2]_.
    """
    if images.ndim != 3:
        raise ValueError(f"images must have shape (B, N, N), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    xp = array_module(images)
    acc = new_accumulator(int(images.shape[-1]), oversampling=oversampling, xp=xp)
    for start in range(0, images.shape[0], batch_size):
        stop = min(images.shape[0], start + batch_size)
        spectra = centred_spectra(
            images[start:stop], shifts_px=None if shifts_px is None else shifts_px[start:stop]
        )
        rot = xp.asarray(rotations[start:stop])
        batch_ctf = None if ctf is None else ctf[start:stop]
        if symmetry is not None:
            order = int(symmetry.shape[0])
            rot = expand_poses(rot, symmetry).reshape(-1, 3, 3)
            spectra = xp.repeat(spectra, order, axis=0)
            batch_ctf = None if batch_ctf is None else xp.repeat(batch_ctf, order, axis=0)
        insert_slices(acc, spectra, rot, ctf=batch_ctf, max_frequency=max_frequency)
    return volume_from_accumulator(acc, inverse_ssnr=inverse_ssnr)
