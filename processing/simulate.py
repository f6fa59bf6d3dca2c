"""Deterministic simulated cryo-EM data with known truth, for tests, the demo and benchmarks.

Four generators, each seeded and each returning its arrays with a frozen truth object in
physical units:

* :func:`phantom_volume`: an asymmetric, protein-like density of Gaussian "atoms" (one per
  residue, on chains that fill a few domains), or use any MRC map read by
  :func:`cryokube.processing.io.mrc.read_mrc` in its place;
* :func:`simulate_particles`: particle images at known poses and shifts, with a known CTF and
  Gaussian noise at a chosen SNR;
* :func:`simulate_micrograph`: particles at known positions on an ice background with a carbon
  edge, a CTF and noise;
* :func:`simulate_movie`: counting-camera frames with known global and smoothly varying local
  drift, a known dose per frame, Poisson noise, a gain reference and hot pixels;
  :func:`save_movie` writes it as LZW TIFF or MRC with its gain reference.

Conventions are those of ``docs/conventions.md``: poses are RELION ZYZ Euler angles, the CTF is
:func:`cryokube.processing.ctf.ctf_2d` (protein dark in underfocus, as in raw images), images
are ``[y, x]`` with the particle centre at pixel ``N//2``, and positions and shifts in truth
objects are ``(x, y)`` pairs. The simulator works on host (numpy) arrays: every random draw
comes from one seeded :class:`numpy.random.Generator`, so a seed gives the same data on every
machine; job code moves results to a device when it needs to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.ndimage as ndi
from cryokube.processing.algorithms.projection import extract_slices, fourier_volume
from cryokube.processing.backend import fourier_shift, irfft2, parallel_map, rfft2
from cryokube.processing.ctf import ctf_2d
from cryokube.processing.geometry import euler_to_axis_angle, euler_to_matrix, matrix_to_euler
from cryokube.processing.io.movies import write_movie_mrc, write_movie_tiff
from cryokube.processing.io.mrc import write_mrc
from scipy.spatial.transform import Rotation

__all__ = [
    "Micrograph",
    "MicrographTruth",
    "Movie",
    "MovieTruth",
    "ParticleStack",
    "ParticleTruth",
    "Phantom",
    "phantom_volume",
    "random_euler_angles",
    "render_atoms",
    "save_movie",
    "simulate_micrograph",
    "simulate_movie",
    "simulate_particles",
]

FloatArray = npt.NDArray[np.float32]

_RESIDUE_STEP_A = 3.8
"""Distance between consecutive C-alpha atoms of a protein chain."""

_VOLUME_PER_RESIDUE_A3 = 130.0
"""Protein volume per residue (about 1.22 A^3 per Dalton at 110 Da per residue)."""

_MAX_CLIPPED_VARIANCE = 0.2
"""Largest fraction of a movie image's variance that clipping at zero intensity may change
(``1 - r^2`` between the clipped and the linear image). In a default-demo micrograph without
ice texture, contrast 0.1 changes 15% and picking is unaffected; 0.2 changes 34% and the
clipped particle cores give the blob picker false picks at scores above 30."""


# ----------------------------------------------------------------------------- phantom


@dataclass(frozen=True)
class Phantom:
    """A simulated density with the atoms that made it.

    Attributes
    ----------
    volume : float32 ndarray of shape (N, N, N)
        Density indexed ``[z, y, x]``; each atom adds a 3D Gaussian whose voxel sum is its
        weight.
    pixel_size_A : float
        Voxel size in Å.
    atom_positions_A : float64 ndarray of shape (n_atoms, 3)
        Atom centres ``(x, y, z)`` in Å from the centre voxel ``N//2``.
    atom_weights : float64 ndarray of shape (n_atoms,)
        Integrated density of each atom.
    atom_sigma_A : float
        Standard deviation of every atom's Gaussian, in Å.
    """

    volume: FloatArray
    pixel_size_A: float
    atom_positions_A: npt.NDArray[np.float64]
    atom_weights: npt.NDArray[np.float64]
    atom_sigma_A: float


def _check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _protein_chains(
    rng: np.random.Generator, radius_A: float, n_domains: int, n_atoms: int | None
) -> npt.NDArray[np.float64]:
    """Residue positions (n, 3) in Å: persistent random walks confined to spherical domains."""
    # domain centres inside an elongated ellipsoid, so no symmetry axis is favoured
    semi_axes = radius_A * np.array([0.55, 0.4, 0.3])
    centres = np.empty((n_domains, 3))
    filled = 0
    while filled < n_domains:
        p = rng.uniform(-1, 1, 3)
        if np.sum(p * p) <= 1:
            centres[filled] = p * semi_axes
            filled += 1
    radii = radius_A * rng.uniform(0.3, 0.45, n_domains)
    if n_atoms is None:
        n_atoms = int(np.sum(4 / 3 * np.pi * radii**3) / _VOLUME_PER_RESIDUE_A3)
        n_atoms = int(np.clip(n_atoms, 60, 30000))
    steps = -(-n_atoms // n_domains)
    pos = centres + rng.normal(scale=0.3, size=(n_domains, 3)) * radii[:, None]
    direction = rng.normal(size=(n_domains, 3))
    out = np.empty((steps, n_domains, 3))
    for i in range(steps):
        direction = direction / np.linalg.norm(direction, axis=1, keepdims=True)
        pos = pos + _RESIDUE_STEP_A * direction
        out[i] = pos
        # persistence with a random turn, mirrored back inwards outside the chain's domain
        direction = direction + 0.7 * rng.normal(size=(n_domains, 3))
        outward = pos - centres
        dist = np.linalg.norm(outward, axis=1, keepdims=True)
        normal = outward / np.maximum(dist, 1e-9)
        along = np.sum(direction * normal, axis=1)
        leaving = (dist[:, 0] > radii) & (along > 0)
        direction[leaving] -= 2 * along[leaving, None] * normal[leaving]
    return out.transpose(1, 0, 2).reshape(-1, 3)[:n_atoms]


def render_atoms(
    box_size: int,
    pixel_size_A: float,
    positions_A: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    atom_sigma_A: float,
) -> FloatArray:
    """A density map of isotropic Gaussian atoms, sampled on a cubic grid.

    Parameters
    ----------
    box_size : int
        Edge length ``N`` of the box in px.
    pixel_size_A : float
        Voxel size in Å.
    positions_A : array of shape (n_atoms, 3)
        Atom centres ``(x, y, z)`` in Å from the centre voxel ``N//2``.
    weights : array of shape (n_atoms,)
        Integrated density of each atom (its voxel sum, apart from parts outside the box).
    atom_sigma_A : float
        Gaussian standard deviation in Å.

    Returns
    -------
    volume : float32 ndarray of shape (N, N, N)
        Indexed ``[z, y, x]``; each atom is splatted within 4 sigma of its centre.
    """
    _check_positive(atom_sigma_A, "atom_sigma_A")
    positions = np.asarray(positions_A, dtype=np.float64).reshape(-1, 3)
    masses = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(masses) != len(positions):
        raise ValueError(
            f"weights must have one entry per atom ({len(positions)}), got {len(masses)}"
        )
    n = box_size
    sigma_px = atom_sigma_A / pixel_size_A
    half = int(np.ceil(4 * sigma_px))
    offsets = np.arange(-half, half + 1)
    width = offsets.size
    flat = np.zeros(n**3, dtype=np.float64)
    centres = positions / pixel_size_A + n // 2  # (x, y, z) in voxels
    norm = 1.0 / (np.sqrt(2 * np.pi) * sigma_px) ** 3
    chunk = max(1, 2_000_000 // width**3)
    for start in range(0, len(centres), chunk):
        c = centres[start : start + chunk]
        w = masses[start : start + chunk]
        base = np.rint(c).astype(np.int64)
        idx = base[:, :, None] + offsets  # (m, 3, width)
        g = np.exp(-((idx - c[:, :, None]) ** 2) / (2 * sigma_px**2))
        g[(idx < 0) | (idx >= n)] = 0.0
        idx = np.clip(idx, 0, n - 1)
        values = (
            (w * norm)[:, None, None, None]
            * g[:, 2, :, None, None]
            * g[:, 1, None, :, None]
            * g[:, 0, None, None, :]
        )
        linear = (
            idx[:, 2, :, None, None] * n * n
            + idx[:, 1, None, :, None] * n
            + idx[:, 0, None, None, :]
        )
        flat += np.bincount(linear.ravel(), weights=values.ravel(), minlength=n**3)
    return flat.reshape(n, n, n).astype(np.float32)


def phantom_volume(
    box_size: int = 64,
    pixel_size_A: float = 2.0,
    *,
    n_atoms: int | None = None,
    n_domains: int = 4,
    atom_sigma_A: float | None = None,
    seed: int = 0,
) -> Phantom:
    """An asymmetric protein-like density of Gaussian atoms (one per residue).

    Parameters
    ----------
    box_size : int, optional
        Edge length ``N`` of the cubic box in px (16 to 512; 64-256 are typical).
    pixel_size_A : float, optional
        Voxel size in Å.
    n_atoms : int, optional
        Number of residues; by default the domains are filled at protein density
        (130 Å^3 per residue), between 60 and 30000.
    n_domains : int, optional
        Number of globular domains the chains fill.
    atom_sigma_A : float, optional
        Gaussian standard deviation of each atom in Å; default ``max(2 Å, 1 px)`` so that the
        map is sampled without aliasing.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    Phantom
        The volume and its atoms. The particle fits in a sphere of diameter about 0.6 N px.
    """
    if not 16 <= box_size <= 512:
        raise ValueError(f"box_size must be from 16 to 512 px, got {box_size}")
    _check_positive(pixel_size_A, "pixel_size_A")
    if n_domains < 1:
        raise ValueError(f"n_domains must be at least 1, got {n_domains}")
    sigma_A = max(2.0, pixel_size_A) if atom_sigma_A is None else atom_sigma_A
    if sigma_A < 0.5 * pixel_size_A:
        raise ValueError(f"atom_sigma_A must be at least half a pixel, got {sigma_A}")
    rng = np.random.default_rng(seed)
    radius_A = 0.3 * box_size * pixel_size_A
    positions = _protein_chains(rng, radius_A - 2 * sigma_A, n_domains, n_atoms)
    weights = rng.uniform(0.8, 1.2, len(positions))
    volume = render_atoms(box_size, pixel_size_A, positions, weights, atom_sigma_A=sigma_A)
    return Phantom(volume, float(pixel_size_A), positions, weights, float(sigma_A))


# ---------------------------------------------------------------------------- particles


def random_euler_angles(n: int, *, seed: int | np.random.Generator = 0) -> npt.NDArray[np.float64]:
    """Poses drawn uniformly from SO(3), as RELION Euler angles (n, 3) in degrees."""
    rng = np.random.default_rng(seed)
    matrices = Rotation.random(n, random_state=rng).as_matrix()
    return np.asarray(matrix_to_euler(matrices), dtype=np.float64)


@dataclass(frozen=True)
class ParticleTruth:
    """What a simulated particle stack was made from.

    Attributes
    ----------
    pixel_size_A : float
        Pixel size in Å.
    euler_deg : ndarray of shape (n, 3)
        RELION ``(rot, tilt, psi)`` in degrees.
    shifts_px : ndarray of shape (n, 2)
        ``(x, y)`` translation in px applied to each projection: the particle centre sits at
        pixel ``(N//2 + x, N//2 + y)``.
    defocus_u_A, defocus_v_A, astig_angle_deg : ndarray of shape (n,)
        Per-particle defocus (Å, underfocus positive) and astigmatism angle (deg from x).
    voltage_kV, cs_mm, amp_contrast, b_factor_A2 : float
        Optics shared by the stack.
    snr : float
        Requested signal-to-noise ratio: mean variance of the noise-free images over the
        box divided by ``noise_sigma**2``.
    noise_sigma : float
        Standard deviation of the added white Gaussian noise.
    """

    pixel_size_A: float
    euler_deg: npt.NDArray[np.float64]
    shifts_px: npt.NDArray[np.float64]
    defocus_u_A: npt.NDArray[np.float64]
    defocus_v_A: npt.NDArray[np.float64]
    astig_angle_deg: npt.NDArray[np.float64]
    voltage_kV: float
    cs_mm: float
    amp_contrast: float
    b_factor_A2: float
    snr: float
    noise_sigma: float

    @property
    def rotations(self) -> npt.NDArray[np.float64]:
        """Rotation matrices (n, 3, 3) of the poses (RELION convention)."""
        return np.asarray(euler_to_matrix(self.euler_deg))

    @property
    def pose_rad(self) -> npt.NDArray[np.float64]:
        """cryoSPARC ``alignments3D/pose`` axis-angle vectors (n, 3) in radians."""
        return np.asarray(euler_to_axis_angle(self.euler_deg))


@dataclass(frozen=True)
class ParticleStack:
    """Simulated particle images with their truth; ``clean`` is kept only on request."""

    images: FloatArray
    truth: ParticleTruth
    clean: FloatArray | None = None


def _render_views(
    volume: npt.ArrayLike,
    rotations: npt.NDArray[np.float64],
    shifts_px: npt.NDArray[np.float64],
    ctf: FloatArray | None,
    *,
    oversampling: int,
    chunk: int = 256,
) -> FloatArray:
    """Projections (n, N, N) at ``rotations``, times ``ctf`` (n, N, N//2+1), shifted (x, y)."""
    fvol = fourier_volume(np.asarray(volume, dtype=np.float32), oversampling=oversampling)
    n = fvol.box_size
    out = np.empty((len(rotations), n, n), dtype=np.float32)
    for start in range(0, len(rotations), chunk):
        stop = start + chunk
        spectra = extract_slices(fvol, rotations[start:stop])
        if ctf is not None:
            spectra = spectra * ctf[start:stop]
        spectra = fourier_shift(spectra, shifts_px[start:stop, ::-1], (n, n))
        out[start:stop] = irfft2(spectra, (n, n))
    return out


def simulate_particles(
    volume: npt.ArrayLike,
    pixel_size_A: float,
    n_particles: int,
    *,
    snr: float = 0.1,
    euler_deg: npt.ArrayLike | None = None,
    max_shift_px: float = 2.0,
    defocus_range_A: tuple[float, float] = (8000.0, 25000.0),
    max_astigmatism_A: float = 1000.0,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amp_contrast: float = 0.07,
    b_factor_A2: float = 50.0,
    oversampling: int = 2,
    keep_clean: bool = False,
    seed: int = 0,
) -> ParticleStack:
    """Particle images of a volume at known poses, shifts and CTFs, with Gaussian noise.

    Parameters
    ----------
    volume : array of shape (N, N, N)
        Density ``[z, y, x]`` (a :class:`Phantom`'s ``volume`` or any map).
    pixel_size_A : float
        Pixel size of volume and images in Å.
    n_particles : int
        Number of images.
    snr : float, optional
        Signal-to-noise ratio: mean over the stack of the variance of each noise-free image
        over the box, divided by the noise variance (0.01-0.1 is typical of real data).
    euler_deg : array of shape (n_particles, 3), optional
        RELION Euler angles in degrees; uniform on SO(3) by default.
    max_shift_px : float, optional
        Shifts are uniform in ``[-max_shift_px, max_shift_px]`` px along x and y.
    defocus_range_A : tuple of float, optional
        Mean defocus is uniform in this range (Å, underfocus positive).
    max_astigmatism_A : float, optional
        ``defocus_u_A - defocus_v_A`` is uniform in ``[0, max_astigmatism_A]``; angles are
        uniform in [-180, 180) deg.
    voltage_kV, cs_mm, amp_contrast, b_factor_A2 : float, optional
        Optics (kV, mm, fraction, Å^2).
    oversampling : int, optional
        Padding of the projector (see :func:`cryokube.processing.algorithms.projection.project`).
    keep_clean : bool, optional
        Also return the noise-free images.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    ParticleStack
        ``images`` (n_particles, N, N) float32 and the truth. Protein is dark (the physical CTF
        sign of raw images; invert for RELION-style white particles).
    """
    _check_positive(pixel_size_A, "pixel_size_A")
    _check_positive(snr, "snr")
    if n_particles < 1:
        raise ValueError(f"n_particles must be at least 1, got {n_particles}")
    low, high = defocus_range_A
    if not 0 < low <= high:
        raise ValueError(
            f"defocus_range_A must be (low, high) with 0 < low <= high, got {low, high}"
        )
    rng = np.random.default_rng(seed)
    if euler_deg is None:
        angles = random_euler_angles(n_particles, seed=rng)
    else:
        angles = np.asarray(euler_deg, dtype=np.float64)
        if angles.shape != (n_particles, 3):
            raise ValueError(f"euler_deg must have shape ({n_particles}, 3), got {angles.shape}")
    shifts = rng.uniform(-max_shift_px, max_shift_px, (n_particles, 2))
    mean_defocus = rng.uniform(low, high, n_particles)
    astig = rng.uniform(0, max_astigmatism_A, n_particles)
    du, dv = mean_defocus + astig / 2, mean_defocus - astig / 2
    angle = rng.uniform(-180, 180, n_particles)
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"volume must be a cubic 3D array, got shape {vol.shape}")
    n = vol.shape[0]
    ctf = ctf_2d(
        (n, n), pixel_size_A, defocus_u_A=du, defocus_v_A=dv, astig_angle_deg=angle,
        voltage_kV=voltage_kV, cs_mm=cs_mm, amp_contrast=amp_contrast, b_factor_A2=b_factor_A2,
    )  # fmt: skip
    clean = _render_views(
        vol, np.asarray(euler_to_matrix(angles)), shifts, ctf, oversampling=oversampling
    )
    signal_var = float(np.mean(np.var(clean, axis=(-2, -1), dtype=np.float64)))
    sigma = float(np.sqrt(signal_var / snr))
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    images = clean + np.float32(sigma) * noise
    truth = ParticleTruth(
        float(pixel_size_A), angles, shifts, du, dv, angle, float(voltage_kV), float(cs_mm),
        float(amp_contrast), float(b_factor_A2), float(snr), sigma,
    )  # fmt: skip
    return ParticleStack(images, truth, clean if keep_clean else None)


# --------------------------------------------------------------------------- micrographs


@dataclass(frozen=True)
class MicrographTruth:
    """What a simulated micrograph was made from.

    Attributes
    ----------
    pixel_size_A : float
        Pixel size in Å.
    centres_px : ndarray of shape (n, 2)
        Particle centres ``(x, y)`` in px of the micrograph (column, row; sub-pixel).
    euler_deg : ndarray of shape (n, 3)
        RELION Euler angles of the particles, degrees.
    box_size : int
        Edge length of the particle box (px).
    defocus_u_A, defocus_v_A, astig_angle_deg : float
        The micrograph's CTF (Å, underfocus positive; degrees from x).
    voltage_kV, cs_mm, amp_contrast, b_factor_A2 : float
        Optics.
    carbon_mask : bool ndarray of shape (ny, nx)
        True over the carbon support film; no particle centre lies on it.
    snr : float
        Variance of the noise-free micrograph divided by ``noise_sigma**2``.
    noise_sigma : float
        Standard deviation of the added white Gaussian noise.
    """

    pixel_size_A: float
    centres_px: npt.NDArray[np.float64]
    euler_deg: npt.NDArray[np.float64]
    box_size: int
    defocus_u_A: float
    defocus_v_A: float
    astig_angle_deg: float
    voltage_kV: float
    cs_mm: float
    amp_contrast: float
    b_factor_A2: float
    carbon_mask: npt.NDArray[np.bool_]
    snr: float
    noise_sigma: float


@dataclass(frozen=True)
class Micrograph:
    """A simulated micrograph (ny, nx) float32 with its truth; ``clean`` only on request."""

    image: FloatArray
    truth: MicrographTruth
    clean: FloatArray | None = None


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> FloatArray:
    """Periodic Gaussian random field with correlation length ``scale_px``, mean 0, sd 1."""
    white = rng.standard_normal(shape, dtype=np.float32)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * scale_px) ** 2 * (kx**2 + ky**2)).astype(np.float32)
    field = irfft2(rfft2(white) * kernel, shape)
    field -= field.mean()
    return np.asarray(field / max(float(field.std()), 1e-12), dtype=np.float32)


def _place_centres(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    box: int,
    allowed: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Up to ``n`` centres (x, y), at least 0.8 box apart, boxes inside the image, on ``allowed``."""
    ny, nx = shape
    margin = box // 2 + 1
    candidates = np.column_stack(
        [rng.uniform(margin, nx - margin, 50 * n), rng.uniform(margin, ny - margin, 50 * n)]
    )
    chosen: list[npt.NDArray[np.float64]] = []
    for c in candidates:
        if not allowed[int(c[1]), int(c[0])]:
            continue
        if all(np.hypot(*(c - o)) >= 0.8 * box for o in chosen):
            chosen.append(c)
            if len(chosen) == n:
                break
    return np.array(chosen).reshape(-1, 2)


def simulate_micrograph(
    volume: npt.ArrayLike,
    pixel_size_A: float,
    *,
    shape: tuple[int, int] = (1024, 1024),
    n_particles: int = 30,
    snr: float = 0.05,
    defocus_u_A: float = 15000.0,
    defocus_v_A: float = 14000.0,
    astig_angle_deg: float = 30.0,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amp_contrast: float = 0.07,
    b_factor_A2: float = 50.0,
    ice_contrast: float = 0.3,
    ice_texture: float = 0.0,
    carbon_fraction: float = 0.2,
    keep_clean: bool = False,
    seed: int = 0,
) -> Micrograph:
    """Particles at known positions and poses on ice with a carbon edge, with a CTF and noise.

    Parameters
    ----------
    volume : array of shape (N, N, N)
        Particle density ``[z, y, x]``.
    pixel_size_A : float
        Pixel size in Å.
    shape : tuple of int, optional
        Micrograph shape ``(ny, nx)`` in px.
    n_particles : int, optional
        Number of particles; centres are at least 0.8 box apart, off the carbon.
    snr : float, optional
        Variance of the noise-free micrograph over the noise variance.
    defocus_u_A, defocus_v_A, astig_angle_deg : float, optional
        CTF of the micrograph (Å, underfocus positive; degrees from x).
    voltage_kV, cs_mm, amp_contrast, b_factor_A2 : float, optional
        Optics (kV, mm, fraction, Å^2).
    ice_contrast : float, optional
        Standard deviation of the smooth ice thickness variation, relative to the standard
        deviation of one particle's projection.
    ice_texture : float, optional
        Standard deviation of the amorphous ice's projected density, white to the pixel scale,
        relative to the standard deviation of one particle's projection. Under the CTF it
        gives Thon rings over the whole micrograph, as vitreous ice does in real exposures;
        without it only the particles (and carbon) carry them.
    carbon_fraction : float, optional
        Fraction of the area beyond a straight carbon edge (0 for none).
    keep_clean : bool, optional
        Also return the noise-free micrograph.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    Micrograph
        The image (ny, nx) float32 and its truth.

    Raises
    ------
    ValueError
        If ``n_particles`` do not fit on the ice of a micrograph of ``shape``.
    """
    _check_positive(pixel_size_A, "pixel_size_A")
    _check_positive(snr, "snr")
    if ice_texture < 0:
        raise ValueError(f"ice_texture must be non-negative, got {ice_texture}")
    if not 0 <= carbon_fraction < 0.9:
        raise ValueError(f"carbon_fraction must be in [0, 0.9), got {carbon_fraction}")
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"volume must be a cubic 3D array, got shape {vol.shape}")
    box = vol.shape[0]
    ny, nx = shape
    if min(shape) < 2 * box:
        raise ValueError(f"shape must be at least twice the box ({box} px) each way, got {shape}")
    rng = np.random.default_rng(seed)
    # carbon: the side of a random straight line that covers carbon_fraction of the area
    yy, xx = np.mgrid[0:ny, 0:nx]
    theta = rng.uniform(0, 2 * np.pi)
    along = np.cos(theta) * (xx - nx / 2) + np.sin(theta) * (yy - ny / 2)
    carbon = along > np.quantile(along, 1 - carbon_fraction) if carbon_fraction else along > np.inf
    centres = _place_centres(rng, shape, n_particles, box, ~carbon)
    if len(centres) < n_particles:
        raise ValueError(
            f"n_particles={n_particles} do not fit on the ice of a {shape} micrograph with "
            f"box {box} px (placed {len(centres)})"
        )
    angles = random_euler_angles(n_particles, seed=rng)
    whole = np.floor(centres).astype(np.int64)
    frac = centres - whole
    views = _render_views(vol, np.asarray(euler_to_matrix(angles)), frac, None, oversampling=2)
    particle_sd = float(np.mean(np.std(views, axis=(-2, -1))))
    potential = np.zeros(shape, dtype=np.float32)
    for (x0, y0), view in zip(whole - box // 2, views, strict=True):
        potential[y0 : y0 + box, x0 : x0 + box] += view
    ice = _smooth_field(rng, shape, scale_px=max(shape) / 16)
    potential += np.float32(ice_contrast * particle_sd) * ice
    if ice_texture:
        potential += np.float32(ice_texture * particle_sd) * rng.standard_normal(
            shape, dtype=np.float32
        )
    if carbon_fraction:
        texture = _smooth_field(rng, shape, scale_px=2.0)
        potential += np.float32(particle_sd) * carbon * (3.0 + 0.5 * texture)
    # mirror-pad so that the CTF's delocalisation does not wrap the carbon edge around
    pad = max(shape) // 8
    padded = np.pad(potential, pad, mode="reflect")
    ctf = ctf_2d(
        padded.shape, pixel_size_A, defocus_u_A=defocus_u_A, defocus_v_A=defocus_v_A,
        astig_angle_deg=astig_angle_deg, voltage_kV=voltage_kV, cs_mm=cs_mm,
        amp_contrast=amp_contrast, b_factor_A2=b_factor_A2,
    )  # fmt: skip
    clean = irfft2(rfft2(padded) * ctf, padded.shape)[pad : pad + ny, pad : pad + nx]
    clean = np.ascontiguousarray(clean)
    sigma = float(np.sqrt(np.var(clean, dtype=np.float64) / snr))
    image = clean + np.float32(sigma) * rng.standard_normal(shape, dtype=np.float32)
    truth = MicrographTruth(
        float(pixel_size_A), centres, angles, box, float(defocus_u_A), float(defocus_v_A),
        float(astig_angle_deg), float(voltage_kV), float(cs_mm), float(amp_contrast),
        float(b_factor_A2), carbon, float(snr), sigma,
    )  # fmt: skip
    return Micrograph(image, truth, clean if keep_clean else None)


# -------------------------------------------------------------------------------- movies


def _local_basis(x_px: Any, y_px: Any, shape: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Quadratic basis (5, ...) in coordinates centred on the frame, in units of its size."""
    ny, nx = shape
    u = (np.asarray(x_px, dtype=np.float64) - nx / 2) / nx
    v = (np.asarray(y_px, dtype=np.float64) - ny / 2) / ny
    return np.stack([u, v, u * u, u * v, v * v])


@dataclass(frozen=True)
class MovieTruth:
    """What a simulated movie was made from.

    The content of frame ``f`` at pixel ``(x, y)`` is the true image at
    ``(x, y) - displacement_px(x, y)[f]``: content moves by ``+displacement``.

    Attributes
    ----------
    pixel_size_A : float
        Pixel size in Å.
    dose_per_frame_e_per_A2 : float
        Electron dose per frame in e/Å^2 (the Poisson mean is this times ``pixel_size_A**2``
        times the image intensity, per pixel).
    drift_px : ndarray of shape (n_frames, 2)
        Global drift ``(x, y)`` in px of every frame relative to frame 0: the displacement at
        the frame centre.
    local_coefficients_px : ndarray of shape (2, 5)
        Local drift at the last frame, ``(x, y)`` rows, on the basis ``(u, v, u^2, uv, v^2)``
        with ``u = (x - nx/2)/nx`` and ``v = (y - ny/2)/ny``.
    local_time_profile : ndarray of shape (n_frames,)
        Fraction of the local drift reached at each frame (0 at frame 0, 1 at the last).
    image : float32 ndarray of shape (ny, nx)
        Expected intensity before drift (mean 1).
    gain : float32 ndarray of shape (ny, nx)
        Gain reference: ``frames * gain`` has expectation ``dose * image``; as RELION and
        MotionCor2 apply it (multiplied).
    hot_pixels : bool ndarray of shape (ny, nx)
        Pixels that count far too often in every frame.
    """

    pixel_size_A: float
    dose_per_frame_e_per_A2: float
    drift_px: npt.NDArray[np.float64]
    local_coefficients_px: npt.NDArray[np.float64]
    local_time_profile: npt.NDArray[np.float64]
    image: FloatArray
    gain: FloatArray
    hot_pixels: npt.NDArray[np.bool_]

    def local_drift_px(self, x_px: Any, y_px: Any) -> npt.NDArray[np.float64]:
        """Local drift ``(n_frames, ..., 2)`` (x, y) px at positions of any matching shape."""
        basis = _local_basis(x_px, y_px, self.image.shape)  # (5, ...)
        last = np.tensordot(self.local_coefficients_px, basis, axes=(1, 0))  # (2, ...)
        moved = np.moveaxis(last, 0, -1)
        return self.local_time_profile.reshape((-1,) + (1,) * moved.ndim) * moved

    def displacement_px(self, x_px: Any, y_px: Any) -> npt.NDArray[np.float64]:
        """Total displacement ``(n_frames, ..., 2)`` (x, y) px: global plus local drift."""
        local = self.local_drift_px(x_px, y_px)
        return local + self.drift_px.reshape((len(self.drift_px),) + (1,) * (local.ndim - 2) + (2,))


@dataclass(frozen=True)
class Movie:
    """Simulated counting frames (n_frames, ny, nx) uint8 or uint16 with their truth."""

    frames: npt.NDArray[np.unsignedinteger[Any]]
    truth: MovieTruth


def _drift_path(
    rng: np.random.Generator, n_frames: int, total_px: float
) -> npt.NDArray[np.float64]:
    """Beam-induced global drift (n_frames, 2): fast at first, slowing, gently curving."""
    t = np.arange(n_frames - 1, dtype=np.float64)
    speed = np.exp(-t / max(n_frames / 4, 1.0))
    heading = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.05, 0.05) * t
    steps = speed[:, None] * np.column_stack([np.cos(heading), np.sin(heading)])
    steps *= total_px / max(float(np.sum(np.hypot(steps[:, 0], steps[:, 1]))), 1e-12)
    return np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def _frame_model(truth: MovieTruth) -> Callable[[int], FloatArray]:
    """The expected intensity of frame ``f``: the true image moved by its displacement.

    A global drift alone is an exact Fourier phase ramp; with local drift the image's cubic
    spline coefficients are computed once and sampled at ``r - d_f(r)``. The returned function
    only reads shared arrays, so frames can be made on several threads.
    """
    image = truth.image
    shape = (image.shape[0], image.shape[1])
    if not np.any(truth.local_coefficients_px):
        spectrum = rfft2(image)

        def shifted(f: int) -> FloatArray:
            dx, dy = truth.drift_px[f]
            shift = np.array([dy, dx], dtype=np.float32)
            return np.asarray(irfft2(fourier_shift(spectrum, shift, shape), shape))

        return shifted
    coefficients = ndi.spline_filter(image, order=3, mode="grid-wrap", output=np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    last = truth.local_drift_px(xx, yy)[-1].astype(np.float32)  # (ny, nx, 2)

    def warped(f: int) -> FloatArray:
        dx, dy = truth.drift_px[f]
        fraction = truth.local_time_profile[f]
        coords = np.stack(
            [yy - (dy + fraction * last[..., 1]), xx - (dx + fraction * last[..., 0])]
        )
        return np.asarray(
            ndi.map_coordinates(
                coefficients, coords, order=3, mode="grid-wrap", prefilter=False, output=np.float32
            )
        )

    return warped


def _check_clipping(linear: FloatArray, clipped: FloatArray) -> None:
    """Refuse an image whose clipping at zero intensity changes it beyond a contrast change."""
    low = linear < 0
    if not np.any(low):
        return
    r = np.corrcoef(linear.ravel(), clipped.ravel())[0, 1]
    if 1.0 - r * r > _MAX_CLIPPED_VARIANCE:
        raise ValueError(
            f"image_contrast is too high for this image: {100 * np.mean(low):.2f}% of its pixels "
            f"(its darkest features, particle cores in a micrograph) would have negative "
            f"intensity, and clipping them changes {100 * (1 - r * r):.0f}% of the image's "
            f"variance (at most {100 * _MAX_CLIPPED_VARIANCE:.0f}%); lower image_contrast"
        )


def simulate_movie(
    image: npt.ArrayLike | None = None,
    *,
    shape: tuple[int, int] = (512, 512),
    pixel_size_A: float = 1.0,
    n_frames: int = 20,
    dose_per_frame_e_per_A2: float = 1.0,
    image_contrast: float = 0.2,
    total_drift_px: float = 8.0,
    local_drift_px: float = 1.0,
    gain_variation: float = 0.05,
    n_hot_pixels: int = 8,
    seed: int = 0,
) -> Movie:
    """Counting-camera movie frames with known drift, dose, gain and hot pixels.

    Each frame's expected counts are ``dose * pixel_size_A**2 * I(r - d_f(r)) / gain`` with
    ``I`` the true image (mean 1) and ``d_f`` the frame's displacement; counts are Poisson
    samples of that.

    Parameters
    ----------
    image : array of shape (ny, nx), optional
        Underlying image (a clean micrograph, for example); rescaled to mean 1 and standard
        deviation ``image_contrast``, clipped at 0. By default a smooth random texture.
        Sparse particles make a clean micrograph's values heavy-tailed (particle cores 15-30
        standard deviations from the mean), so a contrast that looks modest (0.2-0.35) drives
        the cores to zero intensity: a ``ValueError`` is raised when the clipping would change
        more than 20% of the image's variance (0.1 is about right for such an image).
    shape : tuple of int, optional
        Frame shape ``(ny, nx)`` in px when ``image`` is not given.
    pixel_size_A : float, optional
        Pixel size in Å.
    n_frames : int, optional
        Number of frames (at least 2).
    dose_per_frame_e_per_A2 : float, optional
        Dose per frame in e/Å^2 (typically 0.5-1.5, for 40-60 e/Å^2 in all).
    image_contrast : float, optional
        Standard deviation of the true image relative to its mean.
    total_drift_px : float, optional
        Length of the global drift path over the movie, in px.
    local_drift_px : float, optional
        Largest local deviation from the global drift at the last frame, over the frame, px.
    gain_variation : float, optional
        Standard deviation of the per-pixel gain around 1.
    n_hot_pixels : int, optional
        Pixels that count 20 times the mean rate (at least 10 counts) in every frame.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    Movie
        Frames as uint8 (uint16 when a count exceeds 255) and the truth.
    """
    _check_positive(pixel_size_A, "pixel_size_A")
    _check_positive(dose_per_frame_e_per_A2, "dose_per_frame_e_per_A2")
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2, got {n_frames}")
    if not 0 <= gain_variation < 0.3:
        raise ValueError(f"gain_variation must be in [0, 0.3), got {gain_variation}")
    rng = np.random.default_rng(seed)
    if image is None:
        base = _smooth_field(rng, shape, scale_px=4.0)
    else:
        base = np.asarray(image, dtype=np.float32)
        if base.ndim != 2:
            raise ValueError(f"image must be 2D (ny, nx), got shape {base.shape}")
        base = (base - base.mean()) / max(float(base.std()), 1e-12)
    linear = 1.0 + image_contrast * base
    truth_image = np.clip(linear, 0.0, None).astype(np.float32)
    _check_clipping(linear, truth_image)
    truth_image /= truth_image.mean()
    frame_shape = (truth_image.shape[0], truth_image.shape[1])
    ny, nx = frame_shape

    drift = _drift_path(rng, n_frames, total_drift_px)
    coeffs = rng.normal(size=(2, 5))
    corners = _local_basis([0, nx, 0, nx], [0, 0, ny, ny], frame_shape)
    peak = float(np.max(np.abs(coeffs @ corners)))
    coeffs *= local_drift_px / max(peak, 1e-12)
    profile = np.linspace(0.0, 1.0, n_frames) ** 1.5
    response = 1.0 + gain_variation * rng.standard_normal(frame_shape)
    gain = np.clip(response, 0.5, 1.5).astype(np.float32)
    hot = np.zeros(frame_shape, dtype=bool)
    hot.flat[rng.choice(ny * nx, size=n_hot_pixels, replace=False)] = True
    truth = MovieTruth(
        float(pixel_size_A), float(dose_per_frame_e_per_A2), drift, coeffs, profile,
        truth_image, gain, hot,
    )  # fmt: skip

    dose_px = dose_per_frame_e_per_A2 * pixel_size_A**2
    hot_rate = max(10.0, 20.0 * dose_px)
    model = _frame_model(truth)
    counts_per_intensity = dose_px / gain
    frames = np.empty((n_frames, ny, nx), dtype=np.uint16)
    # one child generator per frame: the counts do not depend on which thread makes a frame
    frame_rngs = rng.spawn(n_frames)

    def make_frame(f: int) -> None:
        rate = np.clip(model(f), 0.0, None) * counts_per_intensity
        rate[hot] = hot_rate
        frames[f] = np.minimum(frame_rngs[f].poisson(rate), np.iinfo(np.uint16).max)

    # Poisson sampling and the FFTs release the GIL, so frames are made on all cores
    parallel_map(make_frame, range(n_frames), np)
    if int(frames.max()) <= np.iinfo(np.uint8).max:
        return Movie(frames.astype(np.uint8), truth)
    return Movie(frames, truth)


def save_movie(
    movie: Movie,
    path: str | os.PathLike[str],
    *,
    gain_path: str | os.PathLike[str] | None = None,
    compression: str | None = "lzw",
) -> None:
    """Write a simulated movie as TIFF (``.tif``/``.tiff``) or MRC (``.mrc``/``.mrcs``).

    Parameters
    ----------
    movie : Movie
        From :func:`simulate_movie`.
    path : str or os.PathLike
        Output file; the suffix picks the format.
    gain_path : str or os.PathLike, optional
        Where to write the gain reference as float32 MRC (the truth's ``gain``).
    compression : str or None, optional
        TIFF compression (``"lzw"`` as EPU and SerialEM write counting movies).
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        write_movie_tiff(path, movie.frames, compression=compression)
    elif suffix in (".mrc", ".mrcs"):
        write_movie_mrc(path, movie.frames, pixel_size_A=movie.truth.pixel_size_A)
    else:
        raise ValueError(f"path must end in .tif, .tiff, .mrc or .mrcs, got {os.fspath(path)!r}")
    if gain_path is not None:
        write_mrc(gain_path, movie.truth.gain, pixel_size_A=movie.truth.pixel_size_A)
