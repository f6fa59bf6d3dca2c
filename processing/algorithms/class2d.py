"""2D classification by expectation-maximisation over classes, in-plane rotations and shifts.

The model is RELION's [1]_: particle ``i`` is ``CTF_i * T_t R_psi A_k`` plus Gaussian noise
whose power ``sigma^2`` is estimated per resolution shell, where ``A_k`` is class average
``k``, ``R_psi`` rotates it counter-clockwise by ``psi`` (the backend's ``rotate_image``
convention) and ``T_t`` translates it by ``t = (dy, dx)`` px. The E-step evaluates the
likelihood of every (class, rotation, shift) on grids, restricted to frequencies below
``max_resolution_A``; the cross terms for all particles and shifts against all rotated
classes are one real matrix product. The M-step adds each particle, CTF-multiplied, shift-
and rotation-corrected at its best pose within each class, weighted by its class
probability, and divides by the summed ``CTF^2`` (rotated likewise), a Wiener-style average.
Early iterations use random mini-batches with decaying running sums (online EM, as in
cryoSPARC [2]_), later ones full passes. References are masked with a soft circle and
re-centred on their centre of mass each iteration.

References
----------
.. [1] Scheres, S. H. W. (2012). RELION: implementation of a Bayesian approach to cryo-EM
   structure determination. J. Struct. Biol. 180, 519-530. doi:10.1016/j.jsb.2012.09.006
.. [2] Punjani, A., Rubinstein, J. L., Fleet, D. J. & Brubaker, M. A. (2017). cryoSPARC:
   algorithms for rapid unsupervised cryo-EM structure determination. Nat. Methods 14,
   290-296. doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryokube.processing.algorithms.fsc import (
    fsc,
    resolution_at_threshold,
    soft_spherical_mask,
)
from cryokube.processing.algorithms.reconstruction import centred_spectra
from cryokube.processing.algorithms.refine import (
    fourier_band,
    pose_scores,
    shell_noise_power,
    unshift_phases,
)
from cryokube.processing.backend import (
    Array,
    array_module,
    as_float,
    irfft2,
    rfft2,
    rotate_image,
    shift_image,
    to_host,
)

__all__ = ["Class2DResult", "Class2DState", "class_averages_2d", "classify_2d"]

_CHUNK = 512
"""Particles scored at once; bounds the (particles x shifts x classes x rotations) scores."""

_M_STEP_CLASSES = 2
"""Classes per particle that enter the M-step (its most probable ones above 1%)."""


@dataclass(frozen=True)
class Class2DResult:
    """Output of :func:`classify_2d`.

    Attributes
    ----------
    class_averages : array of shape (K, N, N)
        CTF-corrected class averages, centred at pixel ``N//2``.
    assignments : ndarray of shape (B,), int
        Most probable class of each particle.
    angles_deg : ndarray of shape (B,)
        In-plane rotation ``psi`` (degrees, counter-clockwise) of the class average that
        matches each particle.
    shifts_px : ndarray of shape (B, 2)
        Translation ``(dy, dx)`` (px) applied after the rotation.
    max_probability : ndarray of shape (B,)
        Posterior probability of the best class.
    class_sizes : ndarray of shape (K,), int
        Particles per class (by ``assignments``).
    class_resolution_A : ndarray of shape (K,)
        Half-set FRC = 0.143 resolution of each class average (Angstrom; ``inf`` for classes
        with fewer than 2 particles).
    log_likelihood : list of float
        Mean log-likelihood per particle after each iteration (up to a constant).
    """

    class_averages: Array
    assignments: np.ndarray[Any, np.dtype[np.int64]]
    angles_deg: np.ndarray[Any, np.dtype[np.float64]]
    shifts_px: np.ndarray[Any, np.dtype[np.float64]]
    max_probability: np.ndarray[Any, np.dtype[np.float64]]
    class_sizes: np.ndarray[Any, np.dtype[np.int64]]
    class_resolution_A: np.ndarray[Any, np.dtype[np.float64]]
    log_likelihood: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Class2DState:
    """What :func:`classify_2d` needs to continue after an iteration (a checkpoint's content).

    The per-particle alignments are not part of it: the last iteration is a full pass that
    assigns every particle again.

    Attributes
    ----------
    iteration : int
        Iterations completed.
    references : array of shape (K, N, N)
        Masked, re-centred class averages for the next E-step.
    sigma2 : array of shape (N//2 + 1,)
        Noise power per shell.
    log_prior : array of shape (K,)
        Log class priors.
    running_data, running_weight : arrays of shape (K, N, N), or None
        Online-EM running sums (None before the first online iteration and after a full pass).
    log_likelihood : list of float
        Mean log-likelihood per particle of the iterations so far.
    rng_state : dict
        State of the seeded ``PCG64`` generator (``Generator.bit_generator.state``).
    """

    iteration: int
    references: Array
    sigma2: Array
    log_prior: Array
    running_data: Array | None
    running_weight: Array | None
    log_likelihood: list[float]
    rng_state: dict[str, Any]


def _full_plane_centred(half: Array, n: int) -> Array:
    """Even real spectra (b, n, n//2 + 1) as full planes with the origin at pixel n//2."""
    xp = array_module(half)
    rows = xp.arange(n)[:, None]
    cols = xp.arange(n)[None, :]
    mirrored = cols > n // 2
    src_row = xp.where(mirrored, (-rows) % n, rows)
    src_col = xp.where(mirrored, n - cols, cols)
    full = half[:, src_row, src_col]
    return xp.fft.fftshift(full, axes=(-2, -1))


def _half_plane(full_centred: Array, n: int) -> Array:
    xp = array_module(full_centred)
    return xp.fft.ifftshift(full_centred, axes=(-2, -1))[..., : n // 2 + 1]


@dataclass
class _Sums:
    """CTF-weighted sums of aligned particles per class (real space) and their CTF^2 weights."""

    data: Array
    weight: Array

    def scaled(self, factor: float) -> _Sums:
        return _Sums(self.data * factor, self.weight * factor)

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(self.data + other.data, self.weight + other.weight)

    def averages(self) -> Array:
        """Wiener-style averages ``F(sum CTF x) / (sum CTF^2 + 1% of its mean)``."""
        xp = array_module(self.data)
        n = self.data.shape[-1]
        weight = _half_plane(self.weight, n)
        mean = xp.mean(weight, axis=(-2, -1), keepdims=True)
        spectrum = rfft2(self.data) / (weight + 0.01 * mean + np.float32(1e-12))
        return irfft2(spectrum, (n, n))


def _accumulate(
    images: Array,
    ctf: Array | None,
    classes: Array,
    angles_deg: Array,
    shifts_px: Array,
    probabilities: Array,
    n_classes: int,
) -> _Sums:
    """Sums over particles of ``p * R(-psi) T(-t) CTF x`` and ``p * R(-psi) CTF^2`` per class.

    One entry per (particle, class) pair: ``images`` (E, N, N) may repeat particles.
    """
    xp = array_module(images)
    n = images.shape[-1]
    data = xp.zeros((n_classes, n, n), dtype=np.float32)
    weight = xp.zeros((n_classes, n, n), dtype=np.float32)
    if images.shape[0] == 0:
        return _Sums(data, weight)
    aligned = shift_image(images, -shifts_px)
    if ctf is not None:
        aligned = irfft2(rfft2(aligned) * ctf, (n, n))
        ctf2 = _full_plane_centred(ctf * ctf, n)
    angles_host = np.asarray(to_host(angles_deg))
    for angle in np.unique(angles_host):
        sel = xp.asarray(np.flatnonzero(angles_host == angle))
        onehot = xp.zeros((n_classes, sel.size), dtype=np.float32)
        onehot[classes[sel], xp.arange(sel.size)] = probabilities[sel]
        rotated = rotate_image(aligned[sel], -float(angle))
        data += (onehot @ rotated.reshape(sel.size, -1)).reshape(n_classes, n, n)
        if ctf is not None:
            rotated_w = rotate_image(ctf2[sel], -float(angle))
            weight += (onehot @ rotated_w.reshape(sel.size, -1)).reshape(n_classes, n, n)
    if ctf is None:
        totals = xp.zeros(n_classes, dtype=np.float32)
        totals[...] = xp.bincount(classes, weights=probabilities, minlength=n_classes)[:n_classes]
        weight += totals[:, None, None]
    return _Sums(data, weight)


def class_averages_2d(
    images: Array,
    assignments: Array,
    angles_deg: Array,
    shifts_px: Array,
    *,
    n_classes: int,
    pixel_size_A: float,
    ctf: Array | None = None,
) -> tuple[Array, np.ndarray[Any, np.dtype[np.float64]]]:
    """Class averages of hard-assigned, aligned particles and their half-set FRC resolution.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images.
    assignments : array of shape (B,), int
        Class of each particle, ``0 .. n_classes - 1``.
    angles_deg, shifts_px : arrays of shape (B,) and (B, 2)
        Alignment as in :class:`Class2DResult`; angles are grouped by value, so use a grid.
    n_classes : int
        Number of classes K.
    pixel_size_A : float
        Pixel size in Angstrom.
    ctf : array of shape (B, N, N//2 + 1), optional
        Each particle's CTF on its ``rfft2`` grid.

    Returns
    -------
    averages : array of shape (K, N, N)
        CTF-corrected class averages.
    resolution_A : ndarray of shape (K,)
        FRC = 0.143 resolution between the averages of even- and odd-numbered particles
        (RELION's rule, :func:`~cryokube.processing.algorithms.fsc.resolution_at_threshold`).
    """
    xp = array_module(images)
    x = as_float(images)
    classes = xp.asarray(assignments).astype(xp.int64)
    if classes.shape != (x.shape[0],):
        raise ValueError(f"assignments must have shape ({x.shape[0]},), got {classes.shape}")
    if int(classes.min()) < 0 or int(classes.max()) >= n_classes:
        raise ValueError(f"assignments must lie in 0..{n_classes - 1}")
    ones = xp.ones(x.shape[0], dtype=np.float32)
    angles = xp.asarray(angles_deg, dtype=np.float32)
    shifts = xp.asarray(shifts_px, dtype=np.float32)
    halves = []
    for parity in (0, 1):
        sel = xp.arange(parity, x.shape[0], 2)
        halves.append(
            _accumulate(
                x[sel],
                None if ctf is None else ctf[sel],
                classes[sel],
                angles[sel],
                shifts[sel],
                ones[sel],
                n_classes,
            )
        )
    averages = (halves[0] + halves[1]).averages()
    return averages, _half_set_resolution(halves, classes, n_classes, pixel_size_A)


def _half_set_resolution(
    halves: list[_Sums], classes: Array, n_classes: int, pixel_size_A: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    n = halves[0].data.shape[-1]
    curves = to_host(fsc(halves[0].averages(), halves[1].averages(), ndim=2))
    sizes = np.bincount(np.asarray(to_host(classes)), minlength=n_classes)
    resolution = np.full(n_classes, np.inf)
    for k in range(n_classes):
        if sizes[k] >= 2:
            resolution[k] = resolution_at_threshold(
                curves[k], box_size_px=n, pixel_size_A=pixel_size_A
            )
    return resolution


def _recentre(averages: Array, mask: Array) -> Array:
    """Shift each average so that the centre of mass of its positive masked density is N//2."""
    xp = array_module(averages)
    n = averages.shape[-1]
    density = xp.clip(averages, 0, None) * mask
    total = xp.maximum(density.sum(axis=(-2, -1)), np.float32(1e-12))
    coords = xp.arange(n, dtype=np.float32) - n // 2
    cy = (density.sum(axis=-1) * coords).sum(axis=-1) / total
    cx = (density.sum(axis=-2) * coords).sum(axis=-1) / total
    return shift_image(averages, -xp.stack([cy, cx], axis=-1))


def classify_2d(
    images: Array,
    *,
    n_classes: int,
    pixel_size_A: float,
    ctf: Array | None = None,
    max_resolution_A: float | None = None,
    angle_step_deg: float = 10.0,
    max_shift_px: int = 3,
    mask_radius_px: float | None = None,
    n_online_iterations: int = 10,
    online_batch_size: int = 200,
    n_full_iterations: int = 3,
    seed: int = 0,
    resume: Class2DState | None = None,
    on_iteration: Callable[[Class2DState], None] | None = None,
) -> Class2DResult:
    """Classify particle images into ``n_classes`` aligned 2D class averages.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images with the particle roughly at pixel ``N//2`` (positive density, as after
        RELION's contrast inversion), normalised to unit background noise.
    n_classes : int
        Number of classes K (at least 1, at most B).
    pixel_size_A : float
        Pixel size in Angstrom.
    ctf : array of shape (B, N, N//2 + 1), optional
        Each particle's CTF on its ``rfft2`` grid; None for a CTF of 1.
    max_resolution_A : float, optional
        Highest resolution used for alignment (Angstrom); default 4 pixels (half Nyquist).
    angle_step_deg : float, optional
        Step of the in-plane rotation grid (degrees).
    max_shift_px : int, optional
        Shifts up to this many px along y and x, in 1 px steps.
    mask_radius_px : float, optional
        Radius of the soft circular mask on particles and averages; default 0.4 N.
    n_online_iterations : int, optional
        Mini-batch iterations (random batches of ``online_batch_size``) before full passes.
    online_batch_size : int, optional
        Particles per mini-batch.
    n_full_iterations : int, optional
        Full passes over all particles (at least 1).
    seed : int, optional
        Seed of the initial random subsets and mini-batches.
    resume : Class2DState, optional
        Continue after ``resume.iteration`` from a state that ``on_iteration`` gave for the same
        images and arguments; the result is the same as that of an uninterrupted run.
    on_iteration : callable, optional
        Called with the state after every iteration but the last (to save a checkpoint or
        report progress).

    Returns
    -------
    Class2DResult

    References
    ----------
    Scheres (2012) [1]_; online EM as in Punjani et al. (2017) [2]_.
    """
    x = as_float(images)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must have shape (B, N, N), got {x.shape}")
    b, n = int(x.shape[0]), int(x.shape[-1])
    if not 1 <= n_classes <= b:
        raise ValueError(
            f"n_classes must be between 1 and the number of images {b}, got {n_classes}"
        )
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    if ctf is not None and ctf.shape != (b, n, n // 2 + 1):
        raise ValueError(f"ctf must have shape ({b}, {n}, {n // 2 + 1}), got {ctf.shape}")
    if max_resolution_A is None:
        max_resolution_A = 4.0 * pixel_size_A
    if max_resolution_A < 2 * pixel_size_A:
        raise ValueError(f"max_resolution_A must be at least Nyquist {2 * pixel_size_A} A")
    if not 0 < angle_step_deg <= 180:
        raise ValueError(f"angle_step_deg must be in (0, 180], got {angle_step_deg}")
    if max_shift_px < 0:
        raise ValueError(f"max_shift_px must be non-negative, got {max_shift_px}")
    if n_full_iterations < 1 or n_online_iterations < 0:
        raise ValueError("n_full_iterations must be at least 1 and n_online_iterations >= 0")
    schedule = [False] * n_online_iterations + [True] * n_full_iterations
    if resume is not None and not 0 < resume.iteration < len(schedule):
        raise ValueError(
            f"resume.iteration must be in 1..{len(schedule) - 1}, got {resume.iteration}"
        )
    if resume is not None and resume.references.shape != (n_classes, n, n):
        raise ValueError(
            f"resume.references must have shape ({n_classes}, {n}, {n}), "
            f"got {resume.references.shape}"
        )
    xp = array_module(x)
    mask = soft_spherical_mask(
        (n, n), radius_px=0.4 * n if mask_radius_px is None else mask_radius_px, xp=xp
    )
    x = x * mask
    angles = np.arange(0.0, 360.0, angle_step_deg)
    grid = np.arange(-max_shift_px, max_shift_px + 1, dtype=np.float32)
    shift_grid = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)

    # Fourier band used for alignment, with Hermitian multiplicities
    band = fourier_band(n, radius_shells=n * pixel_size_A / max_resolution_A, xp=xp)
    shifts_dev = xp.asarray(shift_grid)
    unshift = unshift_phases(band, shifts_dev)
    n_shells = int(n // 2 + 1)

    def band_of(idx: Array) -> tuple[Array, Array]:
        spectra = centred_spectra(x[idx]).reshape(idx.size, -1)[:, band.index]
        if ctf is None:
            transfer = xp.ones(spectra.shape, dtype=np.float32)
        else:
            transfer = xp.asarray(ctf[idx], dtype=np.float32).reshape(idx.size, -1)[:, band.index]
        return spectra, transfer

    running: _Sums | None = None
    if resume is None:
        rng = np.random.default_rng(seed)
        # initial noise power per shell: the particles' own power (signal included, so the
        # first posteriors are broad)
        sample = xp.asarray(rng.choice(b, size=min(b, 500), replace=False))
        spectra0, _ = band_of(sample)
        sigma2 = shell_noise_power(xp.abs(spectra0) ** 2, band, n_shells)

        # initial references: averages of random subsets at random rotations
        subset = max(2, min(20, b // n_classes))
        order = rng.permutation(b)
        init_idx = order[: subset * n_classes]
        init_angles = xp.asarray(rng.choice(angles, size=init_idx.size).astype(np.float32))
        init_sums = _accumulate(
            x[xp.asarray(init_idx)],
            None if ctf is None else ctf[xp.asarray(init_idx)],
            xp.asarray(np.repeat(np.arange(n_classes), subset)),
            init_angles,
            xp.zeros((init_idx.size, 2), dtype=np.float32),
            xp.ones(init_idx.size, dtype=np.float32),
            n_classes,
        )
        references = init_sums.averages() * mask
        log_prior = xp.full(n_classes, -np.log(n_classes), dtype=np.float32)
        log_likelihood: list[float] = []
        first = 0
    else:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = resume.rng_state
        references = xp.asarray(resume.references, dtype=np.float32)
        sigma2 = xp.asarray(resume.sigma2, dtype=np.float32)
        log_prior = xp.asarray(resume.log_prior, dtype=np.float32)
        if resume.running_data is not None and resume.running_weight is not None:
            running = _Sums(
                xp.asarray(resume.running_data, dtype=np.float32),
                xp.asarray(resume.running_weight, dtype=np.float32),
            )
        log_likelihood = list(resume.log_likelihood)
        first = resume.iteration
    best_class = np.zeros(b, np.int64)
    best_angle = np.zeros(b)
    best_shift = np.zeros((b, 2))
    best_prob = np.zeros(b)
    halves: list[_Sums] = []
    for iteration in range(first, len(schedule)):
        full = schedule[iteration]
        batch = (
            np.arange(b) if full else rng.choice(b, size=min(b, online_batch_size), replace=False)
        )
        last = iteration == len(schedule) - 1
        rotated = xp.stack([rotate_image(references, float(a)) for a in angles], axis=1)
        ref_spectra = centred_spectra(rotated.reshape(-1, n, n)).reshape(
            n_classes * angles.size, -1
        )[:, band.index]
        sums = [_empty_sums(n_classes, n, xp) for _ in range(2)]
        total_ll = 0.0
        residual = xp.zeros(n_shells, dtype=np.float32)
        class_mass = xp.zeros(n_classes, dtype=np.float64)
        inv_sigma2 = band.hermitian / xp.maximum(sigma2[band.shells], np.float32(1e-12))
        for start in range(0, batch.size, _CHUNK):
            idx_host = batch[start : start + _CHUNK]
            idx = xp.asarray(idx_host)
            spectra, transfer = band_of(idx)
            m = idx.size
            scores = pose_scores(
                spectra, transfer, ref_spectra, inv_sigma2=inv_sigma2, unshift=unshift
            ).reshape(m, shift_grid.shape[0], n_classes, angles.size)
            scores = scores + log_prior[None, None, :, None]
            top = scores.max(axis=(1, 2, 3), keepdims=True)
            prob = xp.exp(scores - top)
            total = prob.sum(axis=(1, 2, 3), keepdims=True)
            total_ll += float(xp.sum(xp.log(total.ravel()) + top.ravel()))
            prob = prob / total
            p_class = prob.sum(axis=(1, 3))
            class_mass += p_class.sum(axis=0)
            # best (shift, rotation) within each class
            per_class = xp.moveaxis(prob, 2, 1).reshape(m, n_classes, -1)
            within = per_class.argmax(axis=-1)
            shift_of = within // angles.size
            angle_of = within % angles.size
            winner = p_class.argmax(axis=-1)
            rows = xp.arange(m)
            best_class[idx_host] = to_host(winner)
            best_angle[idx_host] = angles[to_host(angle_of[rows, winner])]
            best_shift[idx_host] = shift_grid[to_host(shift_of[rows, winner])]
            best_prob[idx_host] = to_host(p_class[rows, winner])
            # residual power at the best pose, for the noise model
            best_ref = ref_spectra[winner * angles.size + angle_of[rows, winner]]
            model = transfer * best_ref
            data = spectra * unshift[shift_of[rows, winner]]
            res = xp.abs(data - model) ** 2
            residual += shell_noise_power(res, band, n_shells) * m
            # M-step entries: each particle's most probable classes; in the last pass split
            # into half sets by particle parity, for the class resolution
            cutoff = xp.sort(p_class, axis=-1)[:, -min(_M_STEP_CLASSES, n_classes)]
            pi, pk = xp.nonzero((p_class >= cutoff[:, None]) & (p_class > 0.01))
            sel_idx = idx[pi]
            entry_args = (
                x[sel_idx],
                None if ctf is None else ctf[sel_idx],
                pk,
                xp.asarray(angles[to_host(angle_of[pi, pk])].astype(np.float32)),
                shifts_dev[shift_of[pi, pk]],
            )
            p_entry = p_class[pi, pk].astype(np.float32)
            if last:
                odd = (sel_idx % 2).astype(np.float32)
                sums[0] = sums[0] + _accumulate(*entry_args, p_entry * (1 - odd), n_classes)
                sums[1] = sums[1] + _accumulate(*entry_args, p_entry * odd, n_classes)
            else:
                sums[0] = sums[0] + _accumulate(*entry_args, p_entry, n_classes)
        log_likelihood.append(total_ll / batch.size)
        sigma2 = xp.where(residual > 0, residual / batch.size, sigma2).astype(np.float32)
        log_prior = xp.log((class_mass + 1.0) / (class_mass.sum() + n_classes)).astype(np.float32)
        if last:
            halves = sums
            current = sums[0] + sums[1]
        elif full:
            current = sums[0]
        else:
            running = sums[0] if running is None else running.scaled(0.5) + sums[0]
            current = running
        references = _recentre(current.averages() * mask, mask) * mask
        if full and not last:
            running = None
        if on_iteration is not None and not last:
            on_iteration(
                Class2DState(
                    iteration=iteration + 1,
                    references=references,
                    sigma2=sigma2,
                    log_prior=log_prior,
                    running_data=None if running is None else running.data,
                    running_weight=None if running is None else running.weight,
                    log_likelihood=list(log_likelihood),
                    rng_state=dict(rng.bit_generator.state),
                )
            )
    averages = (halves[0] + halves[1]).averages()
    resolution = _half_set_resolution(halves, xp.asarray(best_class), n_classes, pixel_size_A)
    return Class2DResult(
        class_averages=averages,
        assignments=best_class,
        angles_deg=best_angle,
        shifts_px=best_shift,
        max_probability=best_prob,
        class_sizes=np.bincount(best_class, minlength=n_classes),
        class_resolution_A=resolution,
        log_likelihood=log_likelihood,
    )


def _empty_sums(n_classes: int, n: int, xp: Any) -> _Sums:
    return _Sums(
        xp.zeros((n_classes, n, n), dtype=np.float32), xp.zeros((n_classes, n, n), dtype=np.float32)
    )
