"""Ab-initio 3D reconstruction of K classes by stochastic gradient descent.

Following cryoSPARC's ab-initio [1]_: start from random volumes, and at each iteration take a
random mini-batch of particles, evaluate the likelihood of every class, every pose of a coarse
SO(3) grid and every shift of a small grid at the current resolution, and move each volume
along the preconditioned gradient of the marginal log-likelihood. A particle's class
responsibility is its posterior marginalised over poses and shifts, with the class sizes as
prior. With the diagonal (CTF^2-weight) preconditioner of cryoSPARC, the step
``V + eta (D - W V) / W`` is the convex combination ``(1 - eta) V + eta V_batch`` of the current
volume and the batch's back-projection ``V_batch = D / W``, each particle inserted at its most
probable poses within the class, weighted by their posterior probabilities times its
responsibility (so the step does not depend on the class's share of the batch). Early on, part
of each responsibility is spread evenly over the classes (cryoSPARC's annealed class
similarity), so that no class starves before the classes differ. The resolution rises
geometrically from ``initial_resolution_A`` (about 35 A) to ``final_resolution_A`` (about
12 A). The volumes are kept inside a soft sphere. A last pass assigns every particle to its
most probable class at the final resolution. After each iteration but the last, ``on_iteration``
receives an :class:`AbInitioState`, from which ``resume=`` continues bit for bit.

The hand of the result is arbitrary: projections of a map and of its mirror image differ
only by a reflection of the poses, so single-particle data cannot tell the two apart.
:func:`mirror_volume` gives the other hand; :func:`compare_hands` decides it against a map of
known hand (or decide later: tilt pairs, alpha-helix handedness); :func:`choose_hand` only
decides, at low resolution, without the full-size alignment.

References
----------
.. [1] Punjani, A., Rubinstein, J. L., Fleet, D. J. & Brubaker, M. A. (2017). cryoSPARC:
   algorithms for rapid unsupervised cryo-EM structure determination. Nat. Methods 14,
   290-296. doi:10.1038/nmeth.4169
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryokube.processing.algorithms._spectra import parabola_vertex
from cryokube.processing.algorithms.fsc import low_pass, soft_spherical_mask
from cryokube.processing.algorithms.projection import extract_slices, fourier_volume
from cryokube.processing.algorithms.reconstruction import (
    centred_spectra,
    insert_slices,
    new_accumulator,
    volume_from_accumulator,
)
from cryokube.processing.algorithms.refine import (
    FourierBand,
    fourier_band,
    local_perturbations,
    pose_scores,
    shell_noise_power,
    so3_grid,
    unshift_phases,
)
from cryokube.processing.backend import (
    Array,
    array_module,
    as_float,
    fourier_resample,
    fourier_shift,
    irfftn,
    ndimage_module,
    rfft2,
    rfftn,
    to_host,
)
from scipy.spatial.transform import Rotation

__all__ = [
    "AbInitioResult",
    "AbInitioState",
    "HandChoice",
    "HandComparison",
    "ab_initio",
    "choose_hand",
    "compare_hands",
    "mirror_volume",
]

_CHUNK = 64
"""Particles scored at once in the final class assignment."""


@dataclass(frozen=True)
class AbInitioResult:
    """Output of :func:`ab_initio`.

    Attributes
    ----------
    volumes : array of shape (K, N, N, N)
        One volume per class (hand arbitrary), low-passed to ``final_resolution_A``, classes
        numbered by decreasing size.
    class_posterior : array of shape (B, K)
        Each particle's class probability, marginalised over poses and shifts at the final
        resolution.
    classes : ndarray of shape (B,), int
        Each particle's most probable class.
    class_sizes : ndarray of shape (K,), int
        Particles assigned to each class (decreasing).
    resolution_schedule_A : list of float
        Resolution used at each iteration (Angstrom).
    log_likelihood : list of float
        Mean marginal log-likelihood per particle of each mini-batch (up to a constant).
    """

    volumes: Array
    class_posterior: Array
    classes: npt.NDArray[np.int64]
    class_sizes: npt.NDArray[np.int64]
    resolution_schedule_A: list[float]
    log_likelihood: list[float]


@dataclass(frozen=True)
class AbInitioState:
    """What :func:`ab_initio` needs to continue after an iteration (a checkpoint's content).

    The SGD step has no momentum (a convex combination with a constant ``learning_rate``), so
    the volumes, noise model and class priors are its whole state; the resolution of the next
    iteration follows from ``iteration``.

    Attributes
    ----------
    iteration : int
        Mini-batch iterations completed.
    volumes : array of shape (K, N, N, N)
        Current class volumes, in the SGD's class order (not yet sorted by size).
    sigma2 : array of shape (N//2 + 1,)
        Noise power per shell.
    log_prior : array of shape (K,)
        Log class priors (running class sizes).
    resolution_schedule_A : list of float
        Resolution of each iteration so far (Angstrom).
    log_likelihood : list of float
        Mean marginal log-likelihood per particle of each mini-batch so far.
    rng_state : dict
        State of the seeded ``PCG64`` generator (``Generator.bit_generator.state``).
    """

    iteration: int
    volumes: Array
    sigma2: Array
    log_prior: Array
    resolution_schedule_A: list[float]
    log_likelihood: list[float]
    rng_state: dict[str, Any]


def mirror_volume(volume: Array) -> Array:
    """The mirror image of ``volume`` (N, N, N) through the plane ``z = N//2`` (other hand)."""
    xp = array_module(volume)
    n = volume.shape[0]
    flipped = volume[::-1]
    return flipped if n % 2 else xp.roll(flipped, 1, axis=0)


@dataclass(frozen=True)
class HandChoice:
    """Output of :func:`choose_hand`.

    Attributes
    ----------
    mirrored : bool
        Whether the mirror image of the volume fits the reference better than the volume.
    correlation, mirror_correlation : float
        Best normalised cross-correlation with the reference over rotations and translations,
        of the volume and of its mirror image, at the comparison's resolution.
    rotation : ndarray of shape (3, 3)
        The better hand's best rotation at that resolution, in index space ``(z, y, x)``
        about the box centre (as :attr:`HandComparison.rotation`).
    """

    mirrored: bool
    correlation: float
    mirror_correlation: float
    rotation: npt.NDArray[np.float64]


@dataclass(frozen=True)
class HandComparison(HandChoice):
    """Output of :func:`compare_hands`: the :class:`HandChoice` at full size, and the superposition.

    Attributes
    ----------
    rotation : ndarray of shape (3, 3)
        Rotation in index space ``(z, y, x)``: the aligned map at voxel ``o`` is the better
        hand's volume at ``rotation @ (o - c) + c - shift_px``, with ``c = N//2``.
    shift_px : ndarray of shape (3,)
        Translation ``(dz, dy, dx)`` applied after the rotation (px).
    aligned : array of shape (N, N, N)
        The volume in the better hand, rotated and translated onto the reference.
    """

    shift_px: npt.NDArray[np.float64]
    aligned: Array


def _rotate(volume: Array, rotation: npt.NDArray[np.float64], order: int = 1) -> Array:
    """``volume`` resampled at ``rotation @ (o - c) + c`` for each voxel ``o`` (index space)."""
    xp = array_module(volume)
    centre = np.full(3, volume.shape[0] // 2, dtype=np.float64)
    return ndimage_module(volume).affine_transform(
        volume,
        xp.asarray(rotation),
        offset=xp.asarray(centre - rotation @ centre),
        order=order,
        mode="constant",
    )


def _best_fit(
    volume: Array, reference_spectrum: Array, rotations: npt.NDArray[np.float64]
) -> tuple[float, int, npt.NDArray[np.float64]]:
    """Best normalised cross-correlation of rotated ``volume`` with the reference.

    The translation is the sub-pixel peak of the cross-correlation, and the correlation is
    evaluated there, so that rotations are not ranked by how close their translation lies to
    a whole pixel. Returns the correlation, the index of the best rotation and its
    translation (px).
    """
    xp = array_module(volume)
    n = volume.shape[0]
    shape = (n, n, n)
    reference = irfftn(reference_spectrum, shape)
    ref_norm = float(xp.sqrt(xp.sum(reference * reference)))
    best: tuple[float, int, npt.NDArray[np.float64]] = (-np.inf, 0, np.zeros(3))
    for i, rotation in enumerate(rotations):
        spectrum = rfftn(_rotate(volume, rotation, order=3))
        spectrum[0, 0, 0] = 0
        cc = irfftn(reference_spectrum * xp.conj(spectrum), shape)
        shift = _subpixel_peak(to_host(cc), int(xp.argmax(cc)))
        moved = irfftn(fourier_shift(spectrum, xp.asarray(shift), shape), shape)
        norm = float(xp.sqrt(xp.sum(moved * moved))) * ref_norm
        score = float(xp.sum(moved * reference)) / max(norm, 1e-30)
        if score > best[0]:
            best = (score, i, shift)
    return best


def _subpixel_peak(cc: npt.NDArray[np.float32], peak: int) -> npt.NDArray[np.float64]:
    """Translation (px) at the peak of a circular cross-correlation, by a parabola per axis."""
    n = cc.shape[0]
    index = np.array(np.unravel_index(peak, cc.shape))
    shift = np.where(index > n // 2, index - n, index).astype(np.float64)
    for axis in range(3):
        around = [tuple(index + d * np.eye(3, dtype=int)[axis]) for d in (-1, 0, 1)]
        left, centre, right = (np.float64(cc[tuple(np.mod(a, n))]) for a in around)
        shift[axis] += parabola_vertex(left, centre, right)
    return shift


def _refine_locally(
    volume: Array,
    reference_spectrum: Array,
    rotation: npt.NDArray[np.float64],
    *,
    step_deg: float,
    n_rounds: int,
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``rotation`` refined by ``n_rounds`` rounds of 27 small turns, steps halving.

    Returns the correlation, rotation and translation (px) of the last round's best fit (the
    turns include the identity), or of ``rotation`` itself after no rounds.
    """
    if n_rounds == 0:
        score, _, shift = _best_fit(volume, reference_spectrum, rotation[None])
    for _ in range(n_rounds):
        candidates = local_perturbations(step_deg).astype(np.float64) @ rotation
        score, index, shift = _best_fit(volume, reference_spectrum, candidates)
        rotation = candidates[index]
        step_deg /= 2
    return score, rotation, shift


def choose_hand(
    volume: Array,
    reference: Array,
    *,
    pixel_size_A: float,
    resolution_A: float = 20.0,
    angle_step_deg: float = 20.0,
    n_local_rounds: int = 3,
) -> HandChoice:
    """Decide the hand of ``volume``: does it or its mirror image fit ``reference`` better?

    Both hands are aligned to the reference on copies low-passed and Fourier cropped to
    ``resolution_A``: a global search over rotations (a grid of about ``angle_step_deg``,
    :func:`~cryokube.processing.algorithms.refine.so3_grid`) and translations (the peak of the
    FFT cross-correlation), then ``n_local_rounds`` rounds of 27 small rotations with steps
    halving from ``angle_step_deg / 2``. The hand whose best fit correlates better wins; the
    hand is a low-resolution property, and the crop keeps the noise of an unfiltered map out of
    the decision. Single-particle data cannot tell the hands apart (Punjani et al. 2017 [1]_),
    so a reference decides.

    Parameters
    ----------
    volume, reference : arrays of shape (N, N, N)
        Maps with the same box and pixel size.
    pixel_size_A : float
        Voxel size (A).
    resolution_A : float, optional
        Resolution of the comparison (A).
    angle_step_deg : float, optional
        Spacing of the global rotation grid.
    n_local_rounds : int, optional
        Local refinement rounds.

    Returns
    -------
    HandChoice
    """
    if volume.shape != reference.shape or volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(
            f"volume and reference must be cubes of one shape, got {volume.shape} and "
            f"{reference.shape}"
        )
    n = int(volume.shape[0])
    small = int(min(n, max(8, 2 * np.ceil(n * pixel_size_A / resolution_A))))
    grid = so3_grid(angle_step_deg).astype(np.float64)
    coarse_reference = rfftn(fourier_resample(as_float(reference), (small,) * 3))
    coarse_reference[0, 0, 0] = 0
    fits = []
    for candidate in (as_float(volume), mirror_volume(as_float(volume))):
        coarse = fourier_resample(candidate, (small,) * 3)
        _, index, _ = _best_fit(coarse, coarse_reference, grid)
        score, rotation, _ = _refine_locally(
            coarse,
            coarse_reference,
            grid[index],
            step_deg=angle_step_deg / 2,
            n_rounds=n_local_rounds,
        )
        fits.append((score, rotation))
    mirrored = fits[1][0] > fits[0][0]
    return HandChoice(
        mirrored=bool(mirrored),
        correlation=float(fits[0][0]),
        mirror_correlation=float(fits[1][0]),
        rotation=fits[int(mirrored)][1],
    )


def compare_hands(
    volume: Array,
    reference: Array,
    *,
    pixel_size_A: float,
    resolution_A: float = 20.0,
    angle_step_deg: float = 20.0,
    n_local_rounds: int = 3,
) -> HandComparison:
    """Decide the hand of ``volume`` and superpose the better hand on ``reference``.

    :func:`choose_hand` decides at ``resolution_A``; the winner is then refined at full size
    (``n_local_rounds`` more rounds of 27 small rotations from the last coarse step) and
    translated onto the reference (the sub-pixel peak of the cross-correlation).

    Parameters
    ----------
    volume, reference : arrays of shape (N, N, N)
        Maps with the same box and pixel size.
    pixel_size_A : float
        Voxel size (A).
    resolution_A : float, optional
        Resolution of the comparison (A).
    angle_step_deg : float, optional
        Spacing of the global rotation grid.
    n_local_rounds : int, optional
        Local refinement rounds, coarse and then at full size.

    Returns
    -------
    HandComparison
    """
    choice = choose_hand(
        volume,
        reference,
        pixel_size_A=pixel_size_A,
        resolution_A=resolution_A,
        angle_step_deg=angle_step_deg,
        n_local_rounds=n_local_rounds,
    )
    n = int(volume.shape[0])
    candidate = mirror_volume(as_float(volume)) if choice.mirrored else as_float(volume)
    full_reference = rfftn(as_float(reference))
    full_reference[0, 0, 0] = 0
    _, rotation, shift = _refine_locally(
        candidate,
        full_reference,
        choice.rotation,
        step_deg=angle_step_deg / 2**n_local_rounds,
        n_rounds=n_local_rounds,
    )
    spectrum = fourier_shift(rfftn(_rotate(candidate, rotation, order=3)), shift, (n, n, n))
    return HandComparison(
        mirrored=choice.mirrored,
        correlation=choice.correlation,
        mirror_correlation=choice.mirror_correlation,
        rotation=rotation,
        shift_px=shift,
        aligned=irfftn(spectrum, (n, n, n)),
    )


def _class_scores(
    spectra: Array,
    transfer: Array,
    refs: Array,
    *,
    inv_sigma2: Array,
    unshift: Array,
    log_prior: Array,
) -> Array:
    """Log joint probabilities (b, K, T * R) of class, shift and pose (up to a constant).

    ``refs`` (K, R, M) holds each class's slices; index ``s`` of the last axis is shift
    ``s // R`` and pose ``s % R``.
    """
    xp = array_module(spectra)
    scores = xp.stack(
        [
            pose_scores(spectra, transfer, class_refs, inv_sigma2=inv_sigma2, unshift=unshift)
            for class_refs in refs
        ],
        axis=1,
    )
    b, k = scores.shape[:2]
    return scores.reshape(b, k, -1) + log_prior[None, :, None]


def _normalise(scores: Array) -> tuple[Array, Array]:
    """Posterior probabilities over all axes but the first, and each row's log evidence."""
    xp = array_module(scores)
    flat = scores.reshape(scores.shape[0], -1)
    top = flat.max(axis=-1, keepdims=True)
    prob = xp.exp(flat - top)
    total = prob.sum(axis=-1, keepdims=True)
    return (prob / total).reshape(scores.shape), xp.log(total[:, 0]) + top[:, 0]


def ab_initio(
    images: Array,
    *,
    pixel_size_A: float,
    ctf: Array | None = None,
    n_classes: int = 1,
    n_iterations: int = 40,
    batch_size: int = 200,
    initial_resolution_A: float = 35.0,
    final_resolution_A: float = 12.0,
    angle_step_deg: float = 15.0,
    max_shift_px: int = 2,
    n_top_poses: int = 5,
    learning_rate: float = 0.5,
    class_similarity: float = 0.5,
    mask_radius_px: float | None = None,
    seed: int = 0,
    resume: AbInitioState | None = None,
    on_iteration: Callable[[AbInitioState], None] | None = None,
) -> AbInitioResult:
    """Build ``n_classes`` low-resolution volumes from particle images with unknown poses.

    Parameters
    ----------
    images : array of shape (B, N, N)
        Particle images, centre near pixel ``N//2``.
    pixel_size_A : float
        Pixel size in Angstrom.
    ctf : array of shape (B, N, N//2 + 1), optional
        Per-particle CTF on the ``rfft2`` grid.
    n_classes : int, optional
        Number of classes ``K``.
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
        Most probable (pose, shift) pairs per particle and class inserted in the class's
        back-projection.
    learning_rate : float, optional
        Step ``eta`` in (0, 1].
    class_similarity : float, optional
        Share ``s`` in [0, 1) of each particle's class responsibility spread evenly over the
        classes at the first iteration, falling linearly to 0 at half the iterations, so that
        no class starves before the classes differ (cryoSPARC's annealed class similarity).
    mask_radius_px : float, optional
        Radius of the soft spherical mask; default 0.4 N.
    seed : int, optional
        Seed of the initial volumes and the mini-batches.
    resume : AbInitioState, optional
        Continue after ``resume.iteration`` from a state that ``on_iteration`` gave for the same
        images and arguments; the result is the same as that of an uninterrupted run.
    on_iteration : callable, optional
        Called with the state after every iteration but the last (to save a checkpoint or
        report progress).

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
    if not 1 <= n_classes <= b:
        raise ValueError(f"n_classes must be between 1 and the {b} particles, got {n_classes}")
    if not 0 < learning_rate <= 1:
        raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
    if not 0 <= class_similarity < 1:
        raise ValueError(f"class_similarity must be in [0, 1), got {class_similarity}")
    if resume is not None and not 0 < resume.iteration < n_iterations:
        raise ValueError(
            f"resume.iteration must be in 1..{n_iterations - 1}, got {resume.iteration}"
        )
    if resume is not None and resume.volumes.shape != (n_classes, n, n, n):
        raise ValueError(
            f"resume.volumes must have shape ({n_classes}, {n}, {n}, {n}), "
            f"got {resume.volumes.shape}"
        )
    xp = array_module(x)
    mask = soft_spherical_mask(
        (n, n, n), radius_px=0.4 * n if mask_radius_px is None else mask_radius_px, xp=xp
    )
    grid = xp.asarray(so3_grid(angle_step_deg))
    r = int(grid.shape[0])
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

    def alignment(resolution_A: float) -> tuple[FourierBand, Array, Array, Array]:
        """The band, its inverse noise power, the class slices and the shift phases."""
        band = fourier_band(n, radius_shells=n * pixel_size_A / resolution_A, xp=xp)
        inv_sigma2 = band.hermitian / xp.maximum(sigma2[band.shells], np.float32(1e-12))
        refs = [
            extract_slices(fourier_volume(v * mask), grid, max_frequency=band.max_frequency)
            for v in volumes
        ]
        refs = xp.stack(refs).reshape(n_classes, r, -1)[:, :, band.index]
        return band, inv_sigma2, refs, unshift_phases(band, shift_grid)

    def joint_posterior(
        sel: Array, band: FourierBand, inv_sigma2: Array, refs: Array, unshift: Array
    ) -> tuple[Array, Array, Array, Array]:
        """Posterior (b, K, T * R) of particles ``sel``, log evidence, spectra and CTF."""
        spectra = rfft2(x[sel]).reshape(int(sel.size), -1)[:, band.index]
        transfer = transfer_of(sel, band.index)
        scores = _class_scores(
            spectra, transfer, refs, inv_sigma2=inv_sigma2, unshift=unshift, log_prior=log_prior
        )
        prob, evidence = _normalise(scores)
        return prob, evidence, spectra, transfer

    full_band = fourier_band(n, radius_shells=n // 2, xp=xp)
    if resume is None:
        rng = np.random.default_rng(seed)
        # random start: each class from its own batch back-projected at random poses, low-passed
        volumes: list[Array] = []
        for _ in range(n_classes):
            first = xp.asarray(rng.choice(b, size=batch_size, replace=False))
            acc = new_accumulator(n, xp=xp)
            random_poses = xp.asarray(
                Rotation.random(batch_size, random_state=rng).as_matrix().astype(np.float32)
            )
            insert_slices(
                acc,
                centred_spectra(x[first]),
                random_poses,
                ctf=None if ctf is None else ctf[first],
            )
            volumes.append(
                low_pass(
                    volume_from_accumulator(acc) * mask,
                    resolution_A=initial_resolution_A,
                    pixel_size_A=pixel_size_A,
                )
            )
        log_prior = xp.full(n_classes, -np.log(n_classes), dtype=np.float32)
        spectra0 = rfft2(x[first]).reshape(batch_size, -1)[:, full_band.index]
        sigma2 = shell_noise_power(spectra0.real**2 + spectra0.imag**2, full_band, n_shells)
        schedule: list[float] = []
        log_likelihood: list[float] = []
        start = 0
    else:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = resume.rng_state
        volumes = list(xp.asarray(resume.volumes))
        sigma2 = xp.asarray(resume.sigma2)
        log_prior = xp.asarray(resume.log_prior)
        schedule = list(resume.resolution_schedule_A)
        log_likelihood = list(resume.log_likelihood)
        start = resume.iteration
    for iteration in range(start, n_iterations):
        fraction = iteration / max(n_iterations - 1, 1)
        resolution_A = float(
            initial_resolution_A * (final_resolution_A / initial_resolution_A) ** fraction
        )
        schedule.append(resolution_A)
        band, inv_sigma2, refs, unshift = alignment(resolution_A)
        batch = xp.asarray(rng.choice(b, size=batch_size, replace=False))
        prob, evidence, spectra, transfer = joint_posterior(batch, band, inv_sigma2, refs, unshift)
        log_likelihood.append(float(xp.mean(evidence)))
        posterior = prob.sum(axis=-1)
        similarity = class_similarity * max(0.0, 1.0 - 2.0 * fraction)
        responsibility = (1 - similarity) * posterior + similarity / n_classes
        rows = xp.arange(batch_size)[:, None]
        # noise power from the residual at each particle's best class, shift and pose
        best = prob.reshape(batch_size, -1).argmax(axis=-1)
        best_class, best_shift, best_pose = (
            best // (r * len(shift_grid)),
            (best // r) % len(shift_grid),
            best % r,
        )
        residual = (
            xp.abs(spectra * unshift[best_shift] - transfer * refs[best_class, best_pose]) ** 2
        )
        sigma2 = xp.where(
            xp.arange(n_shells) > 0,
            xp.maximum(shell_noise_power(residual, band, n_shells), 0),
            sigma2,
        )
        sigma2 = xp.where(sigma2 > 0, sigma2, xp.max(sigma2)).astype(np.float32)
        k = min(n_top_poses, prob.shape[-1])
        for c in range(n_classes):
            top = xp.argsort(prob[:, c], axis=-1)[:, ::-1][:, :k]
            weights = prob[:, c][rows, top]
            weights = weights / xp.maximum(weights.sum(axis=-1, keepdims=True), 1e-30)
            weights = weights * responsibility[:, c : c + 1]
            acc = new_accumulator(n, xp=xp)
            member = xp.repeat(batch, k)
            insert_slices(
                acc,
                centred_spectra(x[member], shifts_px=shift_grid[(top // r).ravel()]),
                grid[(top % r).ravel()],
                ctf=None if ctf is None else ctf[member],
                weights=weights.ravel().astype(np.float32),
                max_frequency=band.max_frequency,
            )
            batch_volume = low_pass(
                volume_from_accumulator(acc) * mask,
                resolution_A=resolution_A,
                pixel_size_A=pixel_size_A,
            )
            volumes[c] = (1 - learning_rate) * volumes[c] + learning_rate * batch_volume
        log_prior = xp.log(
            xp.maximum(
                (1 - learning_rate) * xp.exp(log_prior)
                + learning_rate * responsibility.mean(axis=0),
                1e-6,
            )
        ).astype(np.float32)
        if on_iteration is not None and iteration + 1 < n_iterations:
            on_iteration(
                AbInitioState(
                    iteration=iteration + 1,
                    volumes=xp.stack(volumes),
                    sigma2=sigma2,
                    log_prior=log_prior,
                    resolution_schedule_A=list(schedule),
                    log_likelihood=list(log_likelihood),
                    rng_state=dict(rng.bit_generator.state),
                )
            )
    stack = xp.stack(volumes)
    if n_classes == 1:
        posterior = xp.ones((b, 1), dtype=np.float32)
    else:
        final = alignment(schedule[-1])
        posterior = xp.concatenate(
            [
                joint_posterior(xp.arange(start, min(start + _CHUNK, b)), *final)[0].sum(axis=-1)
                for start in range(0, b, _CHUNK)
            ]
        )
    classes = np.asarray(to_host(posterior.argmax(axis=-1)), dtype=np.int64)
    counts = np.bincount(classes, minlength=n_classes)
    order = np.argsort(-counts, kind="stable")
    relabel = np.argsort(order)
    return AbInitioResult(
        stack[xp.asarray(order)],
        posterior[:, xp.asarray(order)],
        relabel[classes],
        counts[order],
        schedule,
        log_likelihood,
    )
