"""Compiled CPU kernel for rotating stacks of images with bilinear interpolation.

:func:`~cryokube.processing.backend.rotate_image` with ``order=1`` is what
``scipy.ndimage.affine_transform`` computes in its ``"constant"`` mode: each output pixel takes
the input at ``matrix @ (y, x) + offset`` by bilinear interpolation, and 0 where that point
lies outside ``[0, n - 1]`` on either axis. scipy's general transform spends 25-50 ns a pixel
on it (and on a stack it interpolates along the stack axis too); this kernel, compiled by
numba [1]_, does the same arithmetic in a few. Tests hold it to scipy.

References
----------
.. [1] Lam, S. K., Pitrou, A. & Seibert, S. (2015). Numba: a LLVM-based Python JIT compiler.
   Proc. LLVM-HPC 2015, 1-6. doi:10.1145/2833157.2833162
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["rotate_bilinear_cpu"]


@numba.njit(nogil=True, cache=False)
def _rotate(images: Any, matrix: Any, offset: Any, out: Any) -> None:  # pragma: no cover
    ny, nx = images.shape[1], images.shape[2]
    top_y, top_x = ny - 1, nx - 1
    for b in range(images.shape[0]):
        image = images[b]
        for i in range(ny):
            for j in range(nx):
                y = offset[0] + matrix[0, 0] * i + matrix[0, 1] * j
                x = offset[1] + matrix[1, 0] * i + matrix[1, 1] * j
                if y < 0 or y > top_y or x < 0 or x > top_x:
                    out[b, i, j] = 0
                    continue
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                fy, fx = y - y0, x - x0
                y1, x1 = min(y0 + 1, top_y), min(x0 + 1, top_x)
                out[b, i, j] = (1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1]) + fy * (
                    (1 - fx) * image[y1, x0] + fx * image[y1, x1]
                )


def rotate_bilinear_cpu(x: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Images (..., ny, nx) resampled at ``matrix @ (y, x) + offset`` (float64 2 x 2 and 2),
    bilinearly, 0 outside; the result has ``x``'s dtype."""
    ny, nx = x.shape[-2:]
    planes = np.ascontiguousarray(x).reshape(-1, ny, nx)
    out = np.empty_like(planes)
    _rotate(planes, np.asarray(matrix, np.float64), np.asarray(offset, np.float64), out)
    return out.reshape(x.shape)
