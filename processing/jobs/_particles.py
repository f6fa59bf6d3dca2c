"""Particle images, CTFs, shifts and volumes shared by the reconstruction jobs.

A particles dataset names each image by ``blob/path`` (an MRC stack in the project) and
``blob/idx`` (0-based slice). Stacks are opened lazily through :meth:`JobContext.open_input`
(cached for S3) and only the referenced slices are read. Shifts follow cryoSPARC and pyem's
``csparc2star``: ``alignments{2D,3D}/shift`` is ``(x, y)`` px with the sign of RELION's
``rlnOriginX/Y``, the negative of the particle centre's offset from the box centre (so that
re-extraction at ``X - shift`` re-centres it, as ``extract_particles`` does).

Contrast: ``blob/sign`` is +1 where the stored images show protein white (contrast-inverted,
as RELION and ``extract_particles`` with ``flip_contrast`` store them; the default when the
field is absent) and -1 where they keep the raw micrograph's dark protein. The reconstruction
jobs hand the algorithms the CTF of the stored images, ``-sign`` times the physical
``-sin(chi)`` of :mod:`cryokube.processing.ctf`, so that maps and class averages come out with
protein white (positive density) either way.

A volume (or mask) output is an MRC file with its pixel size plus a one-row dataset naming it
(``map/path``, ``map/shape``, ``map/psize_A``; ``mask/*`` for masks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .base import JobInputError

if TYPE_CHECKING:
    from cryokube.processing.backend import Array
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext
    from cryokube.processing.worker.manifest import FileEntry

NYQUIST_PX = 2.0
"""Nyquist resolution in pixels: resolution limits finer than this many pixel sizes are
raised to it (cryoSPARC clamps them likewise)."""

PARTICLE_FIELDS = ("blob/path", "blob/idx", "blob/psize_A")
"""Fields every particles input must carry."""


def check_fields(dataset: Dataset, slot: str, fields: tuple[str, ...] = PARTICLE_FIELDS) -> None:
    """Raise :class:`JobInputError` naming ``inputs.<slot>`` if a field is missing."""
    for name in fields:
        if name not in dataset:
            raise JobInputError(f"inputs.{slot}: the dataset has no {name} field")


def pixel_size_of(particles: Dataset, slot: str) -> float:
    """The common pixel size (A) of ``particles``; an error naming the slot if they differ."""
    sizes = np.asarray(particles["blob/psize_A"], dtype=np.float64)
    if not len(sizes):
        raise JobInputError(f"inputs.{slot}: the dataset has no particles")
    if not np.allclose(sizes, sizes[0], rtol=1e-4):
        raise JobInputError(
            f"inputs.{slot}: blob/psize_A varies from {sizes.min():.4g} to {sizes.max():.4g} A"
        )
    return float(sizes[0])


def load_images(ctx: JobContext, particles: Dataset, slot: str) -> npt.NDArray[np.float32]:
    """Read the particles' images (B, N, N) float32 from their stacks, in dataset order.

    Raises
    ------
    JobInputError
        If a stack is unreadable, an index lies outside its stack, or image shapes differ.
    """
    from cryokube.processing.io.errors import InputFileError
    from cryokube.processing.io.mrc import open_stack

    check_fields(particles, slot)
    paths = np.asarray(particles["blob/path"])
    index = np.asarray(particles["blob/idx"], dtype=np.int64)
    images: npt.NDArray[np.float32] | None = None
    distinct = list(dict.fromkeys(paths.tolist()))
    for done, raw in enumerate(distinct):
        path = raw.decode() if isinstance(raw, bytes) else str(raw)
        rows = np.flatnonzero(paths == raw)
        try:
            with ctx.open_input(path) as local, open_stack(local) as stack:
                if images is None:
                    images = np.empty((len(particles), *stack.frame_shape), dtype=np.float32)
                if stack.frame_shape != images.shape[1:]:
                    raise JobInputError(
                        f"inputs.{slot}: {path} holds {stack.frame_shape} px images, "
                        f"others {images.shape[1:]} px"
                    )
                if index[rows].max() >= len(stack):
                    raise JobInputError(
                        f"inputs.{slot}: blob/idx {int(index[rows].max())} is beyond the "
                        f"{len(stack)} images of {path}"
                    )
                images[rows] = stack[index[rows]]
        except InputFileError as error:
            raise JobInputError(f"inputs.{slot}: {error}") from error
        ctx.progress(0.05 * (done + 1) / len(distinct), f"read {path}")
    if images is None or images.shape[1] != images.shape[2]:
        raise JobInputError(f"inputs.{slot}: particle images must be square")
    return images


def particle_ctf(particles: Dataset, box_px: int, pixel_size_A: float, device: str) -> Array | None:
    """Each stored image's CTF (B, N, N//2 + 1) on ``device`` from ``ctf/*``; None without a fit.

    The physical CTF times ``-blob/sign`` (see the module docstring): positive at low
    frequency for white particles, so that a positive map projects onto them.
    """
    from cryokube.processing.backend import to_device
    from cryokube.processing.ctf import ctf_2d

    if "ctf/df1_A" not in particles:
        return None

    def column(name: str, default: float) -> Array:
        values = particles.get(name)
        n = len(particles)
        return to_device(
            np.full(n, default) if values is None else np.asarray(values, np.float64), device
        )

    ctf = ctf_2d(
        (box_px, box_px),
        pixel_size_A,
        defocus_u_A=column("ctf/df1_A", 0.0),
        defocus_v_A=column("ctf/df2_A", 0.0),
        astig_angle_deg=column("ctf/df_angle_rad", 0.0) * (180.0 / math.pi),
        voltage_kV=column("ctf/accel_kv", 300.0),
        cs_mm=column("ctf/cs_mm", 2.7),
        amp_contrast=column("ctf/amp_contrast", 0.1),
        phase_shift_deg=column("ctf/phase_shift_rad", 0.0) * (180.0 / math.pi),
        b_factor_A2=column("ctf/bfactor", 0.0),
    )
    ctf *= -column("blob/sign", 1.0).astype(np.float32)[:, None, None]
    return ctf


def shift_from_offset(offset_yx_px: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """cryoSPARC ``shift`` (x, y) px from particle-centre offsets ``(dy, dx)`` px (B, 2)."""
    offset = np.asarray(offset_yx_px, dtype=np.float32)
    return np.ascontiguousarray(-offset[:, ::-1])


def offset_from_shift(shift_xy_px: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Particle-centre offsets ``(dy, dx)`` px from cryoSPARC ``shift`` (x, y) px (B, 2)."""
    shift = np.asarray(shift_xy_px, dtype=np.float32)
    return np.ascontiguousarray(-shift[:, ::-1])


def publish_volumes(
    ctx: JobContext,
    volumes: dict[str, tuple[npt.ArrayLike, str]],
    dataset_name: str,
    *,
    pixel_size_A: float,
) -> tuple[list[FileEntry], FileEntry]:
    """Publish volumes (N, N, N) as MRC and a one-row dataset naming them.

    Parameters
    ----------
    ctx : JobContext
        The running job.
    volumes : dict of str to (array of shape (N, N, N), str)
        Dataset field prefix (``map``, ``map_half_A``, ``mask``) to the volume and its file
        name in the job folder.
    dataset_name : str
        File name of the dataset (``.cs``).
    pixel_size_A : float
        Voxel size (A), written in every MRC header and as ``<prefix>/psize_A``.

    Returns
    -------
    files : list of FileEntry
        The MRC files, in the order of ``volumes``.
    dataset : FileEntry
        The dataset.
    """
    from cryokube.processing.datasets import Dataset

    from ._items import publish_mrc

    files: list[FileEntry] = []
    columns: dict[str, Any] = {}
    for prefix, (volume, relative) in volumes.items():
        data = np.asarray(volume, dtype=np.float32)
        entry = publish_mrc(ctx, data, relative, pixel_size_A=pixel_size_A)
        files.append(entry)
        columns |= {
            f"{prefix}/path": [entry.path],
            f"{prefix}/shape": np.asarray([data.shape], dtype=np.uint32),
            f"{prefix}/psize_A": np.asarray([pixel_size_A], dtype=np.float32),
        }
    dataset = Dataset.from_columns(columns, uid=ctx.stable_uids([dataset_name]))
    return files, ctx.save_dataset(dataset, dataset_name)


def check_volume_matches(
    slot: str, volume: Any, volume_psize_A: float, box: int, pixel_size_A: float
) -> None:
    """``JobInputError`` naming ``inputs.<slot>`` unless the map has the particles' box and pixel size."""
    if volume.shape != (box, box, box) or not np.isclose(volume_psize_A, pixel_size_A, rtol=1e-3):
        raise JobInputError(
            f"inputs.{slot}: {volume.shape[0]} px at {volume_psize_A:.4g} A/px does not "
            f"match the particles' {box} px at {pixel_size_A:.4g} A/px"
        )


def load_volume(ctx: JobContext, slot: str, prefix: str) -> tuple[npt.NDArray[np.float32], float]:
    """The volume (N, N, N) float32 and its pixel size (A) connected to ``slot``."""
    from cryokube.processing.io.errors import InputFileError
    from cryokube.processing.io.mrc import read_mrc

    dataset = ctx.load_dataset(slot)
    check_fields(dataset, slot, (f"{prefix}/path",))
    path = dataset.strings(f"{prefix}/path")[0]
    try:
        with ctx.open_input(path) as local:
            data, info = read_mrc(local, mmap=False)
    except InputFileError as error:
        raise JobInputError(f"inputs.{slot}: {error}") from error
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise JobInputError(f"inputs.{slot}: {path} is not a cubic volume, shape {data.shape}")
    return np.asarray(data, dtype=np.float32), float(info.pixel_size_A)
