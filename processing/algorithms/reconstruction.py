"""Back-projection by Fourier insertion and reconstruction from known poses.

Each image spectrum is inserted as a central slice into a zero-padded 3D half spectrum by
trilinear gridding, at the frequencies of :func:`~cryokube.processing.algorithms.projection.
central_slice_frequencies` (the projector's own convention, so the two are adjoint up to the
normalisation). Next to the CTF-weighted data ``sum CTF * F`` the accumulator keeps the weights
``sum CTF^2``; the reconstruction divides the two, Wiener-style, with an optional inverse
spectral SNR as the regulariser, transforms back, crops the padding, divides by the
real-space transform of the trilinear kernel (the gridding correction shared with the projector)
and masks the corners outside the box's inscribed sphere, as RELION's ``relion_reconstruct``
does [1]_. On the CPU a compiled kernel adds each sample to its 8 corners in one pass
(:mod:`~cryokube.processing.algorithms._trilinear`); the array code, which CuPy runs, scatters
one corner at a time (``add.at``). Either way memory stays at the accumulator plus a few MB
whatever the batch.

Against RELION 3.1.3 ``relion_reconstruct --ctf`` on the same simulated particles (64 px,
2 A/px, SNR 0.1, CTF, 2,000 particles) the FSC against the truth differs from RELION's by -0.004
to +0.006 per shell up to 4.1 A (from its ``--skip_gridding`` map by at most 0.004, about as
much as RELION's two maps differ), both maps reaching 5.12 A; without the corner mask ours
reached 5.57 A, lower at every shell (by 0.11 at 7.1 A). RELION's iterative gridding weights
(Pipe & Menon's density compensation with a Kaiser-Bessel blob, in place of the plain division)
closed that last 0.004 but cost ab-initio plus refinement of 10,000 particles a whole step
(gold-standard 6.10 A to 7.11 A, 6.10 A to 14.2 A against the truth), so they are not used.

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
from cryokube.processing.algorithms._trilinear import insert_slices_cpu, takes_compiled_path
from cryokube.processing.algorithms.fsc import shell_index, soft_spherical_mask
from cryokube.processing.algorithms.projection import (
    central_slice_frequencies,
    gridding_correction,
    slice_axes,
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

_CHUNK_SAMPLES = 1 << 17
"""Image spectrum samples inserted at once: about 1 MB per temporary, scattered corner by corner
(2^15 to 2^19 measured within 20% of each other at 64 px; the former bincount of all 8
corners at once, 2^20 samples at a time, peaked at 431 MB and ran 3x slower)."""


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
    n = acc.box_size
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
    # the rfft2 column kx = 0 holds ky and its Friedel mate -ky: insert only ky >= 0 (and the
    # Nyquist row), as each sample also stands for its mate in the half grid
    inside = ((kx * kx + ky * ky) <= max_frequency**2) & ((kx > 0) | (ky >= 0) | (ky == -0.5))
    inside = xp.flatnonzero(inside.reshape(-1))
    if takes_compiled_path(acc.data) and acc.weight.flags.c_contiguous:
        axis_y, axis_x = slice_axes(n, np.float32, np)
        insert_slices_cpu(
            acc.data,
            acc.weight,
            np.asarray(spectra, dtype=np.complex64),
            np.ones((1, n, n // 2 + 1), np.float32) if ctf is None else np.asarray(ctf, np.float32),
            np.ones(b, np.float32) if weights is None else np.asarray(weights, np.float32),
            np.asarray(rotations, dtype=np.float32),
            inside,
            xp.broadcast_to(axis_y[:, None], (n, n // 2 + 1)).reshape(-1)[inside],
            xp.broadcast_to(axis_x[None, :], (n, n // 2 + 1)).reshape(-1)[inside],
        )
    else:
        _insert_arrays(acc, spectra, rotations, ctf, weights, inside)


def _insert_arrays(
    acc: FourierAccumulator,
    spectra: Array,
    rotations: Array,
    ctf: Array | None,
    weights: Array | None,
    inside: Array,
) -> None:
    """:func:`insert_slices` in array operations (CuPy's path; the CPU's compiled kernel
    ``_trilinear._insert`` does the same arithmetic): the samples ``inside`` (flat indices
    into an image's ``rfft2`` grid) of every slice, scattered corner by corner."""
    xp = array_module(acc.data)
    n, p = acc.box_size, acc.padded_size
    half = p // 2 + 1
    b = spectra.shape[0]
    per_view = int(inside.size)
    step = max(1, _CHUNK_SAMPLES // per_view)
    data_flat = acc.data.reshape(-1)
    weight_flat = acc.weight.reshape(-1)
    # flat indices of the float32 view of the data reach 2 * size
    index_type = np.int32 if 2 * data_flat.size < 2**31 else np.int64
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
        g = freqs.reshape(-1, 3) * np.float32(p)
        # the half grid holds kx >= 0; a sample at kx < 0 goes in as its Friedel mate
        flip = g[:, 0] < 0
        g = xp.where(flip[:, None], -g, g)
        values = xp.where(flip, xp.conj(values), values)
        # x0 <= P//2 - 1 keeps both x corners on the grid (kx = 1/2 gets fx = 1)
        gx = xp.minimum(g[:, 0], np.float32(p // 2))
        x0 = xp.minimum(xp.floor(gx), np.float32(p // 2 - 1))
        fx = gx - x0
        corners = []
        for axis in (2, 1):
            lower = xp.floor(g[:, axis])
            frac = g[:, axis] - lower
            i0 = lower.astype(index_type) % p
            corners.append(((i0, 1 - frac), ((i0 + 1) % p, frac)))
        ix = x0.astype(index_type)
        for iz, wz in corners[0]:
            for iy, wy in corners[1]:
                row = (iz * p + iy) * half + ix
                wzy = wz * wy
                for index, w in ((row, wzy * (1 - fx)), (row + 1, wzy * fx)):
                    _scatter_add(data_flat, index, w * values)
                    _scatter_add(weight_flat, index, w * sample_weight)


def _scatter_add(target: Array, index: Array, values: Array) -> None:
    """``target[index] += values`` on a flat array, repeated indices summed (``add.at``).

    A complex target is updated as its float32 view (real and imaginary parts interleaved),
    so that CuPy's atomic float32 adds serve it too.
    """
    xp = array_module(target)
    if xp.iscomplexobj(target):
        parts = target.view(np.float32)
        xp.add.at(parts, 2 * index, values.real)
        xp.add.at(parts, 2 * index + 1, values.imag)
    else:
        xp.add.at(target, index, values)


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
    """Divide data by weights, transform back, crop, gridding-correct and mask the corners.

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
        units of a projection sum (the projector's scale). Outside the sphere of radius
        ``N/2`` px it falls to 0 over a 3 px raised-cosine edge, as RELION's
        ``softMaskOutsideMap`` does [1]_: the corners hold only noise (amplified there by the
        gridding correction), which would otherwise lower the map's FSC at every shell.
    """
    xp = array_module(acc.data)
    n, p = acc.box_size, acc.padded_size
    spectrum = acc.data.copy()
    weight = acc.weight.copy()
    planes = [0, p // 2] if p % 2 == 0 else [0]
    for plane in planes:
        spectrum[:, :, plane] = _hermitian_plane(acc.data[:, :, plane], True)
        weight[:, :, plane] = _hermitian_plane(acc.weight[:, :, plane], False)
    mean_weight = float(xp.sum(weight)) / max(int(xp.count_nonzero(weight)), 1)
    # in place, to keep the peak at one padded spectrum; voxels without weight have no data
    xp.maximum(
        weight, max(weight_floor * mean_weight, float(np.finfo(np.float32).tiny)), out=weight
    )
    if inverse_ssnr is not None:
        # shells of the output box: padded frequencies scale by 1/oversampling
        shells = xp.rint(shell_index((p, p, p), xp=xp) / acc.oversampling).astype(xp.int64)
        reg = xp.asarray(inverse_ssnr, dtype=np.float32)
        if reg.ndim == 0:
            weight += reg
        else:
            if reg.shape != (n // 2 + 1,):
                raise ValueError(f"inverse_ssnr must have shape ({n // 2 + 1},), got {reg.shape}")
            padded = xp.concatenate([reg, reg[-1:]])
            weight += padded[xp.minimum(shells, n // 2 + 1)]
    spectrum /= weight
    del weight
    padded_volume = irfftn(spectrum, (p, p, p), axes=(0, 1, 2))
    del spectrum
    # the box around the centre voxel, which sits at index 0 of the padded volume
    crop = (xp.arange(n) - n // 2) % p
    volume = padded_volume[crop][:, crop][:, :, crop]
    volume /= gridding_correction(n, acc.oversampling, xp=xp)
    volume *= soft_spherical_mask((n, n, n), radius_px=n / 2, edge_width_px=3.0, xp=xp)
    return volume


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
    batch_size: int = 128,
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
