"""The machine's own limits as records, so the report carries them beside every figure."""

from __future__ import annotations

from harness import Record, benchmark


@benchmark("machine")
def machine_limits(machine: dict[str, float]) -> list[Record]:
    return [
        Record(
            "machine/memory_bandwidth",
            machine["memory_bandwidth_GBps"],
            "GB/s",
            ratio_to_limit=1.0,
            limit="memory_bandwidth_GBps",
        ),
        Record(
            "machine/rfft2_4096_1thread",
            machine["fft_GFLOPs_1thread"],
            "GFLOP/s",
            ratio_to_limit=1.0,
            limit="fft_GFLOPs_1thread",
        ),
        Record(
            "machine/rfft2_4096_2threads",
            machine["fft_GFLOPs_2threads"],
            "GFLOP/s",
            ratio_to_limit=machine["fft_GFLOPs_1thread"] * 2 / machine["fft_GFLOPs_2threads"],
            limit="2 x fft_GFLOPs_1thread",
        ),
    ]
