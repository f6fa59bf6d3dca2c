"""The figures of a job page, read from the job's outputs on the project's storage.

A finished job's ``<job>/manifest.json`` lists its output groups, their dataset parts (``.cs``)
and files. Each reader below recognises one kind of result by dataset field or file name and
turns it into a plot of :mod:`.plots`:

============================  ==========================================================
result                        what the console reads
============================  ==========================================================
motion trajectories           ``*_traj_px.npy`` files, shape (n_frames, 2), px
CTF fit                       ``*_ctf_fit.npy``, shape (3, n): 1/Å, rotational average,
                              model; the fit resolution from ``ctf/ctf_fit_to_A``
defocus distribution          dataset fields ``ctf/df1_A`` and ``ctf/df2_A``
micrograph with picks         particles' ``location/*`` fields and the micrograph MRC
2D class averages             a ``.mrcs``/``.mrc`` stack in a ``templates`` group; sizes from
                              the summary's ``class_sizes`` or ``alignments2D/class``
FSC                           ``*_fsc.npy``, shape (1 + n_curves, n): 1/Å, then curves
volume views                  the ``.mrc`` of a ``volume`` group
============================  ==========================================================

A reader that fails (a missing or corrupt file) yields a figure with a ``note`` naming the file,
so one bad output never takes the page down.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from botocore.exceptions import BotoCoreError, ClientError
from cryokube.processing.datasets import load_cs
from cryokube.processing.io import read_mrc
from cryokube.processing.jobs import DataKind
from cryokube.processing.storage import (
    PosixStorage,
    S3Storage,
    Storage,
    StorageError,
    confine_path,
)
from cryokube.processing.storage.s3 import S3_SCHEME, make_client, split_s3_root
from cryokube.processing.worker.manifest import MANIFEST_NAME, GroupEntry, JobManifest

from ..registration import PVC_SCHEME, split_pvc_root
from . import plots

log = logging.getLogger(__name__)
MAX_ARRAY_BYTES = 64 * 1024 * 1024
"""Largest ``.npy`` the console loads into memory for a plot."""
MAX_TRAJECTORIES = 8
MAX_MRC_BYTES = 1024 * 1024 * 1024
"""Largest class stack or volume the console reads for a plot (the manifest gives the size)."""
UNREADABLE = (OSError, StorageError, ValueError, KeyError, IndexError, BotoCoreError, ClientError)
"""What reading an output can raise when it is missing, corrupt or its store unreachable."""


@dataclass(frozen=True)
class Figure:
    """One figure of a job page: a title and the SVG, or a note saying why it is missing."""

    title: str
    svg: str = ""
    note: str = ""


@dataclass(frozen=True)
class Source:
    """What a reader draws from: the project's storage, the job's manifest, one output group."""

    storage: Storage
    manifest: JobManifest
    group: GroupEntry


class StorageOpener:
    """Opens a project's storage root: an absolute folder, ``s3://bucket/prefix`` or
    ``pvc://<namespace>/<claim>/<subPath>``.

    S3 roots share one boto3 client (made on first use, thread-safe afterwards) for the
    ``endpoint_url`` of the service's S3-compatible store; objects are read through temporary
    local copies, and :class:`FigureCache` keeps the figures so each is fetched once. PVC roots
    are the ``subPath`` folder (confined to the claim) under the path where the service has
    mounted that claim (``pvc_mounts``, keyed ``<namespace>/<claim>``).
    """

    def __init__(
        self, endpoint_url: str | None = None, pvc_mounts: Mapping[str, Path] | None = None
    ) -> None:
        self._endpoint_url = endpoint_url
        self._pvc_mounts = dict(pvc_mounts or {})
        self._client: Any = None
        self._lock = threading.Lock()

    def open(self, root: str) -> Storage:
        """The storage of ``root``; ``ValueError`` naming it when it is none of the forms,
        ``StorageError`` when its claim is not mounted here."""
        if root.startswith(S3_SCHEME):
            bucket, prefix = split_s3_root(root)
            with self._lock:
                if self._client is None:
                    self._client = make_client(endpoint_url=self._endpoint_url)
            return S3Storage(self._client, bucket, prefix)
        if root.startswith(PVC_SCHEME):
            namespace, claim, sub_path = split_pvc_root(root)
            mount = self._pvc_mounts.get(f"{namespace}/{claim}")
            if mount is None:
                raise StorageError(
                    f"claim {namespace}/{claim} is not mounted in the metadata service "
                    "(CRYOKUBE_PVC_MOUNTS)"
                )
            return PosixStorage(confine_path(mount, sub_path, allow_root=True))
        if not root.startswith("/"):
            raise ValueError(
                f"storage_root: {root!r} is neither an absolute path, s3:// nor {PVC_SCHEME}"
            )
        return PosixStorage(Path(root))


def read_job_manifest(storage: Storage, job_name: str) -> JobManifest | None:
    """The manifest of the job folder ``job_name``, or None while the job has not finished."""
    key = f"{job_name}/{MANIFEST_NAME}"
    if not storage.exists(key):
        return None
    return JobManifest.model_validate_json(storage.read_bytes(key))


def _npy(storage: Storage, key: str) -> npt.NDArray[np.float64]:
    data = storage.read_bytes(key)
    if len(data) > MAX_ARRAY_BYTES:
        raise ValueError(f"{key}: {len(data)} bytes is more than a plot reads")
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float64)


def _mrc(storage: Storage, key: str, size_bytes: int = 0) -> tuple[npt.NDArray[np.float32], float]:
    if size_bytes > MAX_MRC_BYTES:
        raise ValueError(f"{key}: {size_bytes} bytes is more than a plot reads")
    with storage.local_copy(key) as path:
        # Mapped, not read: the plot reads a float32 file once while binning it, and a mapping
        # stays valid after the block even where the local copy is a temporary file.
        data, info = read_mrc(path, mmap=True)
    return np.asarray(data, dtype=np.float32), float(info.voxel_size_A[0])


def _fields(storage: Storage, group: GroupEntry, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ``names`` fields of the group's dataset parts, concatenated; {} when absent."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for key in group.datasets:
        with storage.local_copy(key) as path:
            dataset = load_cs(path)
        if not all(n in dataset.fields for n in names):
            return {}
        for n in names:
            parts[n].append(np.asarray(dataset[n]))
    if not group.datasets:
        return {}
    return {n: np.concatenate(v) for n, v in parts.items()}


def _stem(key: str, suffix: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(suffix)


def _trajectories(source: Source) -> Iterator[Figure]:
    storage, group = source.storage, source.group
    keys = [f.path for f in group.files if f.path.endswith("_traj_px.npy")][:MAX_TRAJECTORIES]
    if keys:
        trajectories = [_npy(storage, k) for k in keys]
        labels = [_stem(k, "_traj_px.npy") for k in keys]
        yield Figure(
            "Motion trajectories", plots.motion_trajectories_svg(trajectories, labels=labels)
        )


def _ctf(source: Source) -> Iterator[Figure]:
    storage, group = source.storage, source.group
    fits = [f.path for f in group.files if f.path.endswith("_ctf_fit.npy")]
    defocus = _fields(storage, group, ("ctf/df1_A", "ctf/df2_A", "ctf/ctf_fit_to_A"))
    if fits:
        curve = _npy(storage, fits[0])
        if curve.ndim != 2 or curve.shape[0] != 3:
            raise ValueError(f"{fits[0]}: expected shape (3, n), got {curve.shape}")
        fit_A = float(defocus["ctf/ctf_fit_to_A"][0]) if defocus else None
        svg = plots.ctf_fit_svg(curve[0], curve[1], curve[2], fit_resolution_A=fit_A)
        yield Figure(f"CTF fit: {_stem(fits[0], '_ctf_fit.npy')}", svg)
    if defocus:
        mean_A = 0.5 * (defocus["ctf/df1_A"].astype(np.float64) + defocus["ctf/df2_A"])
        yield Figure("Defocus distribution", plots.defocus_histogram_svg(mean_A))


def _picks(source: Source) -> Iterator[Figure]:
    storage, group = source.storage, source.group
    if group.kind is not DataKind.PARTICLES:
        return
    names = ("location/micrograph_path", "location/center_x_frac", "location/center_y_frac")
    loc = _fields(storage, group, names)
    if not loc:
        return
    paths = loc["location/micrograph_path"]
    first = paths[0]
    mine = paths == first
    micrograph_key = first.decode() if isinstance(first, bytes) else str(first)
    image, _ = _mrc(storage, micrograph_key)
    ny, nx = image.shape[-2:]
    image = image.reshape(ny, nx)
    xy = np.stack([loc[names[1]][mine] * nx, loc[names[2]][mine] * ny], axis=1)
    box_px = float(source.manifest.params.get("box_size_pix", max(nx, ny) / 16))
    svg = plots.micrograph_picks_svg(image, xy, box_px=box_px, title=micrograph_key)
    yield Figure(f"Picks on {micrograph_key} ({int(mine.sum())})", svg)


def _classes(source: Source) -> Iterator[Figure]:
    storage, group = source.storage, source.group
    if group.kind is not DataKind.TEMPLATES:
        return
    stacks = [f for f in group.files if f.path.endswith((".mrcs", ".mrc"))]
    if not stacks:
        return
    averages, _ = _mrc(storage, stacks[0].path, stacks[0].size_bytes)
    averages = averages.reshape(-1, *averages.shape[-2:])
    sizes = group.summary.get("class_sizes")
    if sizes is None:
        classes = _fields(storage, group, ("alignments2D/class",))
        counts = classes.get("alignments2D/class", np.zeros(0, np.int64)).astype(np.int64)
        sizes = np.bincount(counts, minlength=averages.shape[0])[: averages.shape[0]]
    yield Figure("2D class averages", plots.class_gallery_svg(averages, np.asarray(sizes)))


def _fsc(source: Source) -> Iterator[Figure]:
    for key in [f.path for f in source.group.files if f.path.endswith("_fsc.npy")][:1]:
        table = _npy(source.storage, key)
        if table.ndim != 2 or table.shape[0] < 2:
            raise ValueError(f"{key}: expected shape (1 + n_curves, n), got {table.shape}")
        names = ["FSC", *(f"FSC {i + 2}" for i in range(table.shape[0] - 2))]
        yield Figure("FSC", plots.fsc_svg(table[0], dict(zip(names, table[1:], strict=True))))


def _volume(source: Source) -> Iterator[Figure]:
    if source.group.kind is not DataKind.VOLUME:
        return
    maps = [f for f in source.group.files if f.path.endswith(".mrc")]
    if maps:
        volume, pixel_size_A = _mrc(source.storage, maps[0].path, maps[0].size_bytes)
        svg = plots.volume_views_svg(volume, pixel_size_A=pixel_size_A)
        yield Figure(f"Volume {_stem(maps[0].path, '.mrc')}", svg)


Reader = Callable[[Source], Iterator[Figure]]
READERS: tuple[tuple[str, Reader], ...] = (
    ("motion trajectories", _trajectories),
    ("CTF", _ctf),
    ("picks", _picks),
    ("class averages", _classes),
    ("FSC", _fsc),
    ("volume", _volume),
)


def job_figures(storage: Storage, manifest: JobManifest) -> list[Figure]:
    """Every figure the console can draw from ``manifest``'s output groups, in group order."""
    figures: list[Figure] = []
    for group in manifest.outputs.values():
        for what, reader in READERS:
            try:
                figures.extend(reader(Source(storage, manifest, group)))
            except UNREADABLE as exc:
                log.warning("console: %s of %s/%s unreadable", what, manifest.job, group.name)
                figures.append(Figure(f"{what} ({group.name})", note=f"not shown: {exc}"))
    return figures


class FigureCache:
    """The figures of recently viewed jobs, drawn once per manifest.

    A manifest is written last and once per job UID (a retried worker that finds it does not run
    again), so ``(storage root, job, job UID, finished_at)`` identifies what the figures show.
    Thread-safe: pages draw figures in worker threads.
    """

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"size: must be at least 1, got {size}")
        self._size = size
        self._items: OrderedDict[tuple[str, str, str, str], list[Figure]] = OrderedDict()
        self._lock = threading.Lock()

    def figures(self, root: str, storage: Storage, manifest: JobManifest) -> list[Figure]:
        """:func:`job_figures` of ``manifest``, from the cache when drawn before."""
        key = (root, manifest.job, manifest.job_uid, manifest.finished_at.isoformat())
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        drawn = job_figures(storage, manifest)
        with self._lock:
            self._items[key] = drawn
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return drawn
