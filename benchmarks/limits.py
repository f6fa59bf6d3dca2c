"""This machine's limits, measured at the start of every benchmark run.

- ``memory_bandwidth_GBps``: a large float32 array copy (read + write bytes / time).
- ``fft_GFLOPs_1thread`` / ``fft_GFLOPs_2threads``: a 4096 x 4096 float32 ``scipy.fft.rfft2``,
  counted as 2.5 N log2 N flops (half of the complex 5 N log2 N), N = 4096^2.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from harness import best_time_s


def memory_bandwidth_GBps(n_bytes: int = 512 * 1024 * 1024) -> float:
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    t = best_time_s(lambda: np.copyto(dst, src), repeat=5)
    return 2 * n_bytes / t / 1e9


def rfft2_flops(ny: int, nx: int) -> float:
    n = ny * nx
    return 2.5 * n * math.log2(n)


def fft_GFLOPs(size: int = 4096, workers: int = 1) -> float:
    x = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    t = best_time_s(lambda: scipy.fft.rfft2(x, workers=workers), repeat=5)
    return rfft2_flops(size, size) / t / 1e9


def measure(*, size: int = 4096, n_bytes: int = 512 * 1024 * 1024) -> dict[str, float]:
    return {
        "memory_bandwidth_GBps": memory_bandwidth_GBps(n_bytes),
        "fft_GFLOPs_1thread": fft_GFLOPs(size, 1),
        "fft_GFLOPs_2threads": fft_GFLOPs(size, 2),
    }
