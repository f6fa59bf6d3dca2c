"""Compiled CPU kernels for trilinear slice extraction and insertion on a padded half spectrum.

The array code of :func:`~cryokube.processing.algorithms.projection.extract_slices` and
:func:`~cryokube.processing.algorithms.reconstruction.insert_slices` is the method, and it is
what CuPy runs. On the CPU numpy has no fast gather-with-weights or scatter-add: the array code
makes a dozen temporaries per sample and scatters with ``add.at`` one corner at a time, so it
ran 10 to 30 times slower than the memory traffic it needs. These kernels do the same
arithmetic (the same float32 operations in the same order per sample, the rotation included)
in one pass per sample, compiled by numba [1]_; tests hold them to the array code.

Only contiguous complex64 spectra and accumulators take this path (rotations float32 or
float64); anything else, CuPy arrays included, goes through the array code.

References
----------
.. [1] Lam, S. K., Pitrou, A. & Seibert, S. (2015). Numba: a LLVM-based Python JIT compiler.
   Proc. LLVM-HPC 2015, 1-6. doi:10.1145/2833157.2833162
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from cryokube.processing.backend import contiguous_numpy, fft_workers

__all__ = ["extract_slices_cpu", "insert_slices_cpu", "takes_compiled_path"]


def takes_compiled_path(spectrum: Any) -> bool:
    """True when ``spectrum`` (a padded half spectrum or an accumulator's data) is a contiguous
    complex64 numpy array, the only kind the kernels serve."""
    return contiguous_numpy(spectrum, [np.complex64])


@numba.njit(inline="always", cache=False)
def _wrap(i: int, p: int) -> int:  # pragma: no cover - compiled
    """``i % p`` for ``-p <= i < 2p`` (every index here: ``|k| <= 0.5`` gives ``|g| <= P/2``)
    without an integer division."""
    return i + p if i < 0 else (i - p if i >= p else i)


@numba.njit(parallel=True, nogil=True, cache=False)
def _extract(
    spectrum: Any, rot: Any, ky: Any, kx: Any, keep: Any, cube: bool, out: Any
) -> None:  # pragma: no cover - compiled; held to the array code by tests
    p = spectrum.shape[0]
    fp = np.float32(p)
    gmax = np.float32(p // 2)
    half_f = np.float32(0.5)
    one = np.float32(1.0)
    for b in numba.prange(rot.shape[0]):
        a00, a01, a02 = rot[b, 0, 0], rot[b, 0, 1], rot[b, 0, 2]
        a10, a11, a12 = rot[b, 1, 0], rot[b, 1, 1], rot[b, 1, 2]
        for i in range(ky.size):
            y = ky[i]
            for j in range(kx.size):
                x = kx[j]
                k0 = x * a00 + y * a10
                k1 = x * a01 + y * a11
                k2 = x * a02 + y * a12
                if cube:
                    inside = abs(k0) <= half_f and abs(k1) <= half_f and abs(k2) <= half_f
                else:
                    inside = keep[i, j]
                if not inside:
                    out[b, i, 2 * j] = 0
                    out[b, i, 2 * j + 1] = 0
                    continue
                g0 = np.float32(k0) * fp
                g1 = np.float32(k1) * fp
                g2 = np.float32(k2) * fp
                conj = g0 < 0
                if conj:
                    g0, g1, g2 = -g0, -g1, -g2
                gx = min(g0, gmax)
                x0 = np.floor(gx)
                fx = gx - x0
                ix = int(x0)
                y0 = np.floor(g1)
                fy = g1 - y0
                iy0 = _wrap(int(y0), p)
                iy1 = _wrap(iy0 + 1, p)
                z0 = np.floor(g2)
                fz = g2 - z0
                iz0 = _wrap(int(z0), p)
                iz1 = _wrap(iz0 + 1, p)
                gx0 = one - fx
                x2 = 2 * ix
                wz0, wy0 = one - fz, one - fy
                re00, im00 = _lerp_x(spectrum, iz0, iy0, x2, gx0, fx)
                re01, im01 = _lerp_x(spectrum, iz0, iy1, x2, gx0, fx)
                re10, im10 = _lerp_x(spectrum, iz1, iy0, x2, gx0, fx)
                re11, im11 = _lerp_x(spectrum, iz1, iy1, x2, gx0, fx)
                w00, w01, w10, w11 = wz0 * wy0, wz0 * fy, fz * wy0, fz * fy
                re = w00 * re00 + w01 * re01 + w10 * re10 + w11 * re11
                im = w00 * im00 + w01 * im01 + w10 * im10 + w11 * im11
                out[b, i, 2 * j] = re
                out[b, i, 2 * j + 1] = -im if conj else im


@numba.njit(inline="always", cache=False)
def _lerp_x(
    spectrum: Any, iz: int, iy: int, x2: int, gx0: Any, fx: Any
) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """Linear interpolation along x between voxels ``x2 / 2`` and ``x2 / 2 + 1`` of row
    ``(iz, iy)`` of a float32 view of a complex spectrum: (real, imaginary)."""
    return (
        gx0 * spectrum[iz, iy, x2] + fx * spectrum[iz, iy, x2 + 2],
        gx0 * spectrum[iz, iy, x2 + 1] + fx * spectrum[iz, iy, x2 + 3],
    )


def extract_slices_cpu(
    spectrum: npt.NDArray[np.complex64],
    rotations: npt.NDArray[np.floating[Any]],
    ky: npt.NDArray[np.floating[Any]],
    kx: npt.NDArray[np.floating[Any]],
    keep: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.complex64]:
    """Central slices (B, N, N//2 + 1) of a padded half spectrum (P, P, P//2 + 2), before the
    centring ramp, on the image axes ``ky``, ``kx`` (``projection.slice_axes``): zero outside
    ``keep`` (N, N//2 + 1), or with None outside the sampled cube (``|k| <= 0.5`` on every
    axis); the array code is ``projection._interpolate``."""
    rot = rotations.astype(ky.dtype)
    out = np.empty((rot.shape[0], ky.size, kx.size), dtype=np.complex64)
    mask = np.ones((ky.size, kx.size), dtype=bool) if keep is None else keep
    with _threads():
        _extract(spectrum.view(np.float32), rot, ky, kx, mask, keep is None, out.view(np.float32))
    return out


@numba.njit(parallel=True, nogil=True, cache=False)
def _insert(
    spectra: Any,
    transfer: Any,
    weights: Any,
    rot: Any,
    inside: Any,
    ky: Any,
    kx: Any,
    data: Any,
    weight: Any,
    p: int,
    n_threads: int,
) -> None:  # pragma: no cover - compiled; held to the array code by tests
    width = p // 2 + 1
    fp = np.float32(p)
    gmax = np.float32(p // 2)
    xmax = np.float32(p // 2 - 1)
    one = np.float32(1.0)
    # thread t owns a slab of z planes: no two threads write one voxel, each voxel gets its
    # samples in the same order whatever the thread count, and a sample whose two z planes lie
    # in one slab is skipped by the other threads after its z coordinate. Equal slabs split
    # the samples evenly between 2 threads (kz >= 0 and kz < 0), less so between more.
    owner = (np.arange(p) * n_threads) // p
    for t in numba.prange(n_threads):
        for b in range(rot.shape[0]):
            a00, a01, a02 = rot[b, 0, 0], rot[b, 0, 1], rot[b, 0, 2]
            a10, a11, a12 = rot[b, 1, 0], rot[b, 1, 1], rot[b, 1, 2]
            wb = weights[b]
            tb = b if transfer.shape[0] > 1 else 0
            for m in range(ky.size):
                y = ky[m]
                x = kx[m]
                g0 = (x * a00 + y * a10) * fp
                g1 = (x * a01 + y * a11) * fp
                g2 = (x * a02 + y * a12) * fp
                z0 = np.floor(g2) if g0 >= 0 else np.floor(-g2)
                iz0 = _wrap(int(z0), p)
                iz1 = _wrap(iz0 + 1, p)
                own0 = owner[iz0] == t
                own1 = owner[iz1] == t
                if not (own0 or own1):
                    continue
                j = inside[m]
                c = transfer[tb, j]
                s = c * wb
                re = spectra[b, 2 * j] * s
                im = spectra[b, 2 * j + 1] * s
                sample_weight = c * c * wb
                if g0 < 0:
                    g0, g1, g2 = -g0, -g1, -g2
                    im = -im
                gx = min(g0, gmax)
                x0 = min(np.floor(gx), xmax)
                fx = gx - x0
                ix = int(x0)
                fz = g2 - z0
                y0 = np.floor(g1)
                fy = g1 - y0
                iy0 = _wrap(int(y0), p)
                iy1 = _wrap(iy0 + 1, p)
                wx0 = one - fx
                wy0 = one - fy
                if own0:
                    wz = one - fz
                    plane = iz0 * p
                    _scatter_x(
                        data,
                        weight,
                        (plane + iy0) * width,
                        ix,
                        wz * wy0,
                        wx0,
                        fx,
                        re,
                        im,
                        sample_weight,
                    )
                    _scatter_x(
                        data,
                        weight,
                        (plane + iy1) * width,
                        ix,
                        wz * fy,
                        wx0,
                        fx,
                        re,
                        im,
                        sample_weight,
                    )
                if own1:
                    plane = iz1 * p
                    _scatter_x(
                        data,
                        weight,
                        (plane + iy0) * width,
                        ix,
                        fz * wy0,
                        wx0,
                        fx,
                        re,
                        im,
                        sample_weight,
                    )
                    _scatter_x(
                        data,
                        weight,
                        (plane + iy1) * width,
                        ix,
                        fz * fy,
                        wx0,
                        fx,
                        re,
                        im,
                        sample_weight,
                    )


@numba.njit(inline="always", cache=False)
def _scatter_x(
    data: Any,
    weight: Any,
    row: int,
    x: int,
    wzy: Any,
    wx0: Any,
    fx: Any,
    re: Any,
    im: Any,
    sample_weight: Any,
) -> None:  # pragma: no cover - compiled
    """Add a sample to voxels ``x`` and ``x + 1`` of a row that starts at flat index ``row`` of
    ``weight`` (``2 * row`` of ``data``, the float32 view of the complex accumulator), with
    weights ``wzy * wx0`` and ``wzy * fx``."""
    w0 = wzy * wx0
    w1 = wzy * fx
    i = row + x
    data[2 * i] += w0 * re
    data[2 * i + 1] += w0 * im
    data[2 * i + 2] += w1 * re
    data[2 * i + 3] += w1 * im
    weight[i] += w0 * sample_weight
    weight[i + 1] += w1 * sample_weight


def insert_slices_cpu(
    data: npt.NDArray[np.complex64],
    weight: npt.NDArray[np.float32],
    spectra: npt.NDArray[np.complex64],
    transfer: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    rotations: npt.NDArray[np.float32],
    inside: npt.NDArray[np.intp],
    ky: npt.NDArray[np.float32],
    kx: npt.NDArray[np.float32],
) -> None:
    """Add the samples ``inside`` (flat indices into an image's ``rfft2`` grid, at frequencies
    ``ky``, ``kx`` each) of ``spectra`` and ``transfer`` (B, N, N//2 + 1), or one ``transfer``
    (1, N, N//2 + 1) for all, with per-slice ``weights`` (B,), to the accumulator
    ``data``/``weight`` (P, P, P//2 + 1) in place; the array code is
    ``reconstruction._insert_arrays``."""
    b = spectra.shape[0]
    with _threads() as n_threads:
        _insert(
            np.ascontiguousarray(spectra).reshape(b, -1).view(np.float32),
            np.ascontiguousarray(transfer).reshape(transfer.shape[0], -1),
            weights,
            rotations,
            inside,
            ky,
            kx,
            data.reshape(-1).view(np.float32),
            weight.reshape(-1),
            data.shape[0],
            n_threads,
        )


_launch = threading.Lock()


@contextmanager
def _threads() -> Iterator[int]:
    """numba's thread count bounded by :func:`fft_workers` (the process's CPU share) inside,
    one kernel at a time: numba's default thread pool cannot run two from different threads."""
    n_threads = max(1, min(fft_workers(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    with _launch:
        before = numba.get_num_threads()
        numba.set_num_threads(n_threads)
        try:
            yield n_threads
        finally:
            numba.set_num_threads(before)
