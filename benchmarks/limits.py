"""This machine's limits, measured at the start of every benchmark run.

- ``memory_bandwidth_GBps``: a large float32 array copy (read + write bytes / time).
- ``fft_GFLOPs_1thread`` / ``fft_GFLOPs_2threads``: a 4096 x 4096 float32 ``scipy.fft.rfft2``,
  counted as 2.5 N log2 N flops (half of the complex 5 N log2 N), N = 4096^2.
- ``matmul_GFLOPs``: a 2048 x 2048 by 2048 x 2048 float32 matrix product through numpy's BLAS
  (its default threads), counted as 2 n^3 flops: the rate of the E-steps' score products.
- ``lzw_decode_MBps``: one thread of ``imagecodecs.lzw_decode`` on a realistic counting frame
  (4096 x 4096 uint8, Poisson 1 e/px, one LZW stream), decoded MB per second. The
  roofline of reading LZW TIFF movies (with the full-frame FFTs, motion correction's).
"""

from __future__ import annotations

import math

import imagecodecs
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


def matmul_GFLOPs(size: int = 2048) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    t = best_time_s(lambda: a @ b, repeat=5)
    return 2.0 * size**3 / t / 1e9


def lzw_decode_MBps(size: int = 4096, dose_e_per_px: float = 1.0) -> float:
    frame = np.random.default_rng(0).poisson(dose_e_per_px, (size, size)).astype(np.uint8)
    encoded = imagecodecs.lzw_encode(frame.tobytes())
    t = best_time_s(lambda: imagecodecs.lzw_decode(encoded, out=frame.nbytes), repeat=5)
    return frame.nbytes / t / 1e6


def measure(*, size: int = 4096, n_bytes: int = 512 * 1024 * 1024) -> dict[str, float]:
    return {
        "memory_bandwidth_GBps": memory_bandwidth_GBps(n_bytes),
        "fft_GFLOPs_1thread": fft_GFLOPs(size, 1),
        "fft_GFLOPs_2threads": fft_GFLOPs(size, 2),
        "matmul_GFLOPs": matmul_GFLOPs(),
        "lzw_decode_MBps": lzw_decode_MBps(size),
    }
