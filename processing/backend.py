"""Array backend: the array module follows the input.

Every algorithm starts with ``xp = array_module(x)`` and calls only ``xp`` and the helpers
here, so one code path runs on numpy (CPU) and CuPy (NVIDIA GPU). There is no global
backend switch. FFTs are real-to-complex and single precision by default; on the CPU they
go through :mod:`scipy.fft` with ``workers=`` threads, on the GPU through
:mod:`cupyx.scipy.fft` (cuFFT plans cached by CuPy).

Conventions
-----------
* Arrays are float32 unless the caller passes float64.
* Fourier arrays are ``rfftn`` half-spectra with the zero frequency at index 0 (not centred).
* Spatial frequencies are in cycles per pixel unless a name says ``_per_A`` (1/Å).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import scipy.fft

try:  # pragma: no cover - exercised only where CuPy and a GPU exist
    import cupy as _cupy
    import cupyx.scipy.fft as _cupy_fft
except ImportError:  # the CPU-only install
    _cupy = None
    _cupy_fft = None

Array = Any
"""A numpy or CuPy array (typed loosely so that one signature covers both)."""

DEFAULT_DTYPE = np.float32

_T = TypeVar("_T")
_R = TypeVar("_R")


_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_pool_thread = threading.local()


def cgroup_cpu_limit(cpu_max: str) -> int | None:
    """Whole cores a cgroup v2 ``cpu.max`` line (``"<quota> <period>"`` or ``"max ..."``) allows,
    rounded up; ``None`` without a quota."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def fft_workers() -> int:
    """CPU threads for scipy.fft and :func:`parallel_map`.

    ``CRYOKUBE_FFT_WORKERS`` when set (worker pods get their CPU request there, since a node's
    core count says nothing of a pod's share), else the cores this process may run on, capped
    by its cgroup's CPU quota; 1 inside a :func:`parallel_map` thread, which is one of them.
    """
    if getattr(_pool_thread, "inside", False):
        return 1
    value = os.environ.get("CRYOKUBE_FFT_WORKERS")
    if value:
        return max(1, int(value))
    return _process_cpus()


@functools.cache
def _process_cpus() -> int:
    """The cores this process may run on, capped by its cgroup's quota (read once: every FFT
    asks for its thread count)."""
    cores = len(os.sched_getaffinity(0))
    try:
        limit = cgroup_cpu_limit(_CGROUP_CPU_MAX.read_text())
    except OSError:  # cgroup v1 or no cgroup file system
        limit = None
    return min(cores, limit) if limit else cores


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T], xp: ModuleType) -> list[_R]:
    """``[fn(item) for item in items]``, on up to :func:`fft_workers` threads for numpy arrays.

    numpy's element-wise operations and scipy.fft release the GIL, so frames, patches or tiles
    handled one per thread use every core where most numpy work would run on one; each thread's
    own FFTs then run on one thread. On the GPU the items run in order (one stream).
    """
    workers = min(fft_workers(), len(items))
    if xp is not np or workers <= 1:
        return [fn(item) for item in items]

    def run(item: _T) -> _R:
        _pool_thread.inside = True
        return fn(item)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backend") as pool:
        return list(pool.map(run, items))


def gpu_available() -> bool:
    """True when CuPy is importable and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:  # pragma: no cover - GPU only
        return bool(_cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # pragma: no cover - driver missing  # noqa: BLE001
        return False


def array_module(*arrays: Array) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:  # pragma: no cover - GPU only
        return cast(ModuleType, _cupy.get_array_module(*arrays))
    return np


def fft_module(x: Array) -> ModuleType:
    """The scipy.fft-compatible module for ``x`` (scipy.fft or cupyx.scipy.fft)."""
    if array_module(x) is np:
        return cast(ModuleType, scipy.fft)
    return cast(ModuleType, _cupy_fft)  # pragma: no cover - GPU only


def ndimage_module(x: Array) -> ModuleType:
    """``scipy.ndimage`` for numpy input, ``cupyx.scipy.ndimage`` for CuPy input."""
    if array_module(x) is np:
        import scipy.ndimage

        return cast(ModuleType, scipy.ndimage)
    import cupyx.scipy.ndimage  # pragma: no cover - GPU only

    return cast(ModuleType, cupyx.scipy.ndimage)  # pragma: no cover - GPU only


def to_device(x: npt.ArrayLike, device: str = "cpu") -> Array:
    """Copy a host array to ``device`` (``"cpu"`` or ``"gpu"``); used by io and job code only."""
    if device == "cpu":
        return np.asarray(x)
    if device == "gpu":
        if _cupy is None:
            raise ValueError("device='gpu' requested but CuPy is not installed")
        return _cupy.asarray(x)  # pragma: no cover - GPU only
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def to_host(x: Array) -> npt.NDArray[Any]:
    """Return ``x`` as a numpy array (a no-op for numpy input)."""
    if isinstance(x, np.ndarray):
        return x
    return x.get()  # type: ignore[no-any-return]  # pragma: no cover - GPU only


def as_float(x: Array, dtype: npt.DTypeLike | None = None) -> Array:
    """``x`` as a floating array on its own device: float32 unless float64 was given."""
    xp = array_module(x)
    if dtype is None:
        dtype = np.float64 if getattr(x, "dtype", None) == np.float64 else DEFAULT_DTYPE
    return xp.asarray(x, dtype=dtype)


def _fft_kwargs(x: Array) -> dict[str, int]:
    return {"workers": fft_workers()} if array_module(x) is np else {}


def rfftn(x: Array, *, axes: tuple[int, ...] | None = None) -> Array:
    """Real-to-complex FFT over ``axes`` (default: the last 2 for 2D or 3 for 3D data)."""
    x = as_float(x)
    return fft_module(x).rfftn(x, axes=axes, **_fft_kwargs(x))


def irfftn(f: Array, shape: tuple[int, ...], *, axes: tuple[int, ...] | None = None) -> Array:
    """Inverse of :func:`rfftn`; ``shape`` is the real-space shape of the transformed axes."""
    out = fft_module(f).irfftn(f, s=shape, axes=axes, **_fft_kwargs(f))
    return out.astype(np.float64 if f.dtype == np.complex128 else DEFAULT_DTYPE, copy=False)


def rfft2(x: Array) -> Array:
    """Real-to-complex 2D FFT over the last two axes (batched over leading axes)."""
    return rfftn(x, axes=(-2, -1))


def irfft2(f: Array, shape: tuple[int, int]) -> Array:
    """Inverse of :func:`rfft2` for an output of ``shape`` (ny, nx)."""
    return irfftn(f, shape, axes=(-2, -1))


def contiguous_numpy(x: Any, dtypes: Sequence[npt.DTypeLike]) -> bool:
    """True for a C-contiguous numpy array of one of ``dtypes``: what the compiled CPU kernels
    serve (anything else, CuPy arrays included, takes the array code)."""
    return (
        isinstance(x, np.ndarray)
        and x.flags.c_contiguous
        and any(x.dtype == np.dtype(t) for t in dtypes)
    )


def median(x: Array) -> Array:
    """The median of all of ``x``'s values (no NaN), as ``xp.median(x)`` computes it.

    numpy's median partitions around both middle values of an even count; partitioning around
    the upper one and taking the largest value below it gives the same pair in 60% of the time
    (1.3 ms against 2.1 ms for a 432^2 float32 image).
    """
    xp = array_module(x)
    flat = x.ravel()
    n = flat.size
    if xp is not np or n % 2 or n == 0:
        return xp.median(flat)
    part = np.partition(flat, n // 2)
    return np.mean(np.stack([part[: n // 2].max(), part[n // 2]]))


def fft_freqs(shape: tuple[int, ...], *, xp: ModuleType = np, rfft: bool = True) -> list[Array]:
    """Per-axis frequency grids (cycles/pixel), broadcastable, for an ``rfftn`` of ``shape``.

    The last axis holds the non-negative half when ``rfft`` is true.
    """
    grids = []
    ndim = len(shape)
    for axis, n in enumerate(shape):
        if rfft and axis == ndim - 1:
            f = xp.fft.rfftfreq(n).astype(DEFAULT_DTYPE)
        else:
            f = xp.fft.fftfreq(n).astype(DEFAULT_DTYPE)
        view = [1] * ndim
        view[axis] = f.size
        grids.append(f.reshape(view))
    return grids


def radial_frequency(shape: tuple[int, ...], *, xp: ModuleType = np, rfft: bool = True) -> Array:
    """Magnitude of spatial frequency (cycles/pixel) on an ``rfftn`` grid of ``shape``."""
    grids = fft_freqs(shape, xp=xp, rfft=rfft)
    return xp.sqrt(sum(g * g for g in grids))


def fourier_shift(
    f: Array, shifts_px: Array, shape: tuple[int, ...], *, in_place: bool = False
) -> Array:
    """Apply real-space translations to ``rfftn`` spectra by a phase ramp.

    Parameters
    ----------
    f : complex array of shape (..., *half_spectrum_shape)
        Batched spectra of real images/volumes of real-space ``shape``.
    shifts_px : array of shape (..., ndim)
        Translations in pixels, ordered like the axes (``(dy, dx)`` in 2D). A positive
        shift moves content towards higher indices.
    shape : tuple
        Real-space shape of the transformed axes.
    in_place : bool, optional
        Multiply ``f`` itself (complex64, shaped like the result) and return it: on a large
        stack each temporary copy costs as much as the FFT.
    """
    out = f
    for ramp in phase_ramps(shifts_px, shape, f.dtype, xp=array_module(f)):
        if in_place:
            out *= ramp
        else:
            out = out * ramp
    return out


def phase_ramps(
    shifts_px: Array, shape: tuple[int, ...], dtype: Any, *, xp: ModuleType = np
) -> list[Array]:
    """The per-axis factors of :func:`fourier_shift`'s phase ramp, broadcastable to
    ``(..., *half_spectrum_shape)``: their product moves ``rfftn`` spectra of real-space
    ``shape`` by ``shifts_px`` (..., ndim)."""
    shifts = xp.asarray(shifts_px, dtype=DEFAULT_DTYPE)
    ndim = len(shape)
    if shifts.shape[-1] != ndim:
        raise ValueError(f"shifts_px must end in {ndim} components, got shape {shifts.shape}")
    # The ramp factors into one ramp per axis: ny + nx/2 complex exponentials per image
    # instead of ny * nx/2 (profiling showed the full ramp at half of motion correction's time).
    lead = shifts.shape[:-1]
    return [
        xp.exp((-2j * np.pi) * (shifts[..., axis].reshape(lead + (1,) * ndim) * g)).astype(dtype)
        for axis, g in enumerate(fft_freqs(shape, xp=xp))
    ]


def shift_image(x: Array, shifts_px: Array) -> Array:
    """Translate real images (..., ny, nx) by ``shifts_px`` (..., 2) as ``(dy, dx)`` pixels."""
    shape = tuple(x.shape[-2:])
    return irfft2(fourier_shift(rfft2(x), shifts_px, shape), shape)


def fourier_crop(f: Array, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> Array:
    """Crop (down-sample) or zero-pad (up-sample) ``rfftn`` spectra to ``new_shape``.

    ``shape`` and ``new_shape`` are real-space shapes of the trailing axes. The result is scaled
    so that real-space values (not sums) are preserved, as in cryoSPARC's Fourier crop.
    Nyquist terms of even sizes are handled by keeping ``min(n, m)//2`` frequencies per side.
    """
    xp = array_module(f)
    ndim = len(shape)
    if len(new_shape) != ndim:
        raise ValueError("new_shape must have as many axes as shape")
    lead = f.shape[:-ndim]
    out_half = (*new_shape[:-1], new_shape[-1] // 2 + 1)
    out = xp.zeros(lead + out_half, dtype=f.dtype)
    src: list[Any] = [slice(None)] * len(lead)
    dst: list[Any] = [slice(None)] * len(lead)
    # full axes: keep low positive and negative frequencies
    index_pairs: list[list[tuple[slice, slice]]] = []
    for n, m in zip(shape[:-1], new_shape[:-1], strict=True):
        k = min(n, m)
        pos = (k + 1) // 2
        neg = k // 2
        pairs = [(slice(0, pos), slice(0, pos))]
        if neg:
            pairs.append((slice(n - neg, n), slice(m - neg, m)))
        index_pairs.append(pairs)
    kx = min(shape[-1], new_shape[-1]) // 2 + 1
    last = (slice(0, kx), slice(0, kx))

    def _combos(level: int, acc_s: list[Any], acc_d: list[Any]) -> None:
        if level == ndim - 1:
            out[tuple(dst + acc_d + [last[1]])] = f[tuple(src + acc_s + [last[0]])]
            return
        for s, d in index_pairs[level]:
            _combos(level + 1, [*acc_s, s], [*acc_d, d])

    _combos(0, [], [])
    scale = float(np.prod(new_shape)) / float(np.prod(shape))
    return out * scale


def rfft2_cropped(x: Array, new_shape: tuple[int, int]) -> Array:
    """``fourier_crop(rfft2(x), x.shape[-2:], new_shape)`` for a ``new_shape`` no larger than x.

    The rows are transformed in full, then only the ``new_shape[1] // 2 + 1`` kept columns
    along y: 0.5 + 0.5 x kept / all columns of the work of :func:`rfft2` (0.68 for the 2.8x
    binning of motion correction), with the same result.
    """
    xp = array_module(x)
    fft = fft_module(x)
    x = as_float(x)
    ny, nx = x.shape[-2:]
    my, mx = new_shape
    if not (0 < my <= ny and 0 < mx <= nx):
        raise ValueError(f"new_shape {new_shape} must be positive and within {(ny, nx)}")
    rows = fft.rfft(x, axis=-1, **_fft_kwargs(x))[..., : mx // 2 + 1]
    columns = fft.fft(rows, axis=-2, **_fft_kwargs(x))
    pos, neg = (my + 1) // 2, my // 2
    out = xp.concatenate([columns[..., :pos, :], columns[..., ny - neg :, :]], axis=-2)
    out *= my * mx / (ny * nx)
    return out


def irfft2_near_zero(f: Array, shape: tuple[int, int], half: int) -> Array:
    """``irfft2(f, shape)`` at the ``2 * half`` indices nearest zero along each axis only.

    The result keeps FFT order: indices ``0 .. half - 1`` then ``n - half .. n - 1`` of each
    axis (the maps near zero shift of cross-correlations). Only those rows are transformed
    along x: about half of the work of :func:`irfft2` where ``2 * half`` is much less than ny.
    """
    xp = array_module(f)
    fft = fft_module(f)
    ny, nx = shape
    if not 0 < 2 * half <= min(ny, nx):
        raise ValueError(f"half must be positive and at most half of {shape}, got {half}")
    index = [xp.concatenate([xp.arange(half), xp.arange(n - half, n)]) for n in shape]
    rows = fft.ifft(f, axis=-2, **_fft_kwargs(f))[..., index[0], :]
    out = fft.irfft(rows, n=nx, axis=-1, **_fft_kwargs(f))[..., index[1]]
    return out.astype(np.float64 if f.dtype == np.complex128 else DEFAULT_DTYPE, copy=False)


def fourier_resample(x: Array, new_shape: tuple[int, ...]) -> Array:
    """Resample real images/volumes (trailing ``len(new_shape)`` axes) by Fourier crop/pad."""
    ndim = len(new_shape)
    shape = tuple(x.shape[-ndim:])
    axes = tuple(range(-ndim, 0))
    f = rfftn(x, axes=axes)
    return irfftn(fourier_crop(f, shape, new_shape), new_shape, axes=axes)


def radial_average(
    values: Array, shape: tuple[int, ...], *, rfft: bool = True, n_bins: int | None = None
) -> Array:
    """Average ``values`` on an FFT grid of real-space ``shape`` over shells of |k|.

    Returns an array of length ``n_bins`` (default ``min(shape)//2 + 1``); bin ``i`` holds
    frequencies with ``round(|k| * min(shape)) == i`` (cycles per box). Empty bins are 0.
    Leading axes of ``values`` are treated as a batch.
    """
    xp = array_module(values)
    n = min(shape)
    n_bins = n // 2 + 1 if n_bins is None else n_bins
    r = radial_frequency(shape, xp=xp, rfft=rfft) * n
    idx = xp.rint(r).astype(xp.int64).ravel()
    keep = idx < n_bins
    idx = idx[keep]
    ndim = len(shape)
    lead = values.shape[:-ndim]
    flat = values.reshape((*lead, -1))[..., keep]
    counts = xp.bincount(idx, minlength=n_bins)[:n_bins]
    if lead:
        flat2 = flat.reshape(-1, flat.shape[-1])
        sums = xp.stack([xp.bincount(idx, weights=row, minlength=n_bins) for row in flat2])
        sums = sums.reshape((*lead, n_bins))
    else:
        sums = xp.bincount(idx, weights=flat, minlength=n_bins)[:n_bins]
    return (sums / xp.maximum(counts, 1)).astype(DEFAULT_DTYPE)


def rotate_image(x: Array, angle_deg: float, *, order: int = 1) -> Array:
    """Rotate images (..., ny, nx) counter-clockwise by ``angle_deg`` about the box centre.

    Counter-clockwise with x along columns and y along rows, y pointing up (how cryo-EM
    programs display images): a point at ``(x, y) = (r, 0)`` from the centre moves to ``(0, r)``.
    The centre is pixel ``(n//2, n//2)`` (the FFT origin after ``fftshift``), the cryo-EM
    convention. Uses ``scipy.ndimage`` / ``cupyx.scipy.ndimage`` with interpolation ``order``;
    bilinear rotations of float numpy images take a compiled kernel that gives scipy's values
    (:mod:`cryokube.processing._bilinear`).
    """
    xp = array_module(x)
    ndi = ndimage_module(x)
    ny, nx = x.shape[-2:]
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    # output (y, x) -> input coordinates: inverse rotation about the centre
    matrix = np.array([[c, -s], [s, c]])
    centre = np.array([ny // 2, nx // 2], dtype=float)
    offset = centre - matrix @ centre
    if xp is np and order == 1 and x.dtype in (np.float32, np.float64):
        # imported here: numba's import is not every user of this module's to pay
        from cryokube.processing._bilinear import rotate_bilinear_cpu

        return rotate_bilinear_cpu(x, matrix, offset)
    full = np.eye(x.ndim)
    full[-2:, -2:] = matrix
    full_offset = np.zeros(x.ndim)
    full_offset[-2:] = offset
    return ndi.affine_transform(
        x, xp.asarray(full), offset=xp.asarray(full_offset), order=order, mode="constant"
    )
