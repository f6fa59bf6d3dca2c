"""Beam-induced motion correction of movies: global and local alignment, dose weighting.

The method follows MotionCor2 (Zheng et al. 2017): full-frame
iterative alignment of every frame to the sum of the others with B-factor filtering and
sub-pixel peak fitting, then patch alignment on a grid whose shifts are fitted by a smooth
polynomial deformation model over space and time, then a dose-weighted sum with the exposure
filter of Grant & Grigorieff (2015) and an optional Fourier crop of the output.

Conventions
-----------
* ``frames`` have shape (n_frames, ny, nx); shifts are ``(dy, dx)`` in pixels of the input.
* A trajectory value ``s`` for a frame means the specimen moved by ``s`` in that frame:
  ``frame(x) = reference(x - s)``. Trajectories are relative to the first aligned frame.
* Frames arrive gain- and defect-corrected: :class:`cryokube.processing.io.gain.FrameCorrection`
  applies the gain reference and the defect mask while the movie is read, batch by batch.

References
----------
Zheng, S. Q. et al. (2017) MotionCor2: anisotropic correction of beam-induced motion for
improved cryo-electron microscopy. Nat. Methods 14, 331-332. doi:10.1038/nmeth.4193

Grant, T. & Grigorieff, N. (2015) Measuring the optimal exposure for single particle cryo-EM
using a 2.6 A reconstruction of rotavirus VP6. eLife 4, e06980. doi:10.7554/eLife.06980
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import scipy.fft
from cryokube.processing.algorithms._motion_kernels import (
    FRAME_DTYPES,
    halved_padded_cpu,
    ramped_sums_cpu,
)
from cryokube.processing.algorithms._spectra import (
    centred_power_spectrum,
    find_peaks,
    frequency_grid_per_A,
)
from cryokube.processing.backend import (
    Array,
    array_module,
    contiguous_numpy,
    fourier_resample,
    fourier_shift,
    irfft2,
    irfft2_near_zero,
    parallel_map,
    phase_ramps,
    rfft2,
    rfft2_cropped,
    to_host,
)

__all__ = [
    "MotionResult",
    "align_movie",
    "dose_weights",
    "evaluate_deformation",
    "fit_deformation",
]

# Critical exposure fit of Grant & Grigorieff (2015), eq. 3: N_e(k) = a * k**b + c (e/A^2, k in 1/A).
_CRITICAL_A = 0.245
_CRITICAL_B = -1.665
_CRITICAL_C = 2.81

# Frames per cross-correlation batch in the iterative alignment (bounds its temporaries).
_FRAME_CHUNK = 8

# Spatial terms of the deformation model (MotionCor2): 1, x, x^2, y, y^2, xy.
_SPATIAL_TERMS = 6
# Temporal terms: t, t^2, t^3 (the constant is the arbitrary per-patch offset, removed).
_TIME_TERMS = 3


@dataclass(frozen=True)
class MotionResult:
    """Output of :func:`align_movie`.

    Attributes
    ----------
    micrograph : ndarray of shape (ny_out, nx_out)
        Aligned, dose-weighted sum, Fourier-cropped; float32 or float16.
    micrograph_plain : ndarray of shape (ny_out, nx_out)
        Aligned sum without dose weighting (for CTF estimation), same size and dtype.
    pixel_size_A : float
        Pixel size of the output micrographs (A).
    global_shifts_px : ndarray of shape (n_frames, 2)
        Full-frame trajectory ``(dy, dx)`` in input pixels, first frame at zero.
    patch_centres_px : ndarray of shape (n_patches, 2)
        Patch centres ``(y, x)`` in input pixels.
    local_shifts_px : ndarray of shape (n_patches, n_frames, 2)
        Total trajectory (global plus smooth local deformation) at each patch centre (px).
    deformation_coefficients : ndarray of shape (2, 6, 3)
        Coefficients of the local model, see :func:`evaluate_deformation` (px).
    power_spectrum : ndarray of shape (box, box)
        Averaged power spectrum of the aligned plain sum at the input pixel size, centred
        (zero frequency at ``box // 2``).
    thumbnail : ndarray of shape (ny_t, nx_t)
        Down-sampled dose-weighted micrograph, longest side at most 512 px, float32.
    input_pixel_size_A : float
        Pixel size of the input frames (A); shifts in A are ``shifts_px * input_pixel_size_A``.
    """

    micrograph: Array
    micrograph_plain: Array
    pixel_size_A: float
    global_shifts_px: Array
    patch_centres_px: Array
    local_shifts_px: Array
    deformation_coefficients: Array
    power_spectrum: Array
    thumbnail: Array
    input_pixel_size_A: float

    @property
    def global_shifts_A(self) -> Array:
        """Full-frame trajectory in Angstrom, shape (n_frames, 2)."""
        return self.global_shifts_px * self.input_pixel_size_A

    @property
    def local_shifts_A(self) -> Array:
        """Per-patch trajectories in Angstrom, shape (n_patches, n_frames, 2)."""
        return self.local_shifts_px * self.input_pixel_size_A


def dose_weights(
    shape: tuple[int, int],
    pixel_size_A: float,
    exposures_e_per_A2: Array,
) -> Array:
    """Exposure-filter weights for each frame on an ``rfft2`` grid.

    The relative weight of frame ``i`` at spatial frequency ``k`` is
    ``q_i(k) = exp(-N_i / (2 N_e(k)))`` with ``N_i`` the exposure accumulated at the end of the
    frame and ``N_e(k) = 0.245 k**-1.665 + 2.81`` the critical exposure. Weights are scaled by
    ``sqrt(n_frames / sum_i q_i(k)**2)`` so that white noise keeps the power of the plain sum and
    the zero frequency is the plain sum.

    Parameters
    ----------
    shape : tuple of int
        Real-space shape (ny, nx) of the frames.
    pixel_size_A : float
        Pixel size (A).
    exposures_e_per_A2 : array of shape (n_frames,)
        Accumulated exposure at the end of each frame (e/A^2), on the device of the result.

    Returns
    -------
    ndarray of shape (n_frames, ny, nx // 2 + 1), float32

    References
    ----------
    Grant & Grigorieff (2015), doi:10.7554/eLife.06980.
    """
    xp = array_module(exposures_e_per_A2)
    exposures = xp.asarray(exposures_e_per_A2, dtype=np.float32)
    if exposures.ndim != 1:
        raise ValueError("exposures_e_per_A2 must be one-dimensional (n_frames,)")
    k = frequency_grid_per_A(shape, pixel_size_A, xp=xp)
    k = xp.maximum(k, np.float32(1e-6))
    critical = _CRITICAL_A * k**_CRITICAL_B + _CRITICAL_C
    q = xp.exp(-exposures[:, None, None] / (2.0 * critical[None]))
    norm = xp.sqrt(np.float32(exposures.shape[0]) / xp.sum(q * q, axis=0))
    return (q * norm[None]).astype(np.float32)


def _bfactor_filter(
    shape: tuple[int, int], pixel_size_A: float, bfactor_A2: float, xp: ModuleType
) -> Array:
    """``exp(-B k^2 / 4)`` on an ``rfft2`` grid with the zero frequency removed.

    complex64: numpy multiplies complex by complex several times faster than complex by float32.
    """
    k = frequency_grid_per_A(shape, pixel_size_A, xp=xp)
    weight = xp.exp(np.float32(-bfactor_A2 / 4.0) * k * k)
    weight[0, 0] = 0.0
    return weight.astype(np.complex64)


def _align_spectra(
    spectra: Array,
    shape: tuple[int, int],
    weight: Array,
    *,
    max_shift_px: float,
    max_iterations: int,
    tolerance_px: float,
) -> Array:
    """Iteratively align each frame to the sum of the others (MotionCor2's global scheme).

    ``spectra`` has shape (..., n_frames, ky, kx) (``rfft2`` of real frames of ``shape``); the
    leading axes are independent stacks (patches); ``weight`` is :func:`_bfactor_filter`.
    Returns shifts (..., n_frames, 2) in pixels of ``shape``, with the first frame at zero, and
    leaves ``spectra`` moved by them (aligned, in place: no copy of the stack per iteration).
    Each iteration measures the residual shift of the already-aligned frame, so the sub-pixel
    parabola is fitted at a centred, symmetric peak. Frames are moved and cross-correlated
    ``_FRAME_CHUNK`` at a time, so the temporaries stay a fraction of the spectra's size, with
    the chunks on several threads (on one inside a
    :func:`~cryokube.processing.backend.parallel_map` thread: the caller runs several stacks).
    Only the correlations within the search radius are computed (the inverse transform of the
    rows near zero shift).
    """
    xp = array_module(spectra)
    shifts = xp.zeros((*spectra.shape[:-2], 2), dtype=np.float32)
    n_frames = spectra.shape[-3]
    search = max_shift_px
    chunks = [slice(s, s + _FRAME_CHUNK) for s in range(0, n_frames, _FRAME_CHUNK)]

    for _ in range(max_iterations):
        total = sum(
            parallel_map(
                lambda c: xp.sum(spectra[..., c, :, :], axis=-3, keepdims=True), chunks, xp
            )
        )

        def peaks(c: slice, total: Array = total, search: float = search) -> Array:
            chunk = spectra[..., c, :, :]
            product = total - chunk
            xp.conj(product, out=product)
            product *= chunk
            product *= weight
            # Only the correlations within the search radius (and their neighbours) are needed.
            half = math.ceil(search) + 2
            cc = (
                irfft2_near_zero(product, shape, half)
                if 2 * half <= min(shape)
                else irfft2(product, shape)
            )
            return find_peaks(cc, max_shift_px=search)

        parts = parallel_map(peaks, chunks, xp)
        del peaks
        residual = xp.concatenate(parts, axis=-2)
        # relative to the first frame, which stays where it is
        step = residual - residual[..., :1, :]
        shifts = shifts + step

        def move(c: slice, step: Array = step) -> None:
            fourier_shift(spectra[..., c, :, :], -step[..., c, :], shape, in_place=True)

        parallel_map(move, chunks, xp)
        # Later iterations only refine: a small search window keeps noise peaks out.
        search = min(search, 4.0)
        if float(xp.max(xp.abs(residual))) < tolerance_px:
            break
    return shifts


def _deformation_design(
    centres_norm: Array, times_norm: Array, xp: ModuleType
) -> tuple[Array, Array]:
    """Spatial (n_points, 6) and temporal (n_frames, 3) bases of the deformation model."""
    y = centres_norm[:, 0]
    x = centres_norm[:, 1]
    ones = y * 0 + 1
    spatial = xp.stack([ones, x, x * x, y, y * y, x * y], axis=1)
    temporal = xp.stack([times_norm, times_norm**2, times_norm**3], axis=1)
    return spatial, temporal


def fit_deformation(
    centres_px: Array,
    patch_shifts_px: Array,
    image_shape: tuple[int, int],
) -> Array:
    """Fit MotionCor2's smooth deformation model to per-patch trajectories.

    The model for each axis is ``d(x, y, t) = sum_ij c_ij S_i(x, y) T_j(t)`` with spatial terms
    ``S = (1, x, x^2, y, y^2, xy)`` over coordinates scaled to [-1, 1] and temporal terms
    ``T = (t, t^2, t^3)`` over the frame index scaled to [0, 1]. Each patch trajectory has an
    arbitrary offset, so measurements and temporal terms are centred over time before the
    least-squares fit.

    Parameters
    ----------
    centres_px : array of shape (n_patches, 2)
        Patch centres ``(y, x)`` (px).
    patch_shifts_px : array of shape (n_patches, n_frames, 2)
        Measured residual trajectories (px), any offset per patch.
    image_shape : tuple of int
        Frame shape (ny, nx) in the same pixels.

    Returns
    -------
    ndarray of shape (2, 6, 3)
        Coefficients ``c[axis, i, j]`` (px) for axis ``(dy, dx)``.

    References
    ----------
    Zheng et al. (2017), doi:10.1038/nmeth.4193.
    """
    xp = array_module(patch_shifts_px)
    shifts = xp.asarray(patch_shifts_px, dtype=np.float64)
    if shifts.ndim != 3 or shifts.shape[-1] != 2:
        raise ValueError("patch_shifts_px must have shape (n_patches, n_frames, 2)")
    n_patches, n_frames, _ = shifts.shape
    if n_frames < 2:
        raise ValueError("patch_shifts_px needs at least 2 frames")
    centres = xp.asarray(centres_px, dtype=np.float64)
    if centres.shape != (n_patches, 2):
        raise ValueError("centres_px must have shape (n_patches, 2) matching patch_shifts_px")
    spatial, temporal = _deformation_design(
        _normalise_centres(centres, image_shape, xp), _normalised_times(n_frames, xp), xp
    )
    temporal = temporal - xp.mean(temporal, axis=0, keepdims=True)
    design = (spatial[:, None, :, None] * temporal[None, :, None, :]).reshape(
        n_patches * n_frames, _SPATIAL_TERMS * _TIME_TERMS
    )
    centred = shifts - xp.mean(shifts, axis=1, keepdims=True)
    target = centred.reshape(n_patches * n_frames, 2)
    coeffs, *_ = xp.linalg.lstsq(design, target, rcond=None)
    return coeffs.T.reshape(2, _SPATIAL_TERMS, _TIME_TERMS).astype(np.float32)


def evaluate_deformation(
    coefficients: Array,
    points_px: Array,
    n_frames: int,
    image_shape: tuple[int, int],
) -> Array:
    """Local deformation (px) at ``points_px`` (n_points, 2) for each frame, zero at frame 0.

    Returns an array of shape (n_points, n_frames, 2) with ``(dy, dx)``; see
    :func:`fit_deformation` for the model.
    """
    xp = array_module(coefficients)
    points = xp.asarray(points_px, dtype=np.float64)
    spatial, temporal = _deformation_design(
        _normalise_centres(points, image_shape, xp), _normalised_times(n_frames, xp), xp
    )
    c = xp.asarray(coefficients, dtype=np.float64)
    values = xp.einsum("pi,tj,aij->pta", spatial, temporal, c)
    return (values - values[:, :1, :]).astype(np.float32)


def _normalise_centres(points: Array, image_shape: tuple[int, int], xp: ModuleType) -> Array:
    size = xp.asarray(image_shape, dtype=np.float64)
    return 2.0 * points / size - 1.0


def _normalised_times(n_frames: int, xp: ModuleType) -> Array:
    return xp.arange(n_frames, dtype=np.float64) / max(n_frames - 1, 1)


def _even(n: float) -> int:
    return max(2, 2 * round(n / 2))


def _fast_even(n: float) -> int:
    """Smallest even length >= ``n`` whose FFT is fast (only factors 2, 3, 5).

    Frame sides such as 4092 (4 x 3 x 11 x 31) or binned sides such as 2038 (2 x 1019) make
    pocketfft several times slower than a 5-smooth length a few pixels longer.
    """
    m = _even(math.ceil(n))
    while scipy.fft.next_fast_len(m, real=True) != m:
        m += 2
    return m


def _window(frame: Array, top: int, left: int, out: Array, fill: Array) -> None:
    """Write ``frame[top:, left:]`` into ``out`` (its shape), ``fill`` outside the frame."""
    ny, nx = frame.shape
    size_y, size_x = out.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size_y, ny), min(left + size_x, nx)
    if (y0, x0, y1, x1) != (top, left, top + size_y, left + size_x):
        out[...] = fill
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = frame[y0:y1, x0:x1]


def _padded(frame: Array, shape: tuple[int, int], fill: Array) -> Array:
    """``frame`` as float32, padded at the high ends to ``shape`` with ``fill`` (its mean)."""
    xp = array_module(frame)
    ny, nx = frame.shape
    if (ny, nx) == shape:
        return xp.asarray(frame, dtype=np.float32)
    out = xp.empty(shape, dtype=np.float32)
    out[:ny, :nx] = frame
    out[ny:, :] = fill
    out[:ny, nx:] = fill
    return out


def _halved_padded(frame: Array, shape: tuple[int, int], fill: Array) -> Array:
    """Means of the 2 x 2 blocks of a frame with even sides, as float32, padded at the high ends
    to ``shape`` with ``fill``; a contiguous numpy frame takes the compiled kernel."""
    if contiguous_numpy(frame, FRAME_DTYPES):
        return halved_padded_cpu(frame, shape, fill)
    xp = array_module(frame)
    rows = xp.add(frame[0::2], frame[1::2], dtype=np.float32)
    out = rows[:, 0::2] + rows[:, 1::2]
    out *= np.float32(0.25)
    return _padded(out, shape, fill)


def _irfft2_in_place(spectra: Array, shape: tuple[int, int]) -> Array:
    """``irfft2`` of each of the (n, ky, kx) complex64 ``spectra``, written over its own spectrum;
    returns the float32 images (n, *shape) as a view of that memory.

    A spectrum row holds ``2 * kx >= shape[1]`` float32 values, so each image fits where its
    spectrum was, and each frame is transformed before it is overwritten. One frame per thread:
    a 5760 x 4092 x 50 movie's 600 MB binned stack goes back to real space in 0.4-0.6 s, not
    1.5-1.6 s for one batched call and its second 600 MB stack.
    """
    images = spectra.view(np.float32)[..., : shape[1]]

    def one(i: int) -> None:
        images[i] = irfft2(spectra[i], shape)

    parallel_map(one, range(spectra.shape[0]), array_module(spectra))
    return images


def _taper(size_y: int, size_x: int, xp: ModuleType, width: int) -> Array:
    """Separable cosine edge taper of ``width`` px, 1 inside."""

    def edge(n: int) -> Array:
        ramp = np.ones(n, dtype=np.float32)
        w = min(width, n // 2)
        if w > 0:
            t = 0.5 - 0.5 * np.cos(np.pi * (np.arange(w) + 0.5) / w)
            ramp[:w] = t
            ramp[n - w :] = t[::-1]
        return ramp

    return xp.asarray(edge(size_y)[:, None] * edge(size_x)[None, :])


def align_movie(
    frames: Array,
    *,
    pixel_size_A: float,
    dose_per_frame_e_per_A2: float,
    frame_range: tuple[int, int] | None = None,
    max_resolution_A: float = 5.0,
    bfactor_A2: float = 150.0,
    local_bfactor_A2: float = 500.0,
    patch_grid: tuple[int, int] | None = (5, 5),
    max_shift_A: float = 100.0,
    max_iterations: int = 7,
    tolerance_px: float = 0.05,
    pre_exposure_e_per_A2: float = 0.0,
    dose_weighting: bool = True,
    fourier_crop_factor: float = 1.0,
    output_float16: bool = False,
    spectrum_box_px: int = 512,
    tile_px: int = 512,
) -> MotionResult:
    """Align a movie with global and local motion, then sum it with dose weighting.

    Parameters
    ----------
    frames : ndarray of shape (n_frames, ny, nx)
        Gain- and defect-corrected movie frames (counts, any real dtype).
    pixel_size_A : float
        Pixel size of the frames (A).
    dose_per_frame_e_per_A2 : float
        Exposure per frame (e/A^2).
    frame_range : (first, stop), optional
        Frames ``first <= i < stop`` are aligned and summed; exposure still accumulates from
        frame 0.
    max_resolution_A : float
        Highest resolution used for alignment (A); frames are Fourier-cropped to it.
    bfactor_A2 : float
        B-factor (A^2) of the ``exp(-B k^2 / 4)`` filter for full-frame alignment.
    local_bfactor_A2 : float
        B-factor (A^2) for patch alignment.
    patch_grid : (n_y, n_x) or None
        Patch grid for local motion; None aligns full frames only.
    max_shift_A : float
        Largest shift searched in the first iteration (A).
    max_iterations, tolerance_px
        Iteration limit (7, as MotionCor2's ``-Iter``), and convergence threshold on the largest
        update, in pixels of the binned alignment frames.
    pre_exposure_e_per_A2 : float
        Exposure received before the first frame (e/A^2).
    dose_weighting : bool
        Apply the exposure filter to ``micrograph`` (``micrograph_plain`` never has it).
    fourier_crop_factor : float
        Output down-sampling factor (>= 1); 2 halves each side.
    output_float16 : bool
        Return the micrographs as float16.
    spectrum_box_px : int
        Box of the averaged power spectrum (px).
    tile_px : int
        Size of the tiles over which the local deformation is applied (px).

    Returns
    -------
    MotionResult

    Notes
    -----
    Local motion is applied tile by tile: each ``tile_px`` tile of each frame is read at the
    integer part of its trajectory and moved by the fractional part with a Fourier phase ramp,
    with a 32-px margin against wrap-around, as MotionCor2 corrects each patch.

    References
    ----------
    Zheng et al. (2017), doi:10.1038/nmeth.4193; Grant & Grigorieff (2015),
    doi:10.7554/eLife.06980.
    """
    xp = array_module(frames)
    if getattr(frames, "ndim", 0) != 3:
        raise ValueError("frames must have shape (n_frames, ny, nx)")
    n_total, ny, nx = frames.shape
    if pixel_size_A <= 0:
        raise ValueError("pixel_size_A must be positive")
    if dose_per_frame_e_per_A2 < 0:
        raise ValueError("dose_per_frame_e_per_A2 must be non-negative")
    if max_resolution_A < 2 * pixel_size_A:
        raise ValueError("max_resolution_A must be at least twice pixel_size_A (Nyquist)")
    if fourier_crop_factor < 1:
        raise ValueError("fourier_crop_factor must be >= 1")
    first, stop = (0, n_total) if frame_range is None else frame_range
    if not 0 <= first < stop <= n_total or stop - first < 2:
        raise ValueError(
            f"frame_range must select at least 2 of {n_total} frames, got {frame_range}"
        )
    if patch_grid is not None and (min(patch_grid) < 1 or len(patch_grid) != 2):
        raise ValueError("patch_grid must be two positive integers (n_y, n_x)")

    n_frames = stop - first

    # Full-frame alignment on Fourier-cropped frames (binning to max_resolution_A). Frames are
    # padded with their mean to FFT-friendly sides and binned to FFT-friendly sides.
    padded = (_fast_even(ny), _fast_even(nx))
    small = (
        min(padded[0], _fast_even(padded[0] * 2 * pixel_size_A / max_resolution_A)),
        min(padded[1], _fast_even(padded[1] * 2 * pixel_size_A / max_resolution_A)),
    )
    scale = xp.asarray([padded[0] / small[0], padded[1] / small[1]], dtype=np.float32)
    small_pixel_A = pixel_size_A * padded[0] / small[0]
    # Windows and padding are filled with each frame's mean, computed once.
    means = parallel_map(lambda i: xp.mean(frames[i], dtype=np.float32), range(first, stop), xp)
    spectra = xp.empty((n_frames, small[0], small[1] // 2 + 1), dtype=np.complex64)

    # Halving in real space first (2 x 2 block means) quarters the FFT work. Below the cropped
    # Nyquist the block filter keeps 0.85 or more of the signal on each axis at the usual 2.8x
    # binning, and white counting noise keeps its spectral density (what the filter takes off
    # comes back folded), so the alignment sees nearly the same spectra.
    halve = ny % 2 == 0 and nx % 2 == 0 and 2 * small[0] <= padded[0] and 2 * small[1] <= padded[1]

    def bin_frame(i: int) -> None:
        frame = frames[first + i]
        if halve:
            half = (padded[0] // 2, padded[1] // 2)
            spectra[i] = rfft2_cropped(_halved_padded(frame, half, means[i]), small)
        else:
            spectra[i] = rfft2_cropped(_padded(frame, padded, means[i]), small)

    parallel_map(bin_frame, range(n_frames), xp)
    global_small = _align_spectra(
        spectra,
        small,
        _bfactor_filter(small, small_pixel_A, bfactor_A2, xp),
        max_shift_px=max_shift_A / small_pixel_A,
        max_iterations=max_iterations,
        tolerance_px=tolerance_px,
    )
    global_px = global_small * scale

    # Patch alignment of the globally aligned, binned frames, then the smooth model.
    if patch_grid is None:
        centres = xp.asarray([[ny / 2.0, nx / 2.0]], dtype=np.float32)
        coeffs = xp.zeros((2, _SPATIAL_TERMS, _TIME_TERMS), dtype=np.float32)
    else:
        # _align_spectra left the binned spectra aligned
        aligned_small = _irfft2_in_place(spectra, small)
        del spectra
        # Patches cover the movie, not the padding.
        content = (round(ny * small[0] / padded[0]), round(nx * small[1] / padded[1]))
        centres, patch_small = _patch_trajectories(
            aligned_small[:, : content[0], : content[1]],
            patch_grid,
            weight_pixel_A=small_pixel_A,
            bfactor_A2=local_bfactor_A2,
            max_iterations=max_iterations,
            tolerance_px=tolerance_px,
        )
        del aligned_small
        centres = centres * scale
        coeffs = fit_deformation(centres, patch_small * scale, (ny, nx))
    local_px = global_px[None] + evaluate_deformation(coeffs, centres, n_frames, (ny, nx))

    exposures = pre_exposure_e_per_A2 + dose_per_frame_e_per_A2 * xp.arange(
        first + 1, stop + 1, dtype=np.float32
    )
    weighted, plain = _corrected_sums(
        frames[first:stop],
        means,
        global_px,
        coeffs,
        pixel_size_A=pixel_size_A,
        exposures=exposures if dose_weighting else None,
        tile_px=tile_px,
    )
    spectrum = centred_power_spectrum(plain, box_px=min(spectrum_box_px, ny, nx))
    out_shape = (_even(ny / fourier_crop_factor), _even(nx / fourier_crop_factor))
    if out_shape != (ny, nx):
        weighted = fourier_resample(weighted, out_shape)
        plain = fourier_resample(plain, out_shape)
    thumb_scale = max(out_shape) / 512.0
    thumbnail = (
        fourier_resample(
            weighted, (_even(out_shape[0] / thumb_scale), _even(out_shape[1] / thumb_scale))
        )
        if thumb_scale > 1
        else weighted.copy()
    )
    out_dtype = np.float16 if output_float16 else np.float32
    return MotionResult(
        micrograph=weighted.astype(out_dtype),
        micrograph_plain=plain.astype(out_dtype),
        pixel_size_A=pixel_size_A * ny / out_shape[0],
        global_shifts_px=global_px,
        patch_centres_px=centres,
        local_shifts_px=local_px,
        deformation_coefficients=coeffs,
        power_spectrum=spectrum,
        thumbnail=thumbnail.astype(np.float32),
        input_pixel_size_A=pixel_size_A,
    )


def _patch_trajectories(
    aligned: Array,
    grid: tuple[int, int],
    *,
    weight_pixel_A: float,
    bfactor_A2: float,
    max_iterations: int,
    tolerance_px: float,
) -> tuple[Array, Array]:
    """Residual trajectories of overlapping patches of aligned frames (n_frames, ny, nx).

    Returns patch centres (n_patches, 2) and trajectories (n_patches, n_frames, 2), both in
    pixels of ``aligned``. Patches overlap by 50% and are cosine-tapered at their edges so the
    fixed window does not pull the peak towards zero.
    """
    xp = array_module(aligned)
    _, ny, nx = aligned.shape
    gy, gx = grid
    size = (min(ny, _fast_even(1.5 * ny / gy)), min(nx, _fast_even(1.5 * nx / gx)))
    taper = _taper(*size, xp, width=max(2, min(size) // 8))
    corners = []
    for iy in range(gy):
        for ix in range(gx):
            cy, cx = (iy + 0.5) * ny / gy, (ix + 0.5) * nx / gx
            top = min(max(round(cy - size[0] / 2), 0), ny - size[0])
            left = min(max(round(cx - size[1] / 2), 0), nx - size[1])
            corners.append((top, left))
    weight = _bfactor_filter(size, weight_pixel_A, bfactor_A2, xp)

    def patch_shifts(top: int, left: int) -> Array:
        patch = aligned[:, top : top + size[0], left : left + size[1]]
        patch = (patch - xp.mean(patch, axis=(-2, -1), keepdims=True)) * taper
        return _align_spectra(
            rfft2(patch),
            size,
            weight,
            max_shift_px=max(4.0, min(size) / 8.0),
            max_iterations=max_iterations,
            tolerance_px=tolerance_px,
        )

    # One patch per thread: all patches at once would hold 2.25x the frames (50% overlap).
    shifts = xp.stack(parallel_map(lambda corner: patch_shifts(*corner), corners, xp))
    centres = [(top + size[0] / 2.0, left + size[1] / 2.0) for top, left in corners]
    return xp.asarray(centres, dtype=np.float32), shifts


def _ramped_sums(
    spectra: Array, ramp_y: Array, ramp_x: Array, weights: Array | None
) -> tuple[Array, Array | None]:
    """``sum_f S_f R_f`` and ``sum_f S_f R_f W_f`` over the frames of a tile stack ``S``, with
    the phase ramp ``R_f`` as its y and x factors and the dose weights ``W``; ``S`` may be
    overwritten.

    A contiguous complex64 numpy stack takes the compiled kernel, which reads it from memory
    once where these array operations read it five times (12 ms against 29 ms for a 50-frame
    576^2 tile); the array code is the GPU's path.
    """
    xp = array_module(spectra)
    if contiguous_numpy(spectra, [np.complex64]):
        return ramped_sums_cpu(spectra, ramp_y, ramp_x, weights)
    spectra *= ramp_y
    spectra *= ramp_x
    plain = xp.sum(spectra, axis=0)
    if weights is None:
        return plain, None
    spectra *= weights
    return plain, xp.sum(spectra, axis=0)


def _corrected_sums(
    frames: Array,
    means: list[Array],
    global_px: Array,
    coeffs: Array,
    *,
    pixel_size_A: float,
    exposures: Array | None,
    tile_px: int,
) -> tuple[Array, Array]:
    """Dose-weighted and plain sums of frames moved by the global plus local trajectory.

    Tiles are handled one per thread; each writes its own part of the sums, so the result does
    not depend on their order.
    """
    xp = array_module(frames)
    n_frames, ny, nx = frames.shape
    margin = 32
    core_y, core_x = min(tile_px, ny), min(tile_px, nx)
    tiles_y = math.ceil(ny / core_y)
    tiles_x = math.ceil(nx / core_x)
    tops = [min(i * core_y, ny - core_y) for i in range(tiles_y)]
    lefts = [min(j * core_x, nx - core_x) for j in range(tiles_x)]
    centres = xp.asarray(
        [(t + core_y / 2.0, le + core_x / 2.0) for t in tops for le in lefts], dtype=np.float32
    )
    trajectories = global_px[None] + evaluate_deformation(coeffs, centres, n_frames, (ny, nx))
    # The integer parts index windows on the host side; the array is tiny (tiles x frames x 2).
    trajectories_host = to_host(trajectories).astype(np.float64)
    integer = np.rint(trajectories_host).astype(int)
    fraction = xp.asarray(trajectories_host - integer, dtype=np.float32)
    win = (core_y + 2 * margin, core_x + 2 * margin)
    # Complex weights: numpy multiplies complex by complex several times faster than by float32.
    weights = (
        None
        if exposures is None
        else dose_weights(win, pixel_size_A, exposures).astype(np.complex64)
    )
    weighted = xp.zeros((ny, nx), dtype=np.float32)
    plain = xp.zeros((ny, nx), dtype=np.float32)
    # One window stack per thread, reused for its tiles: no per-window copies.
    local = threading.local()

    def add_tile(index: int) -> None:
        iy, ix = divmod(index, tiles_x)
        top, left = tops[iy], lefts[ix]
        stack = getattr(local, "stack", None)
        if stack is None:
            stack = local.stack = xp.empty((n_frames, *win), dtype=np.float32)
        # Windows are cut from the input frames directly: no float32 copy of the whole movie.
        for i in range(n_frames):
            _window(
                frames[i],
                top - margin + int(integer[index, i, 0]),
                left - margin + int(integer[index, i, 1]),
                stack[i],
                means[i],
            )
        ramp_y, ramp_x = phase_ramps(-fraction[index], win, np.complex64, xp=xp)
        plain_sum, weighted_sum = _ramped_sums(rfft2(stack), ramp_y, ramp_x, weights)
        plain_tile = irfft2(plain_sum, win)
        weighted_tile = plain_tile if weighted_sum is None else irfft2(weighted_sum, win)
        # This tile's share of the output: its rows and columns not in the next tile's core.
        rows = slice(iy * core_y, min((iy + 1) * core_y, ny))
        cols = slice(ix * core_x, min((ix + 1) * core_x, nx))
        core = (
            slice(rows.start - top + margin, rows.stop - top + margin),
            slice(cols.start - left + margin, cols.stop - left + margin),
        )
        plain[rows, cols] = plain_tile[core]
        weighted[rows, cols] = weighted_tile[core]

    parallel_map(add_tile, range(tiles_y * tiles_x), xp)
    return weighted, plain
