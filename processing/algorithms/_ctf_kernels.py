"""Compiled CPU kernels for the CTF fit's score: the ring regressors' sums per k^2 bin, and the
regression in the annulus of every bin.

The array code of :func:`~cryokube.processing.algorithms.ctf_fit._annulus_partial_r2` is the
method, and it is what CuPy runs. On the CPU it spent most of a score evaluation on numpy's
per-call costs: 27 gathers of annulus sums, stacking them into a Gram matrix per k^2 bin (4,096), and a
batched LAPACK solve of 4 x 4 systems (1 ms alone). This kernel does the same regression per
bin in one pass, compiled by numba [1]_: the annulus sums from the prefix sums, the background
block's Cholesky solve, the rings' Schur complement and its 2 x 2 solve. Tests hold it to the
array code. The per-bin sums of the ring regressors' products take one pass over the grid
where numpy made 13 ``bincount`` passes, adding in the same order (the same sums to the bit).

References
----------
.. [1] Lam, S. K., Pitrou, A. & Seibert, S. (2015). Numba: a LLVM-based Python JIT compiler.
   Proc. LLVM-HPC 2015, 1-6. doi:10.1145/2833157.2833162
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["BACKGROUND_COLUMNS", "annulus_partial_r2_cpu", "ring_bin_sums_cpu"]

# The local background's regressors (1, k^2, cos 2theta, sin 2theta): a constant, so that the
# compiler unrolls the small solves (half the time of a loop bound known only at run time).
BACKGROUND_COLUMNS = 4


@numba.njit(nogil=True, cache=False)
def _partial_r2(
    gram_prefix: Any,
    rhs_prefix: Any,
    data_prefix: Any,
    lo: Any,
    hi: Any,
    x: Any,
    out: Any,
) -> None:  # pragma: no cover - compiled; held to the array code by tests
    nb = BACKGROUND_COLUMNS
    n = nb + 2
    gram = np.empty((n, n))
    rhs = np.empty(n)
    chol = np.empty((nb, nb))  # below the diagonal; the diagonal's inverses apart
    inverse_diagonal = np.empty(nb)
    solved = np.empty((nb, 3))
    for b in range(lo.size):
        l, h = lo[b], hi[b]
        k = 0
        for i in range(n):
            for j in range(i, n):
                gram[i, j] = gram[j, i] = gram_prefix[h, k] - gram_prefix[l, k]
                k += 1
            rhs[i] = rhs_prefix[h, i] - rhs_prefix[l, i]
        trace = 0.0
        for i in range(nb):
            trace += gram[i, i]
        ridge = 1e-9 * trace + 1e-12
        # Cholesky factor of the background block plus ridge, then the solves of its
        # right-hand sides: the data's, and the two ring columns'.
        for i in range(nb):
            for j in range(i + 1):
                s = gram[i, j] + (ridge if i == j else 0.0)
                for m in range(j):
                    s -= chol[i, m] * chol[j, m]
                if i == j:
                    inverse_diagonal[i] = 1.0 / np.sqrt(max(s, 1e-300))
                else:
                    chol[i, j] = s * inverse_diagonal[j]
        for c in range(3):
            for i in range(nb):
                s = rhs[i] if c == 0 else gram[i, nb + c - 1]
                for m in range(i):
                    s -= chol[i, m] * solved[m, c]
                solved[i, c] = s * inverse_diagonal[i]
            for i in range(nb - 1, -1, -1):
                s = solved[i, c]
                for m in range(i + 1, nb):
                    s -= chol[m, i] * solved[m, c]
                solved[i, c] = s * inverse_diagonal[i]
        rss0 = data_prefix[h] - data_prefix[l]
        for i in range(nb):
            rss0 -= rhs[i] * solved[i, 0]
        s00, s01, s11 = gram[nb, nb], gram[nb, nb + 1], gram[nb + 1, nb + 1]
        r0, r1 = rhs[nb], rhs[nb + 1]
        for i in range(nb):
            s00 -= gram[i, nb] * solved[i, 1]
            s01 -= gram[i, nb] * solved[i, 2]
            s11 -= gram[i, nb + 1] * solved[i, 2]
            r0 -= gram[i, nb] * solved[i, 0]
            r1 -= gram[i, nb + 1] * solved[i, 0]
        ridge = 1e-9 * (s00 + s11) + 1e-30
        s00 += ridge
        s11 += ridge
        inverse_det = 1.0 / (s00 * s11 - s01 * s01)
        beta0 = (s11 * r0 - s01 * r1) * inverse_det
        beta1 = (s00 * r1 - s01 * r0) * inverse_det
        explained = beta0 * r0 + beta1 * r1
        amplitude = beta0 + beta1 * x[b]
        fraction = min(max(explained / max(rss0, 1e-30), 0.0), 1.0)
        out[b] = np.sign(amplitude) * fraction


def annulus_partial_r2_cpu(
    prefix: dict[tuple[Any, Any], np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    centred_k2: np.ndarray,
) -> np.ndarray:
    """Signed partial R^2 of the ring regressors in every bin's annulus ``[lo, hi)`` from the
    prefix sums ``prefix[i, j]`` (``i <= j`` of the :data:`BACKGROUND_COLUMNS` background and 2
    ring columns) and
    ``prefix[i, "d"]``, ``prefix["d", "d"]`` with the data; ``centred_k2`` is each bin's
    ``k^2 - k2_centre``."""
    n = BACKGROUND_COLUMNS + 2
    # one row per bin: a bin's sums lie together in memory
    gram_prefix = np.stack([prefix[i, j] for i in range(n) for j in range(i, n)], axis=1)
    rhs_prefix = np.stack([prefix[i, "d"] for i in range(n)], axis=1)
    out = np.empty(lo.size, dtype=np.float64)
    _partial_r2(
        gram_prefix.astype(np.float64, copy=False),
        rhs_prefix.astype(np.float64, copy=False),
        np.asarray(prefix["d", "d"], dtype=np.float64),
        lo,
        hi,
        np.asarray(centred_k2, dtype=np.float64),
        out,
    )
    return out


@numba.njit(nogil=True, cache=False)
def _ring_sums(
    band_bins: Any, x: Any, cos2: Any, sin2: Any, m: Any, d: Any, out: Any
) -> None:  # pragma: no cover - compiled; held to the array code by tests
    n_bins = out.shape[1]
    out[:] = 0
    for p in range(m.size):
        b = band_bins[p]
        if b >= n_bins:
            continue
        mp = m[p]
        mx = x[p] * mp
        out[0, b] += mp
        out[1, b] += x[p] * mp
        out[2, b] += cos2[p] * mp
        out[3, b] += sin2[p] * mp
        out[4, b] += mp * mp
        out[5, b] += mx
        out[6, b] += x[p] * mx
        out[7, b] += cos2[p] * mx
        out[8, b] += sin2[p] * mx
        out[9, b] += mp * mx
        out[10, b] += mx * mx
        out[11, b] += mp * d[p]
        out[12, b] += mx * d[p]


def ring_bin_sums_cpu(
    band_bins: np.ndarray,
    background: list[np.ndarray],
    model: np.ndarray,
    data: np.ndarray,
    n_bins: int,
) -> np.ndarray:
    """Sums per k^2 bin (``band_bins``; ``n_bins`` or more is outside the band) of the products
    of the ring regressors ``m = CTF^2`` and ``x m`` with the background columns ``1, x, cos,
    sin`` (``x = k^2 - k2_centre``), with each other and with the data: rows ``(i, 4)`` for
    ``i <= 4``, ``(i, 5)`` for ``i <= 5``, ``(4, d)``, ``(5, d)``, with 4 and 5 the rings'
    columns ``m`` and ``x m``."""
    out = np.empty((13, n_bins), dtype=np.float64)
    _ring_sums(band_bins, background[1], background[2], background[3], model, data, out)
    return out
