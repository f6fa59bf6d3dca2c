"""Ab-initio 3D reconstruction by stochastic gradient descent with pose marginalisation.

Following cryoSPARC's ab-initio [1]_ for one class (K = 1): start from a random volume, and at
each iteration take a random mini-batch of particles, evaluate the likelihood of every pose of
a coarse SO(3) grid and every shift of a small grid at the current resolution, and move the
volume along the preconditioned gradient of the marginal log-likelihood. With the diagonal
(CTF^2-weight) preconditioner of cryoSPARC, the step ``V + eta (D - W V) / W`` is the convex
combination ``(1 - eta) V + eta V_batch`` of the current volume and the batch's back-projection
``V_batch = D / W`` with each particle inserted at its most probable poses, weighted by their
posterior probabilities. The resolution rises geometrically from ``initial_resolution_A``
(about 35 A) to ``final_resolution_A`` (about 12 A). The volume is kept inside a soft sphere.

The hand of the result is arbitrary: projections of a map and of its mirror image differ
only by a reflection of the poses, so single-particle data cannot tell the two apart.
:func:`mirror_volume` gives the other hand; compare both with a reference, or decide later
(tilt pairs, alpha-helix handedness).

References
----------
.. [1] Punjani, A., Rubinstein, J. L., Fleet, D. J. & Brubaker, M. A. (2017). cryoSPARC:
   algorithms for rapid unsupervised cryo-EM structure determination. Nat. Methods 14,
   290-296. doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryokube.processing.algorithms.fsc import low_pass, soft_spherical_mask
from cryokube.processing.algorithms.projection import extract_slices, fourier_volume
from cryokube.processing.algorithms.reconstruction import (
    centred_spectra,
    insert_slices,
    new_accumulator,
    volume_from_accumulator,
)
from cryokube.processing.algorithms.refine import (
    fourier_band,
    pose_scores,
    shell_noise_power,
    so3_grid,
    unshift_phases,
)
from cryokube.processing.backend import Array, array_module, as_float, rfft2
from scipy.spatial.transform import Rotation

__all__ = ["AbInitioResult", "ab_initio", "mirror_volume"]


@dataclass(frozen=True)
class AbInitioResult:
    """Output of :func:`ab_initio`.

    Attributes
    ----------
    volume : array of shape (N, N, N)
        The final volume (hand arbitrary), low-passed to ``final_resolution_A``.
    resolution_schedule_A : list of float
        Resolution used at each iteration (Angstrom).
    log_likelihood : list of float
        Mean marginal log-likelihood per particle of each mini-batch (up to a constant).
    """

    volume: Array
    resolution_schedule_A: list[float]
    log_likelihood: list[float]


def mirror_volume(volume: Array) -> Array:
    """The mirror image of ``volume`` (N, N, N) through the plane ``z = N//2`` (other hand)."""
    xp = array_module(volume)
    n = volume.shape[0]
    flipped = volume[::-1]
    return flipped if n % 2 else xp.roll(flipped, 1, axis=0)


def ab_initio(
    images: Array,
    *,
    pixel_size_A: float,
    ctf: Array | None = None,
    n_iterations: int = 40,
    batch_size: int = 200,
    initial_resolution_A: float = 35.0,
    final_resolution_A: float = 12.0,
    angle_step_deg: float = 15.0,
    max_shift_px: int = 2,
    n_top_poses: int = 5,
    learning_rate: float = 0.5,
    mask_radius_px: float | None = None,
    seed: int = 0,
) -> AbInitioResult:
    """Build a low-resolution volume from particle images with unknown poses.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images, centre near pixel ``N//2``.
    pixel_size_A : float
        Pixel size in Angstrom.
    ctf : array of shape (B, N, N//2 + 1), optional
        Per-particle CTF on the ``rfft2`` grid.
    n_iterations : int, optional
        Mini-batch iterations.
    batch_size : int, optional
        Particles per mini-batch.
    initial_resolution_A, final_resolution_A : float, optional
        Resolution schedule (Angstrom), geometric between the two.
    angle_step_deg : float, optional
        Spacing of the SO(3) pose grid (:func:`~cryokube.processing.algorithms.refine.so3_grid`).
    max_shift_px : int, optional
        Shifts searched up to this many px along y and x, in 1 px steps.
    n_top_poses : int, optional
        Most probable (pose, shift) pairs per particle inserted in the batch's back-projection.
    learning_rate : float, optional
        Step ``eta`` in (0, 1].
    mask_radius_px : float, optional
        Radius of the soft spherical mask; default 0.4 N.
    seed : int, optional
        Seed of the initial volume and the mini-batches.

    Returns
    -------
    AbInitioResult

    References
    ----------
    Punjani et al. (2017) [1]_.
    """
    x = as_float(images)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must have shape (B, N, N), got {x.shape}")
    b, n = int(x.shape[0]), int(x.shape[-1])
    if ctf is not None and ctf.shape != (b, n, n // 2 + 1):
        raise ValueError(f"ctf must have shape ({b}, {n}, {n // 2 + 1}), got {ctf.shape}")
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    if not 2 * pixel_size_A <= final_resolution_A <= initial_resolution_A:
        raise ValueError(
            "final_resolution_A must lie between Nyquist (2 pixel_size_A) and initial_resolution_A"
        )
    if n_iterations < 1 or batch_size < 1 or n_top_poses < 1:
        raise ValueError("n_iterations, batch_size and n_top_poses must be positive")
    if not 0 < learning_rate <= 1:
        raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
    xp = array_module(x)
    rng = np.random.default_rng(seed)
    mask = soft_spherical_mask(
        (n, n, n), radius_px=0.4 * n if mask_radius_px is None else mask_radius_px, xp=xp
    )
    grid = xp.asarray(so3_grid(angle_step_deg))
    shift_range = np.arange(-max_shift_px, max_shift_px + 1, dtype=np.float32)
    shift_grid = xp.asarray(
        np.stack(np.meshgrid(shift_range, shift_range, indexing="ij"), -1).reshape(-1, 2)
    )
    batch_size = min(batch_size, b)
    n_shells = n // 2 + 1

    def transfer_of(sel: Array, index: Array) -> Array:
        if ctf is None:
            return xp.ones((int(sel.size), int(index.size)), dtype=np.float32)
        return xp.asarray(ctf[sel], dtype=np.float32).reshape(int(sel.size), -1)[:, index]

    # random start: a batch back-projected at random poses, low-passed
    first = xp.asarray(rng.choice(b, size=batch_size, replace=False))
    acc = new_accumulator(n, xp=xp)
    random_poses = xp.asarray(
        Rotation.random(batch_size, random_state=rng).as_matrix().astype(np.float32)
    )
    insert_slices(
        acc, centred_spectra(x[first]), random_poses, ctf=None if ctf is None else ctf[first]
    )
    volume = low_pass(
        volume_from_accumulator(acc) * mask,
        resolution_A=initial_resolution_A,
        pixel_size_A=pixel_size_A,
    )
    full_band = fourier_band(n, radius_shells=n // 2, xp=xp)
    spectra0 = rfft2(x[first]).reshape(batch_size, -1)[:, full_band.index]
    sigma2 = shell_noise_power(spectra0.real**2 + spectra0.imag**2, full_band, n_shells)
    schedule: list[float] = []
    log_likelihood: list[float] = []
    for iteration in range(n_iterations):
        fraction = iteration / max(n_iterations - 1, 1)
        resolution_A = float(
            initial_resolution_A * (final_resolution_A / initial_resolution_A) ** fraction
        )
        schedule.append(resolution_A)
        band = fourier_band(n, radius_shells=n * pixel_size_A / resolution_A, xp=xp)
        inv_sigma2 = band.hermitian / xp.maximum(sigma2[band.shells], np.float32(1e-12))
        fvol = fourier_volume(volume * mask)
        refs = extract_slices(fvol, grid, max_frequency=band.max_frequency)
        refs = refs.reshape(grid.shape[0], -1)[:, band.index]
        unshift = unshift_phases(band, shift_grid)
        batch = xp.asarray(rng.choice(b, size=batch_size, replace=False))
        spectra = rfft2(x[batch]).reshape(batch_size, -1)[:, band.index]
        transfer = transfer_of(batch, band.index)
        scores = pose_scores(spectra, transfer, refs, inv_sigma2=inv_sigma2, unshift=unshift)
        flat = scores.reshape(batch_size, -1)
        top = flat.max(axis=-1, keepdims=True)
        prob = xp.exp(flat - top)
        total = prob.sum(axis=-1, keepdims=True)
        log_likelihood.append(float(xp.mean(xp.log(total[:, 0]) + top[:, 0])))
        prob = prob / total
        k = min(n_top_poses, prob.shape[-1])
        best = xp.argsort(prob, axis=-1)[:, ::-1][:, :k]
        rows = xp.arange(batch_size)[:, None]
        weights = prob[rows, best]
        weights = weights / weights.sum(axis=-1, keepdims=True)
        r = grid.shape[0]
        pose, shift = best % r, best // r
        # noise power from the residual at each particle's best pose
        residual = xp.abs(spectra * unshift[shift[:, 0]] - transfer * refs[pose[:, 0]]) ** 2
        sigma2 = xp.where(
            xp.arange(n_shells) > 0,
            xp.maximum(shell_noise_power(residual, band, n_shells), 0),
            sigma2,
        )
        sigma2 = xp.where(sigma2 > 0, sigma2, xp.max(sigma2)).astype(np.float32)
        acc = new_accumulator(n, xp=xp)
        member = xp.repeat(batch, k)
        insert_slices(
            acc,
            centred_spectra(x[member], shifts_px=shift_grid[shift.ravel()]),
            grid[pose.ravel()],
            ctf=None if ctf is None else ctf[member],
            weights=weights.ravel().astype(np.float32),
            max_frequency=band.max_frequency,
        )
        batch_volume = low_pass(
            volume_from_accumulator(acc) * mask,
            resolution_A=resolution_A,
            pixel_size_A=pixel_size_A,
        )
        volume = (1 - learning_rate) * volume + learning_rate * batch_volume
    return AbInitioResult(volume, schedule, log_likelihood)
