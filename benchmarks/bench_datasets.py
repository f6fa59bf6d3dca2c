"""Particle metadata I/O: cryoSPARC ``.cs`` load/save and RELION STAR import/export.

Inputs are the 2019 real particles of ``cryosparc_P12_J24_001_particles.cs`` (34 fields, 3D
poses) repeated with fresh uids; files live in a temporary folder, so reads come from the page
cache and the figures measure parsing and copying, not the disk.

- ``.cs`` load and save: ``ratio_to_limit`` against a copy of the file's bytes (read + write)
  at ``memory_bandwidth_GBps``; peer: cryosparc-tools' ``Dataset.load`` / ``Dataset.save`` on
  the same file (``ratio_to_peer`` = peer time / our time).
- STAR export and import (with the pose and unit conversions): peer is ``starfile`` alone
  writing / reading a table with the same columns, which our code calls underneath, so the
  ratio is the cost of the conversions on top of the STAR text itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import starfile
from cryokube.processing.datasets import (
    Dataset,
    concatenate,
    dataset_from_star,
    load_cs,
    random_uids,
    save_cs,
    save_star,
)
from cryosparc.dataset import Dataset as CsToolsDataset
from harness import Record, benchmark, best_time_s, peak_traced_MB

SOURCE = (
    Path(__file__).resolve().parents[2]
    / "shared/data/real/cryodrgn-testdata/cryosparc_P12_J24_001_particles.cs"
)
CS_COPIES = 250  # 504,750 particles
STAR_COPIES = 25  # 50,475 particles


def _particles(copies: int) -> Dataset:
    base = load_cs(SOURCE)
    shards = []
    for copy in range(copies):
        rows = base.data.copy()
        rows["uid"] = random_uids(len(rows), seed=copy)
        shards.append(Dataset(rows))
    return concatenate(shards)


@benchmark("datasets_cs")
def cs_io(machine: dict[str, float]) -> list[Record]:
    particles = _particles(CS_COPIES)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "particles.cs"
        save_cs(particles, path)
        size_MB = path.stat().st_size / 1e6
        copy_s = 2 * size_MB * 1e6 / (machine["memory_bandwidth_GBps"] * 1e9)
        ours_load = best_time_s(lambda: load_cs(path))
        peer_load = best_time_s(lambda: CsToolsDataset.load(path))
        records.append(
            Record(
                name="datasets_cs_load",
                value=size_MB / ours_load,
                unit="MB/s",
                ratio_to_limit=ours_load / copy_s,
                limit="memory_bandwidth_GBps",
                peer="cryosparc-tools Dataset.load",
                ratio_to_peer=peer_load / ours_load,
                peak_memory_MB=peak_traced_MB(lambda: load_cs(path)),
                extra={"particles": len(particles), "file_MB": size_MB},
            )
        )
        theirs = CsToolsDataset.load(path)
        ours_save = best_time_s(lambda: save_cs(particles, path))
        peer_save = best_time_s(lambda: theirs.save(Path(folder) / "peer.cs"))
        records.append(
            Record(
                name="datasets_cs_save",
                value=size_MB / ours_save,
                unit="MB/s",
                ratio_to_limit=ours_save / copy_s,
                limit="memory_bandwidth_GBps",
                peer="cryosparc-tools Dataset.save",
                ratio_to_peer=peer_save / ours_save,
                notes="includes fsync and an atomic rename",
                extra={"particles": len(particles), "file_MB": size_MB},
            )
        )
    return records


@benchmark("datasets_star")
def star_io(machine: dict[str, float]) -> list[Record]:
    del machine  # figures are relative to starfile in the same run
    particles = _particles(STAR_COPIES)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        ours_path, peer_path = Path(folder) / "ours.star", Path(folder) / "peer.star"
        save_star(particles, ours_path)
        blocks = starfile.read(ours_path, always_dict=True)
        ours_write = best_time_s(lambda: save_star(particles, ours_path), repeat=2)
        peer_write = best_time_s(lambda: starfile.write(blocks, peer_path), repeat=2)
        records.append(
            Record(
                name="datasets_star_export",
                value=len(particles) / ours_write,
                unit="particles/s",
                peer="starfile.write of the same tables",
                ratio_to_peer=peer_write / ours_write,
                extra={"particles": len(particles)},
            )
        )
        ours_read = best_time_s(lambda: dataset_from_star(ours_path), repeat=2)
        peer_read = best_time_s(lambda: starfile.read(ours_path), repeat=2)
        records.append(
            Record(
                name="datasets_star_import",
                value=len(particles) / ours_read,
                unit="particles/s",
                peer="starfile.read of the same file",
                ratio_to_peer=peer_read / ours_read,
                peak_memory_MB=peak_traced_MB(lambda: dataset_from_star(ours_path)),
                extra={
                    "particles": len(particles),
                    "max_pose_error_deg": _pose_error_deg(particles, ours_path),
                },
            )
        )
    return records


def _pose_error_deg(particles: Dataset, path: Path) -> float:
    """Largest rotation between the poses before and after a STAR round trip, degrees."""
    from cryokube.processing.geometry import axis_angle_to_matrix

    before = axis_angle_to_matrix(particles["alignments3D/pose"].astype(np.float64))
    after = axis_angle_to_matrix(dataset_from_star(path)["alignments3D/pose"].astype(np.float64))
    cosine = (np.einsum("nij,nij->n", before, after) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))).max())
