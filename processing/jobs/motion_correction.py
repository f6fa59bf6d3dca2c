"""``motion_correction``: patch-based motion correction with dose weighting.

References
----------
Zheng, S. Q. et al. MotionCor2: anisotropic correction of beam-induced motion for improved
cryo-electron microscopy. Nat. Methods 14, 331-332 (2017). doi:10.1038/nmeth.4193
Grant, T. & Grigorieff, N. Measuring the optimal exposure for single particle cryo-EM using a
2.6 A reconstruction of rotavirus VP6. eLife 4, e06980 (2015). doi:10.7554/eLife.06980
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import numpy.typing as npt
from pydantic import model_validator

from ._items import (
    ItemResult,
    check_nyquist,
    process_items,
    publish_array,
    publish_mrc,
    save_output,
    stem,
)
from .base import DataKind, InputSlot, JobInputError, JobParams, JobType, OutputGroup, param

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.io.gain import FrameCorrection
    from cryokube.processing.worker.context import JobContext

PATCH_SIZE_PX = 768
"""Automatic patch grid: about one patch per 768 px along each axis (5 x 5 on a K3 frame)."""


class Params(JobParams):
    """cryoSPARC's *Patch Motion Correction* parameters."""

    res_max_align: float = param(
        5.0, description="Maximum resolution used for alignment", unit="A", gt=0.0, le=100.0
    )
    bfactor: float = param(
        500.0, description="B-factor applied during alignment", unit="A^2", ge=0.0, le=10000.0
    )
    frame_start: int = param(0, description="First frame to use (0-based)", ge=0)
    frame_end: int | None = param(
        None, description="One past the last frame to use; none: all frames", gt=0
    )
    output_fcrop_factor: float = param(
        1.0, description="Fourier-crop factor of the output (1, 1/2, 1/4)", gt=0.0, le=1.0
    )
    override_patch_x: int | None = param(
        None, description="Patches along x; none: chosen from the micrograph size", ge=1, le=50
    )
    override_patch_y: int | None = param(
        None, description="Patches along y; none: chosen from the micrograph size", ge=1, le=50
    )
    dose_per_frame_e_per_A2: float | None = param(
        None,
        description="Dose per frame for dose weighting; none: total dose / frames",
        unit="e/A^2",
        gt=0.0,
        le=100.0,
    )
    do_dose_weighting: bool = param(True, description="Weight frames by the exposure filter")
    output_f16: bool = param(False, description="Write micrographs as float16")

    @model_validator(mode="after")
    def _frames_ordered(self) -> Self:
        if self.frame_end is not None and self.frame_end <= self.frame_start:
            raise ValueError(
                f"frame_end ({self.frame_end}) must exceed frame_start ({self.frame_start})"
            )
        return self


def _patch_grid(p: Params, frame_shape: tuple[int, int]) -> tuple[int, int] | None:
    """Patches (n_y, n_x) from the overrides or the frame size; None (global only) for 1 x 1."""
    auto = [max(1, min(5, round(n / PATCH_SIZE_PX))) for n in frame_shape]
    grid = (p.override_patch_y or auto[0], p.override_patch_x or auto[1])
    return None if grid == (1, 1) else grid


def _correction(
    ctx: JobContext, movies: Dataset, index: int, raw_sum: npt.NDArray[Any]
) -> FrameCorrection:
    """Gain (oriented as imported) and hot/dead pixels found in the gain-corrected frame sum.

    ``raw_sum`` is the sum of the raw frames of movie ``index``, shape (ny, nx), in counts.
    """
    from cryokube.processing.io.gain import FrameCorrection, find_defects, load_gain

    gain_path = bytes(movies["gain_ref_blob/path"][index]).decode()
    gain = None
    if gain_path:
        with ctx.open_input(gain_path) as path:
            gain = load_gain(
                path,
                rotate_90=int(movies["gain_ref_blob/rotate_num"][index]),
                flip="leftright" if movies["gain_ref_blob/flip_x"][index] else "none",
            )
        movie = bytes(movies["movie_blob/path"][index]).decode()
        FrameCorrection(gain=gain, source=gain_path).check_frame_shape(raw_sum.shape, movie)
    corrected_sum = raw_sum if gain is None else raw_sum * gain
    return FrameCorrection(gain=gain, defects=find_defects(corrected_sum), source=gain_path or None)


def _path_length_px(shifts_px: npt.NDArray[Any]) -> float:
    """Length of a trajectory (n_frames, 2) in px: the sum of its frame-to-frame steps."""
    return float(np.sum(np.hypot(*np.diff(shifts_px, axis=0).T)))


def run(ctx: JobContext) -> None:
    """Gain-correct, align and dose-weight each movie of this shard; write the micrographs."""
    from cryokube.processing.algorithms.motion import align_movie
    from cryokube.processing.backend import to_device, to_host
    from cryokube.processing.io.movies import read_movie

    p = cast(Params, ctx.params)
    movies = ctx.load_dataset("movies")
    paths = movies.strings("movie_blob/path")
    shapes = movies["movie_blob/shape"]
    psizes = movies["movie_blob/psize_A"]
    doses = movies["mscope_params/total_dose_e_per_A2"]
    n_frames_all = int(shapes[0][0])
    if p.frame_end is not None and p.frame_end > n_frames_all:
        raise JobInputError(
            f"params.frame_end: {p.frame_end} is beyond the {n_frames_all} frames of the movies"
        )
    frame_range = (p.frame_start, p.frame_end or n_frames_all)
    if frame_range[1] - frame_range[0] < 2:
        raise JobInputError(
            f"params.frame_start/frame_end: frames {frame_range[0]} to {frame_range[1]} leave "
            f"fewer than 2 of {n_frames_all} frames to align"
        )
    check_nyquist(p.res_max_align, "res_max_align", psizes, paths)

    def process(index: int) -> ItemResult:
        path = paths[index]
        with ctx.open_input(path) as local:
            raw = read_movie(local)
            correction = _correction(ctx, movies, index, raw.sum(axis=0, dtype=np.float32))
            frames = correction.apply(raw)
        del raw
        n_frames = frames.shape[0]
        psize = float(psizes[index])
        dose = p.dose_per_frame_e_per_A2 or float(doses[index]) / n_frames
        result = align_movie(
            to_device(frames, ctx.device),
            pixel_size_A=psize,
            dose_per_frame_e_per_A2=dose,
            frame_range=frame_range,
            max_resolution_A=p.res_max_align,
            bfactor_A2=p.bfactor,
            local_bfactor_A2=p.bfactor,
            patch_grid=_patch_grid(p, (frames.shape[1], frames.shape[2])),
            dose_weighting=p.do_dose_weighting,
            fourier_crop_factor=1.0 / p.output_fcrop_factor,
            output_float16=p.output_f16,
        )
        name = stem(path)
        out_psize = result.pixel_size_A
        micrograph = to_host(result.micrograph)
        files = [
            publish_mrc(
                ctx,
                micrograph,
                f"motioncorrected/{name}_patch_aligned_doseweighted.mrc",
                pixel_size_A=out_psize,
                float16=p.output_f16,
            ),
            publish_mrc(
                ctx,
                to_host(result.micrograph_plain),
                f"motioncorrected/{name}_patch_aligned.mrc",
                pixel_size_A=out_psize,
                float16=p.output_f16,
            ),
            publish_mrc(
                ctx,
                to_host(result.power_spectrum),
                f"motioncorrected/{name}_powerspec.mrc",
                pixel_size_A=psize,
            ),
            publish_mrc(
                ctx,
                to_host(result.thumbnail),
                f"thumbnails/{name}_thumb.mrc",
                pixel_size_A=out_psize * micrograph.shape[0] / result.thumbnail.shape[0],
            ),
        ]
        shifts = to_host(result.global_shifts_px)
        files.append(publish_array(ctx, shifts, f"motioncorrected/{name}_traj_px.npy"))
        drift_px = _path_length_px(shifts)
        ctx.reporter.report(
            "exposures", {"name": name, "movie_path": path, "drift_total_px": drift_px}
        )
        shape = np.asarray([micrograph.shape], dtype=np.uint32)
        dw, plain, traj = (f.path for f in (files[0], files[1], files[4]))
        return ItemResult(
            {
                "micrograph_blob/path": np.asarray([dw], dtype="S"),
                "micrograph_blob/idx": np.zeros(1, dtype=np.uint32),
                "micrograph_blob/shape": shape,
                "micrograph_blob/psize_A": np.asarray([out_psize], dtype=np.float32),
                "micrograph_blob/format": np.asarray([b"MRC/1"]),
                "micrograph_blob_non_dw/path": np.asarray([plain], dtype="S"),
                "micrograph_blob_non_dw/shape": shape,
                "micrograph_blob_non_dw/psize_A": np.asarray([out_psize], dtype=np.float32),
                "background_blob/path": np.asarray([files[2].path], dtype="S"),
                "micrograph_thumbnail_blob_1x/path": np.asarray([files[3].path], dtype="S"),
                "rigid_motion/path": np.asarray([traj], dtype="S"),
                "rigid_motion/frame_start": np.asarray([frame_range[0]], dtype=np.uint32),
                "rigid_motion/frame_end": np.asarray([frame_range[1]], dtype=np.uint32),
                "rigid_motion/psize_A": np.asarray([psize], dtype=np.float32),
                "rigid_motion/drift_total_px": np.asarray([drift_px], dtype=np.float32),
            },
            files,
        )

    columns, files = process_items(ctx, paths, process, verb="aligned")
    mine = ctx.my_part(list(range(len(paths))))
    dataset = movies.take(mine).with_columns(columns) if mine else None
    summary: dict[str, Any] = {"micrographs": len(mine)}
    if columns:
        drift_px = columns["rigid_motion/drift_total_px"].astype(np.float64)
        drift_A = drift_px * columns["rigid_motion/psize_A"]
        summary |= {
            "drift_total_px_mean": round(float(drift_px.mean()), 3),
            "drift_total_px_max": round(float(drift_px.max()), 3),
            "drift_total_A_mean": round(float(drift_A.mean()), 3),
            "drift_total_A_max": round(float(drift_A.max()), 3),
        }
    save_output(ctx, "micrographs", dataset, files, summary)
    ctx.log(
        f"aligned {len(mine)} movies; mean total drift {summary.get('drift_total_px_mean', 0.0)} px"
    )


JOB = JobType(
    name="motion_correction",
    title="Patch Motion Correction",
    description="Align movie frames by patches, then sum them with dose weighting.",
    params=Params,
    inputs=(InputSlot("movies", DataKind.MOVIES, "Movies to align"),),
    outputs=(
        OutputGroup("micrographs", DataKind.MICROGRAPHS, "Aligned, dose-weighted micrographs"),
    ),
    uses_gpu=True,
    shardable=True,
    run=run,
)
