"""Compiled CPU kernels for motion correction's two memory-bound passes over a movie.

The array code in :mod:`~cryokube.processing.algorithms.motion` is the method, and it is what
CuPy runs. On the CPU numpy makes one pass over memory per operation: halving a uint8 frame
(2 x 2 block means) took 16 ms where one read of the frame takes 2 ms, and the phase-ramped,
dose-weighted sums of a tile stack read it five times. These kernels do the same arithmetic in
one pass, compiled by numba [1]_; tests hold them to the array code. They run serially and
release the GIL, so that the caller's threads (one frame or tile each) use every core.

References
----------
.. [1] Lam, S. K., Pitrou, A. & Seibert, S. (2015). Numba: a LLVM-based Python JIT compiler.
   Proc. LLVM-HPC 2015, 1-6. doi:10.1145/2833157.2833162
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["FRAME_DTYPES", "halved_padded_cpu", "ramped_sums_cpu"]

# Frame dtypes the halving kernel serves (numba has no float16 arithmetic).
FRAME_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32)


@numba.njit(nogil=True, cache=False)
def _halve_pad(frame: Any, out: Any, fill: Any) -> None:  # pragma: no cover - compiled
    half_y, half_x = frame.shape[0] // 2, frame.shape[1] // 2
    quarter = np.float32(0.25)
    for y in range(out.shape[0]):
        row = out[y]
        if y >= half_y:
            row[:] = fill
            continue
        a, b = frame[2 * y], frame[2 * y + 1]
        for x in range(half_x):
            row[x] = (
                (np.float32(a[2 * x]) + np.float32(a[2 * x + 1]))
                + (np.float32(b[2 * x]) + np.float32(b[2 * x + 1]))
            ) * quarter
        row[half_x:] = fill


def halved_padded_cpu(frame: np.ndarray, shape: tuple[int, int], fill: Any) -> np.ndarray:
    """Means of the 2 x 2 blocks of ``frame`` (even sides) as float32, padded at the high ends to
    ``shape`` with ``fill``: ``_padded(_halved(frame), shape, fill)`` of the motion module."""
    out = np.empty(shape, dtype=np.float32)
    _halve_pad(frame, out, np.float32(fill))
    return out


@numba.njit(nogil=True, cache=False)
def _ramped_sums(
    spectra: Any, ramp_y: Any, ramp_x: Any, weights: Any, plain: Any, weighted: Any
) -> None:  # pragma: no cover - compiled
    n_frames, rows, columns = spectra.shape
    weigh = weights.shape[0] > 0
    for y in range(rows):
        plain[y] = 0
        weighted[y] = 0
        for f in range(n_frames):
            ry = ramp_y[f, y]
            for x in range(columns):
                s = spectra[f, y, x] * ry * ramp_x[f, x]
                plain[y, x] += s
                if weigh:
                    weighted[y, x] += s * weights[f, y, x]


def ramped_sums_cpu(
    spectra: np.ndarray, ramp_y: np.ndarray, ramp_x: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``sum_f S_f R_f`` and ``sum_f S_f R_f W_f`` over the frames of a complex64 tile stack
    ``S`` (n, ky, kx), with the ramp ``R_f`` as its factors ``ramp_y`` (n, ky, 1) and ``ramp_x``
    (n, 1, kx) and the dose weights ``W`` (n, ky, kx); ``S`` is left as it was."""
    plain = np.empty(spectra.shape[1:], dtype=np.complex64)
    weighted = np.empty_like(plain)
    none = np.empty((0, 0, 0), dtype=np.complex64)
    _ramped_sums(
        spectra,
        ramp_y[..., 0],
        ramp_x[:, 0, :],
        none if weights is None else weights,
        plain,
        weighted,
    )
    return plain, None if weights is None else weighted
