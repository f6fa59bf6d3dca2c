"""Read throughput of movies (LZW TIFF) and particle stacks (MRC), in decoded MB/s.

The counting movie is generated here: 4096 x 4096 uint8 frames of Poisson counts at
1 e/px/frame, LZW-compressed by tifffile as EPU and SerialEM write them (64-row strips).
Files live in a temporary folder, so reads come from the page cache: the figures measure
decoding and copying, not the disk.

Rooflines (``ratio_to_limit`` = measured time / roofline time, 1 is the limit):
- LZW TIFF: decoded bytes / (``lzw_decode_MBps`` x threads used); the ratio to a memory copy
  of the decoded bytes at ``memory_bandwidth_GBps`` is in ``extra``.
- MRC stack: a copy of the bytes read (read + write) at ``memory_bandwidth_GBps``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from cryokube.processing.io.movies import iter_movie, write_movie_tiff
from cryokube.processing.io.mrc import open_stack, write_mrc
from harness import Record, benchmark, best_time_s, peak_traced_MB

FRAME_PX = 4096
N_FRAMES = 8
DOSE_E_PER_PX = 1.0
STACK_SHAPE = (2000, 128, 128)


def _copy_time_s(n_bytes: int, machine: dict[str, float]) -> float:
    """Time to read and write ``n_bytes`` at the measured memory bandwidth."""
    return 2 * n_bytes / (machine["memory_bandwidth_GBps"] * 1e9)


def _drain_movie(path: Path, *, n_threads: int, batch_size: int) -> int:
    n_bytes = 0
    for batch in iter_movie(path, batch_size=batch_size, n_threads=n_threads):
        n_bytes += batch.nbytes
    return n_bytes


@benchmark("io_tiff_lzw")
def tiff_lzw_read(machine: dict[str, float]) -> list[Record]:
    rng = np.random.default_rng(0)
    frames = rng.poisson(DOSE_E_PER_PX, (N_FRAMES, FRAME_PX, FRAME_PX)).astype(np.uint8)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "movie.tif"
        write_movie_tiff(path, frames, compression="lzw")
        compressed_MB = path.stat().st_size / 1e6
        n_bytes = frames.nbytes
        del frames
        for threads in (1, 2):
            batch = 2 * threads
            t = best_time_s(
                lambda threads=threads, batch=batch: _drain_movie(
                    path, n_threads=threads, batch_size=batch
                ),
                repeat=3,
            )
            peak = peak_traced_MB(
                lambda threads=threads, batch=batch: _drain_movie(
                    path, n_threads=threads, batch_size=batch
                )
            )
            lzw_limit_s = n_bytes / (machine["lzw_decode_MBps"] * 1e6 * threads)
            records.append(
                Record(
                    f"io_tiff_lzw/read_{FRAME_PX}px_{threads}thread",
                    n_bytes / t / 1e6,
                    "MB/s decoded",
                    ratio_to_limit=t / lzw_limit_s,
                    limit=f"lzw_decode_MBps x {threads}",
                    peak_memory_MB=peak,
                    notes=(
                        f"{N_FRAMES} frames {FRAME_PX}^2 uint8, {DOSE_E_PER_PX} e/px/frame, "
                        f"batches of {batch}; file {compressed_MB:.1f} MB "
                        f"({compressed_MB * 1e6 / n_bytes:.2f} of raw)"
                    ),
                    extra={"ratio_to_memory_bandwidth": t / _copy_time_s(n_bytes, machine)},
                )
            )
    return records


@benchmark("io_mrc_stack")
def mrc_stack_read(machine: dict[str, float]) -> list[Record]:
    stack = np.random.default_rng(1).standard_normal(STACK_SHAPE, dtype=np.float32)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "particles.mrcs"
        write_mrc(path, stack, pixel_size_A=1.0, stack=True)
        n_bytes = stack.nbytes
        del stack

        def sequential() -> None:
            with open_stack(path) as mrcs:
                for _ in mrcs.iter_batches(500):
                    pass

        t = best_time_s(sequential, repeat=3)
        records.append(
            Record(
                "io_mrc_stack/sequential_batches",
                n_bytes / t / 1e6,
                "MB/s",
                ratio_to_limit=t / _copy_time_s(n_bytes, machine),
                limit="memory_bandwidth_GBps (copy)",
                peak_memory_MB=peak_traced_MB(sequential),
                notes=f"{STACK_SHAPE} float32, memory-mapped, batches of 500",
            )
        )
        picks = np.random.default_rng(2).permutation(STACK_SHAPE[0])[:256]
        picked_bytes = picks.size * STACK_SHAPE[1] * STACK_SHAPE[2] * 4

        def random_access() -> None:
            with open_stack(path) as mrcs:
                mrcs[picks]

        t = best_time_s(random_access, repeat=5)
        records.append(
            Record(
                "io_mrc_stack/random_256",
                picked_bytes / t / 1e6,
                "MB/s",
                ratio_to_limit=t / _copy_time_s(picked_bytes, machine),
                limit="memory_bandwidth_GBps (copy)",
                notes="256 random particles by fancy index on the lazy stack",
            )
        )
    return records
