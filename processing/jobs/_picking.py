"""What the blob and template pickers share: the per-micrograph loop and the particle rows."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._items import ItemResult, check_nyquist, process_items, save_output
from .base import JobInputError

if TYPE_CHECKING:
    from cryokube.processing.algorithms.picking import Picks
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext

PickFunction = Callable[[Any, int], "Picks"]
"""``pick(micrograph_on_device, index)`` returns the picks of micrograph ``index``."""


def run_picker(
    ctx: JobContext, micrographs: Dataset, pick: PickFunction, *, lowpass_res_A: float
) -> None:
    """Pick every micrograph of this shard and write the ``particles`` output group.

    Parameters
    ----------
    ctx : JobContext
        The running job.
    micrographs : Dataset
        The input micrographs (``micrograph_blob/path``, ``/psize_A``).
    pick : callable
        ``pick(image, index)`` with ``image`` of shape (ny, nx), float32, on ``ctx.device``.
    lowpass_res_A : float
        The job's low-pass resolution (A), checked against every micrograph's Nyquist.
    """
    from cryokube.processing.backend import to_device, to_host
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.io.mrc import read_mrc

    for field in ("micrograph_blob/path", "micrograph_blob/psize_A"):
        if field not in micrographs:
            raise JobInputError(f"inputs.micrographs: the dataset has no {field} field")
    paths = micrographs.strings("micrograph_blob/path")
    check_nyquist(lowpass_res_A, "lowpass_res_A", micrographs["micrograph_blob/psize_A"], paths)
    groups = micrographs.get("ctf/exp_group_id")

    def process(index: int) -> ItemResult:
        with ctx.open_input(paths[index]) as local:
            image, _ = read_mrc(local, mmap=False)
        if image.ndim != 2:
            raise JobInputError(f"{paths[index]}: a micrograph must be one 2D image")
        picks = pick(to_device(image.astype(np.float32), ctx.device), index)
        centres_yx = to_host(picks.centres_px).astype(np.float64).reshape(-1, 2)
        n = len(picks)
        ny, nx = image.shape
        return ItemResult(
            {
                "uid": ctx.stable_uids([f"{paths[index]}#{k}" for k in range(n)]),
                "location/micrograph_uid": np.full(n, micrographs.uid[index], dtype=np.uint64),
                "location/exp_group_id": np.full(
                    n, 1 if groups is None else groups[index], dtype=np.uint32
                ),
                "location/micrograph_path": np.asarray([paths[index]] * n, dtype="S"),
                "location/micrograph_shape": np.tile(np.asarray([ny, nx], np.uint32), (n, 1)),
                "location/micrograph_psize_A": np.full(
                    n, micrographs["micrograph_blob/psize_A"][index], dtype=np.float32
                ),
                "location/center_x_frac": (centres_yx[:, 1] / nx).astype(np.float32),
                "location/center_y_frac": (centres_yx[:, 0] / ny).astype(np.float32),
                "pick_stats/ncc_score": to_host(picks.scores).astype(np.float32),
                "pick_stats/power": to_host(picks.local_power).astype(np.float32),
                "pick_stats/template": to_host(picks.template_index).astype(np.uint32),
                "pick_stats/angle_rad": np.radians(to_host(picks.angle_deg)).astype(np.float32),
                "pick_stats/diameter_A": to_host(picks.diameters_A).astype(np.float32),
            }
        )

    columns, files = process_items(ctx, paths, process, verb="picked")
    mine = ctx.my_part(list(range(len(paths))))
    dataset = Dataset.from_columns(columns) if columns else None
    n_picks = 0 if dataset is None else len(dataset)
    summary = {
        "micrographs": len(mine),
        "picks": n_picks,
        "picks_per_micrograph_mean": round(n_picks / max(len(mine), 1), 2),
    }
    save_output(ctx, "particles", dataset, files, summary)
    ctx.log(f"picked {n_picks} particles on {len(mine)} micrographs")


def centres_px(particles: Dataset) -> npt.NDArray[np.float64]:
    """Particle centres ``(x, y)`` in px of their micrographs, shape (n, 2)."""
    shape = particles["location/micrograph_shape"].astype(np.float64)
    return np.column_stack(
        [
            particles["location/center_x_frac"] * shape[:, 1],
            particles["location/center_y_frac"] * shape[:, 0],
        ]
    )


def micrograph_ctf(micrographs: Dataset, index: int) -> dict[str, float] | None:
    """Keyword arguments of :func:`cryokube.processing.ctf.ctf_2d` for micrograph ``index``.

    None when the micrographs have no CTF fit (no ``ctf/df1_A``).
    """
    if "ctf/df1_A" not in micrographs:
        return None
    phase = micrographs.get("ctf/phase_shift_rad")
    return {
        "defocus_u_A": float(micrographs["ctf/df1_A"][index]),
        "defocus_v_A": float(micrographs["ctf/df2_A"][index]),
        "astig_angle_deg": math.degrees(float(micrographs["ctf/df_angle_rad"][index])),
        "voltage_kV": float(micrographs["ctf/accel_kv"][index]),
        "cs_mm": float(micrographs["ctf/cs_mm"][index]),
        "amp_contrast": float(micrographs["ctf/amp_contrast"][index]),
        "phase_shift_deg": 0.0 if phase is None else math.degrees(float(phase[index])),
    }
