"""Homogeneous 3D refinement with gold-standard half sets, and the pose search it shares.

Particles are split into two halves refined independently against their own half map
(gold standard, RELION [1]_): the first two iterations search a uniform grid on SO(3) (with a global, then a local shift
grid), later ones refine each particle's pose locally (27 small rotations about the
image axes and a 3 x 3 shift grid, both steps halving each iteration). Scores are Gaussian
log-likelihoods with a per-shell noise power estimated from the residuals, restricted to
frequencies below the current resolution. Each half is reconstructed from its best poses
(:mod:`~cryokube.processing.algorithms.reconstruction`), the FSC between the halves gives the
resolution, and both references are low-passed to it for the next iteration (FSC-driven
low-pass). The result carries half maps, the full map, and the phase-randomisation-corrected
masked FSC.

Poses follow :mod:`cryokube.processing.geometry` (``r_image = A @ r_volume``); shifts are
``(dy, dx)`` px, the translation applied to the centred projection.

References
----------
.. [1] Scheres, S. H. W. (2012). RELION: implementation of a Bayesian approach to cryo-EM
   structure determination. J. Struct. Biol. 180, 519-530. doi:10.1016/j.jsb.2012.09.006
.. [2] Scheres, S. H. W. & Chen, S. (2012). Prevention of overfitting in cryo-EM structure
   determination. Nat. Methods 9, 853-854. doi:10.1038/nmeth.2115
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryokube.processing.algorithms.fsc import (
    MaskedFSC,
    apply_shell_filter,
    fsc,
    low_pass,
    masked_fsc,
    resolution_at_threshold,
    shell_index,
    soft_spherical_mask,
)
from cryokube.processing.algorithms.projection import extract_slices, fourier_volume
from cryokube.processing.algorithms.reconstruction import (
    centred_spectra,
    insert_slices,
    new_accumulator,
    volume_from_accumulator,
)
from cryokube.processing.algorithms.symmetry import axis_rotation, expand_poses
from cryokube.processing.backend import Array, array_module, as_float, fft_freqs, rfft2, to_host
from cryokube.processing.geometry import euler_to_matrix

__all__ = [
    "FourierBand",
    "RefinementResult",
    "RefinementState",
    "back_project_halves",
    "fourier_band",
    "local_perturbations",
    "pose_scores",
    "refine_3d",
    "so3_grid",
]

_CHUNK = 64
"""Particles scored at once."""


def so3_grid(step_deg: float) -> npt.NDArray[np.float32]:
    """A near-uniform grid of rotations with about ``step_deg`` spacing.

    View directions are a Fibonacci sphere of ``ceil(4 pi / step^2)`` points (equal area per
    point), each combined with in-plane angles ``psi`` in steps of ``step_deg``.

    Returns
    -------
    ndarray of shape (n_directions * n_psi, 3, 3), float32
        Poses ``A`` (RELION convention).
    """
    if not 0 < step_deg <= 90:
        raise ValueError(f"step_deg must be in (0, 90], got {step_deg}")
    n_dirs = int(np.ceil(4 * np.pi / np.deg2rad(step_deg) ** 2))
    i = np.arange(n_dirs) + 0.5
    tilt = np.degrees(np.arccos(1 - 2 * i / n_dirs))
    rot = np.degrees(np.pi * (1 + 5**0.5) * i) % 360.0
    psi = np.arange(0.0, 360.0, step_deg)
    angles = np.stack(
        [np.repeat(rot, psi.size), np.repeat(tilt, psi.size), np.tile(psi, n_dirs)], axis=-1
    )
    return np.asarray(euler_to_matrix(angles), dtype=np.float32)


def local_perturbations(step_deg: float) -> npt.NDArray[np.float32]:
    """The 27 rotations ``Rz(c) Ry(b) Rx(a)`` for ``a, b, c`` in ``{-step, 0, step}`` degrees.

    Applied as ``perturbation @ A``, they turn a pose about the image axes. Index 13 is the
    identity.
    """
    offsets = (-step_deg, 0.0, step_deg)
    mats = [
        axis_rotation((0, 0, 1), c) @ axis_rotation((0, 1, 0), b) @ axis_rotation((1, 0, 0), a)
        for a in offsets
        for b in offsets
        for c in offsets
    ]
    return np.stack(mats).astype(np.float32)


@dataclass(frozen=True)
class FourierBand:
    """Samples of an image's ``rfft2`` grid used for alignment: ``1 <= shell <= radius``.

    Attributes
    ----------
    index : array of shape (M,)
        Flat indices into the ``(N, N//2 + 1)`` half spectrum.
    shells : array of shape (M,)
        Shell of each sample (``round(|k| N)``).
    hermitian : array of shape (M,)
        Multiplicity in the full spectrum (1 on the kx = 0 and Nyquist columns, else 2).
    ky, kx : arrays of shape (M,)
        Frequencies in cycles/px.
    max_frequency : float
        Band edge in cycles/px.
    """

    index: Array
    shells: Array
    hermitian: Array
    ky: Array
    kx: Array
    max_frequency: float


def fourier_band(n: int, *, radius_shells: float, xp: Any = np) -> FourierBand:
    """The alignment band of ``n`` x ``n`` images up to ``radius_shells`` (at most n/2)."""
    radius = float(min(radius_shells, n // 2))
    if radius < 1:
        raise ValueError(f"radius_shells must be at least 1, got {radius_shells}")
    half = n // 2 + 1
    shells = shell_index((n, n), xp=xp).reshape(-1)
    index = xp.flatnonzero((shells >= 1) & (shells <= radius))
    ky, kx = fft_freqs((n, n), xp=xp)
    cols = xp.broadcast_to(xp.arange(half), (n, half)).reshape(-1)[index]
    hermitian = xp.where((cols == 0) | (2 * cols == n), 1.0, 2.0).astype(np.float32)
    return FourierBand(
        index,
        shells[index],
        hermitian,
        xp.broadcast_to(ky, (n, half)).reshape(-1)[index],
        xp.broadcast_to(kx, (n, half)).reshape(-1)[index],
        min(0.5, (radius + 0.5) / n),
    )


def unshift_phases(band: FourierBand, shifts_px: Array) -> Array:
    """``exp(+2 pi i k.t)`` that undoes translations ``t`` (..., 2) as ``(dy, dx)`` px."""
    xp = array_module(band.kx)
    t = xp.asarray(shifts_px, dtype=np.float32)
    phase = t[..., :1] * band.ky + t[..., 1:] * band.kx
    return xp.exp(2j * np.pi * phase).astype(np.complex64)


def pose_scores(
    spectra: Array, transfer: Array, references: Array, *, inv_sigma2: Array, unshift: Array
) -> Array:
    """Gaussian log-likelihoods of particles against references at shifts (up to a constant).

    ``log p = sum_k h_k (CTF Re(F conj(G)) - CTF^2 |G|^2 / 2) / sigma_k^2`` over the band, with
    the particle spectrum ``F`` shifted back by each trial shift.

    Parameters
    ----------
    spectra : complex array of shape (b, M)
        Particle spectra on a :class:`FourierBand`.
    transfer : array of shape (b, M)
        Their CTF (ones without CTF).
    references : complex array of shape (R, M) or (b, R, M)
        Reference slices shared by all particles, or one set per particle.
    inv_sigma2 : array of shape (M,)
        Hermitian multiplicity over the noise power of each sample.
    unshift : complex array of shape (T, M) or (b, T, M)
        Phase factors of the trial shifts (:func:`unshift_phases`).

    Returns
    -------
    array of shape (b, T, R)
    """
    xp = array_module(spectra)
    b = spectra.shape[0]
    weighted = (spectra * (transfer * inv_sigma2))[:, None, :] * unshift
    power = references.real**2 + references.imag**2
    if references.ndim == 2:
        t = weighted.shape[1]
        flat = weighted.reshape(b * t, -1)
        cross = flat.real @ references.real.T + flat.imag @ references.imag.T
        norm = (transfer * transfer * inv_sigma2) @ power.T
        return cross.reshape(b, t, -1) - 0.5 * norm[:, None, :]
    refs_t = xp.swapaxes(references, 1, 2)
    cross = weighted.real @ refs_t.real + weighted.imag @ refs_t.imag
    norm = xp.einsum("bm,brm->br", transfer * transfer * inv_sigma2, power)
    return cross - 0.5 * norm[:, None, :]


def shell_noise_power(residual_power: Array, band: FourierBand, n_shells: int) -> Array:
    """Mean of ``residual_power`` (b, M) per shell, shape (n_shells,); empty shells are 0."""
    xp = array_module(residual_power)
    shells = xp.tile(band.shells, residual_power.shape[0])
    sums = xp.bincount(shells, weights=residual_power.ravel(), minlength=n_shells)[:n_shells]
    counts = xp.bincount(shells, minlength=n_shells)[:n_shells]
    return (sums / xp.maximum(counts, 1)).astype(np.float32)


def back_project_halves(
    images: Array,
    rotations: Array,
    shifts_px: Array,
    halves: Array,
    *,
    ctf: Array | None = None,
    symmetry: Array | None = None,
    weights: Array | None = None,
    max_frequency: float = 0.5,
    batch_size: int = 256,
) -> list[Array]:
    """Reconstruct the two half maps from poses (each image at every symmetry mate).

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images.
    rotations : array of shape (B, 3, 3)
        Poses ``A``.
    shifts_px : array of shape (B, 2)
        ``(dy, dx)`` offsets in px.
    halves : array of shape (B,), int
        Half set (0 or 1) of each image; a negative value leaves the image out.
    ctf : array of shape (B, N, N//2 + 1), optional
        Per-image CTF.
    symmetry : array of shape (order, 3, 3), optional
        Point group rotations.
    weights : array of shape (B,), optional
        Per-image weight (for example a pose probability).
    max_frequency : float, optional
        Highest frequency inserted (cycles/px).
    batch_size : int, optional
        Images transformed at once.

    Returns
    -------
    list of two arrays of shape (N, N, N)
    """
    xp = array_module(images)
    n = int(images.shape[-1])
    halves_host = np.asarray(to_host(halves))
    maps = []
    for h in (0, 1):
        acc = new_accumulator(n, xp=xp)
        members = np.flatnonzero(halves_host == h)
        for start in range(0, members.size, batch_size):
            sel = xp.asarray(members[start : start + batch_size])
            spectra = centred_spectra(images[sel], shifts_px=shifts_px[sel])
            rot = xp.asarray(rotations[sel], dtype=np.float32)
            batch_ctf = None if ctf is None else ctf[sel]
            w = None if weights is None else xp.asarray(weights[sel], dtype=np.float32)
            if symmetry is not None:
                order = int(symmetry.shape[0])
                rot = expand_poses(rot, symmetry).reshape(-1, 3, 3)
                spectra = xp.repeat(spectra, order, axis=0)
                batch_ctf = None if batch_ctf is None else xp.repeat(batch_ctf, order, axis=0)
                w = None if w is None else xp.repeat(w, order)
            insert_slices(acc, spectra, rot, ctf=batch_ctf, weights=w, max_frequency=max_frequency)
        maps.append(volume_from_accumulator(acc))
    return maps


@dataclass(frozen=True)
class RefinementResult:
    """Output of :func:`refine_3d`.

    Attributes
    ----------
    half_maps : list of two arrays of shape (N, N, N)
        Final unfiltered half maps.
    full_map : array of shape (N, N, N)
        Their average.
    rotations : array of shape (B, 3, 3)
        Refined poses ``A``.
    shifts_px : array of shape (B, 2)
        Refined ``(dy, dx)`` offsets (px).
    halves : ndarray of shape (B,), int
        Half set of each particle.
    fsc : MaskedFSC
        Unmasked, masked, phase-randomised and corrected FSC curves of the final half maps.
    resolution_A : float
        Gold-standard resolution: corrected FSC = 0.143 (RELION's rule).
    resolution_history_A : list of float
        Unmasked half-map FSC resolution after each iteration.
    """

    half_maps: list[Array]
    full_map: Array
    rotations: Array
    shifts_px: Array
    halves: npt.NDArray[np.int64]
    fsc: MaskedFSC
    resolution_A: float
    resolution_history_A: list[float]


@dataclass(frozen=True)
class RefinementState:
    """What :func:`refine_3d` needs to continue after an iteration (a checkpoint's content).

    Attributes
    ----------
    iteration : int
        Iterations completed.
    references : array of shape (2, N, N, N)
        The two half references, FSC-filtered, for the next iteration.
    rotations : array of shape (B, 3, 3)
        Current poses ``A``.
    shifts_px : array of shape (B, 2)
        Current ``(dy, dx)`` offsets (px).
    halves : ndarray of shape (B,), int
        Half set of each particle.
    sigma2 : array of shape (N//2 + 1,)
        Noise power per shell.
    resolution_A : float
        Resolution of the next alignment (Angstrom).
    step_deg : float
        Angular step of the next local search (degrees).
    shift_step_px : float
        Shift step of the next local search (px).
    resolution_history_A : list of float
        Half-map FSC resolution after each iteration so far.
    rng_state : dict
        State of the seeded ``PCG64`` generator (``Generator.bit_generator.state``).
    """

    iteration: int
    references: Array
    rotations: Array
    shifts_px: Array
    halves: npt.NDArray[np.int64]
    sigma2: Array
    resolution_A: float
    step_deg: float
    shift_step_px: float
    resolution_history_A: list[float]
    rng_state: dict[str, Any]


def _best_pose(
    spectra: Array, transfer: Array, refs: Array, unshift: Array, inv_sigma2: Array
) -> tuple[Array, Array, Array]:
    """Best (pose, shift) indices of each particle and its residual power on the band.

    ``refs`` is (R, M) shared or (b, R, M) per particle; ``unshift`` is (T, M) or (b, T, M).
    """
    xp = array_module(spectra)
    b = spectra.shape[0]
    r = refs.shape[-2]
    scores = pose_scores(spectra, transfer, refs, inv_sigma2=inv_sigma2, unshift=unshift)
    flat = scores.reshape(b, -1).argmax(axis=-1)
    best_shift, best_pose = flat // r, flat % r
    rows = xp.arange(b)
    best_refs = refs[best_pose] if refs.ndim == 2 else refs[rows, best_pose]
    phases = unshift[best_shift] if unshift.ndim == 2 else unshift[rows, best_shift]
    residual = xp.abs(spectra * phases - transfer * best_refs) ** 2
    return best_pose, best_shift, residual


def refine_3d(
    images: Array,
    initial_volume: Array,
    *,
    pixel_size_A: float,
    ctf: Array | None = None,
    symmetry: Array | None = None,
    n_iterations: int = 6,
    initial_resolution_A: float = 30.0,
    global_step_deg: float = 15.0,
    max_shift_px: int = 3,
    mask_radius_px: float | None = None,
    seed: int = 0,
    resume: RefinementState | None = None,
    on_iteration: Callable[[RefinementState], None] | None = None,
) -> RefinementResult:
    """Gold-standard homogeneous refinement of a volume against particle images.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images, centre near pixel ``N//2``.
    initial_volume : array of shape (N, N, N)
        Starting model (for example from :func:`~cryokube.processing.algorithms.abinitio.
        ab_initio`); it is low-passed to ``initial_resolution_A`` so that the halves start
        from the same low-resolution model and stay independent beyond it [2]_.
    pixel_size_A : float
        Pixel size in Angstrom.
    ctf : array of shape (B, N, N//2 + 1), optional
        Per-particle CTF on the ``rfft2`` grid.
    symmetry : array of shape (order, 3, 3), optional
        Point group (:func:`~cryokube.processing.algorithms.symmetry.symmetry_group`).
    n_iterations : int, optional
        Two global searches (the second with local shifts, at the first FSC resolution),
        then local refinement iterations.
    initial_resolution_A : float, optional
        Resolution of the first alignment (Angstrom).
    global_step_deg : float, optional
        Angular step of the global search; local steps start at half of it.
    max_shift_px : int, optional
        Global shift search range (px, 1 px steps).
    mask_radius_px : float, optional
        Radius of the soft spherical mask on references and for the masked FSC; default 0.4 N.
    seed : int, optional
        Seed of the half-set split.
    resume : RefinementState, optional
        Continue after ``resume.iteration`` from a state that ``on_iteration`` gave for the same
        images and arguments; the result is the same as that of an uninterrupted run.
    on_iteration : callable, optional
        Called with the state after every iteration but the last (to save a checkpoint or
        report progress); its arrays are the working ones, valid during the call.

    Returns
    -------
    RefinementResult

    References
    ----------
    Scheres (2012) [1]_; gold-standard FSC: Scheres & Chen (2012) [2]_.
    """
    x = as_float(images)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must have shape (B, N, N), got {x.shape}")
    b, n = int(x.shape[0]), int(x.shape[-1])
    if initial_volume.shape != (n, n, n):
        raise ValueError(
            f"initial_volume must have shape ({n}, {n}, {n}), got {initial_volume.shape}"
        )
    if ctf is not None and ctf.shape != (b, n, n // 2 + 1):
        raise ValueError(f"ctf must have shape ({b}, {n}, {n // 2 + 1}), got {ctf.shape}")
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be at least 1, got {n_iterations}")
    if b < 2:
        raise ValueError("images must hold at least 2 particles for two half sets")
    if resume is not None and not 0 < resume.iteration < n_iterations:
        raise ValueError(
            f"resume.iteration must be in 1..{n_iterations - 1}, got {resume.iteration}"
        )
    if resume is not None and resume.rotations.shape != (b, 3, 3):
        raise ValueError(
            f"resume.rotations must have shape ({b}, 3, 3), got {resume.rotations.shape}"
        )
    xp = array_module(x)
    mask = soft_spherical_mask(
        (n, n, n), radius_px=0.4 * n if mask_radius_px is None else mask_radius_px, xp=xp
    )
    spectra_all = rfft2(x).reshape(b, -1)
    n_shells = n // 2 + 1
    if resume is None:
        rng = np.random.default_rng(seed)
        halves = np.zeros(b, np.int64)
        halves[rng.permutation(b)[b // 2 :]] = 1
        resolution_A = float(initial_resolution_A)
        volume0 = low_pass(
            as_float(xp.asarray(initial_volume)),
            resolution_A=resolution_A,
            pixel_size_A=pixel_size_A,
        )
        references = [volume0, volume0]
        rotations = xp.zeros((b, 3, 3), dtype=np.float32)
        shifts = xp.zeros((b, 2), dtype=np.float32)
        # initial noise power: the particles' own power per shell (signal included)
        sample = xp.asarray(rng.choice(b, size=min(b, 500), replace=False))
        full_band = fourier_band(n, radius_shells=n // 2, xp=xp)
        power = spectra_all[sample][:, full_band.index]
        sigma2 = shell_noise_power(power.real**2 + power.imag**2, full_band, n_shells)
        history: list[float] = []
        step_deg = global_step_deg
        shift_step = 1.0
        first = 0
    else:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = resume.rng_state
        halves = np.asarray(resume.halves, dtype=np.int64)
        resolution_A = resume.resolution_A
        references = list(xp.asarray(resume.references, dtype=np.float32))
        rotations = xp.array(resume.rotations, dtype=np.float32)  # updated in place
        shifts = xp.array(resume.shifts_px, dtype=np.float32)
        sigma2 = xp.asarray(resume.sigma2, dtype=np.float32)
        history = list(resume.resolution_history_A)
        step_deg = resume.step_deg
        shift_step = resume.shift_step_px
        first = resume.iteration
    grid = xp.asarray(so3_grid(global_step_deg))
    shift_range = np.arange(-max_shift_px, max_shift_px + 1, dtype=np.float32)
    global_shifts = xp.asarray(
        np.stack(np.meshgrid(shift_range, shift_range, indexing="ij"), -1).reshape(-1, 2)
    )
    for iteration in range(first, n_iterations):
        band = fourier_band(n, radius_shells=n * pixel_size_A / resolution_A, xp=xp)
        inv_sigma2 = band.hermitian / xp.maximum(sigma2[band.shells], np.float32(1e-12))
        residual = xp.zeros(n_shells, dtype=np.float32)
        counted = 0
        local = local_perturbations(step_deg)
        offsets = np.array([-shift_step, 0.0, shift_step], dtype=np.float32)
        local_shifts = xp.asarray(
            np.stack(np.meshgrid(offsets, offsets, indexing="ij"), -1).reshape(-1, 2)
        )
        for h in (0, 1):
            fvol = fourier_volume(references[h] * mask)
            if iteration <= 1:
                grid_refs = extract_slices(fvol, grid, max_frequency=band.max_frequency)
                grid_refs = grid_refs.reshape(grid.shape[0], -1)[:, band.index]
                grid_unshift = unshift_phases(band, global_shifts)
            members = np.flatnonzero(halves == h)
            for start in range(0, members.size, _CHUNK):
                sel = xp.asarray(members[start : start + _CHUNK])
                m = int(sel.size)
                spectra = spectra_all[sel][:, band.index]
                transfer = (
                    xp.ones(spectra.shape, dtype=np.float32)
                    if ctf is None
                    else xp.asarray(ctf[sel], dtype=np.float32).reshape(m, -1)[:, band.index]
                )
                if iteration == 0:
                    pose, shift, res = _best_pose(
                        spectra, transfer, grid_refs, grid_unshift, inv_sigma2
                    )
                    rotations[sel] = grid[pose]
                    shifts[sel] = global_shifts[shift]
                elif iteration == 1:
                    # global poses again at the first FSC resolution, shifts locally
                    trial_shifts = shifts[sel][:, None, :] + local_shifts[None]
                    unshift = unshift_phases(band, trial_shifts)
                    pose, shift, res = _best_pose(spectra, transfer, grid_refs, unshift, inv_sigma2)
                    rows = xp.arange(m)
                    rotations[sel] = grid[pose]
                    shifts[sel] = trial_shifts[rows, shift]
                else:
                    candidates = xp.asarray(local) @ rotations[sel][:, None]
                    trial_shifts = shifts[sel][:, None, :] + local_shifts[None]
                    slices = extract_slices(
                        fvol, candidates.reshape(-1, 3, 3), max_frequency=band.max_frequency
                    )
                    refs = slices.reshape(m, local.shape[0], -1)[:, :, band.index]
                    unshift = unshift_phases(band, trial_shifts)
                    pose, shift, res = _best_pose(spectra, transfer, refs, unshift, inv_sigma2)
                    rows = xp.arange(m)
                    rotations[sel] = candidates[rows, pose]
                    shifts[sel] = trial_shifts[rows, shift]
                residual += shell_noise_power(res, band, n_shells) * m
                counted += m
        sigma2 = xp.where(residual > 0, residual / counted, sigma2).astype(np.float32)
        maps = back_project_halves(x, rotations, shifts, halves, ctf=ctf, symmetry=symmetry)
        curve = fsc(maps[0] * mask, maps[1] * mask)
        resolution_A = resolution_at_threshold(
            to_host(curve), box_size_px=n, pixel_size_A=pixel_size_A
        )
        resolution_A = max(resolution_A, 2.0 * pixel_size_A)
        history.append(resolution_A)
        # FSC-driven low-pass: each half map times the FSC per shell (the Wiener filter of a
        # half map, whose shell SNR is FSC / (1 - FSC)), cut at the 0.143 resolution
        weight = xp.clip(curve, 0.0, 1.0)
        references = [
            low_pass(
                apply_shell_filter(v, weight), resolution_A=resolution_A, pixel_size_A=pixel_size_A
            )
            for v in maps
        ]
        step_deg = (global_step_deg if iteration <= 1 else step_deg) / 2
        shift_step = max(shift_step / 2, 0.25)
        if on_iteration is not None and iteration < n_iterations - 1:
            on_iteration(
                RefinementState(
                    iteration=iteration + 1,
                    references=xp.stack(references),
                    rotations=rotations,
                    shifts_px=shifts,
                    halves=halves,
                    sigma2=sigma2,
                    resolution_A=float(resolution_A),
                    step_deg=float(step_deg),
                    shift_step_px=float(shift_step),
                    resolution_history_A=[float(r) for r in history],
                    rng_state=dict(rng.bit_generator.state),
                )
            )
    curves = masked_fsc(maps[0], maps[1], mask, rng=rng)
    final_A = resolution_at_threshold(
        to_host(curves.corrected), box_size_px=n, pixel_size_A=pixel_size_A
    )
    return RefinementResult(
        half_maps=maps,
        full_map=(maps[0] + maps[1]) / 2,
        rotations=rotations,
        shifts_px=shifts,
        halves=halves,
        fsc=curves,
        resolution_A=final_A,
        resolution_history_A=history,
    )
