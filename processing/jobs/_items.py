"""Per-item processing shared by the sharded pre-processing jobs, with resumable checkpoints.

Motion correction, CTF estimation, picking and extraction all work one exposure at a time:
each shard takes its part of the exposures (:meth:`JobContext.my_part`), and for each one
publishes its files, then a small JSON record of the dataset rows it produced and the file
entries, then a checkpoint. A retried pod skips every exposure with a checkpoint and reads its
record back instead, so the shard's dataset is the same whether or not the pod was killed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .base import JobInputError

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset
    from cryokube.processing.worker.context import JobContext
    from cryokube.processing.worker.manifest import FileEntry


@dataclass
class ItemResult:
    """What processing one exposure produced.

    Attributes
    ----------
    columns : dict of str to ndarray
        Dataset columns of the item's rows, each of shape ``(n_rows, ...)`` (one row for an
        exposure, one per particle for picking and extraction; zero rows is allowed).
    files : list of FileEntry
        Files published for the item.
    """

    columns: dict[str, npt.NDArray[Any]]
    files: list[FileEntry] = field(default_factory=list)


def stem(path: str) -> str:
    """The file name of a project key without its suffix (``movies/m0.tif`` -> ``m0``)."""
    return PurePosixPath(path).stem


def _record_name(item: str) -> str:
    digest = hashlib.sha256(item.encode()).hexdigest()[:16]
    return f"items/{stem(item)}-{digest}.json"


def _encode(columns: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    encoded: dict[str, Any] = {}
    for name, column in columns.items():
        array = np.asarray(column)
        if array.dtype.kind == "S":
            values: Any = [v.decode() for v in array.ravel()]
            encoded[name] = {"dtype": "str", "shape": list(array.shape), "values": values}
        else:
            encoded[name] = {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "values": array.ravel().tolist(),
            }
    return encoded


def _decode(encoded: Mapping[str, Any]) -> dict[str, npt.NDArray[Any]]:
    columns: dict[str, npt.NDArray[Any]] = {}
    for name, spec in encoded.items():
        shape = tuple(spec["shape"])
        if spec["dtype"] == "str":
            text = [v.encode() for v in spec["values"]]
            width = max((len(v) for v in text), default=1)
            columns[name] = np.array(text, dtype=f"S{max(width, 1)}").reshape(shape)
        else:
            columns[name] = np.asarray(spec["values"], dtype=np.dtype(spec["dtype"])).reshape(shape)
    return columns


def process_items(
    ctx: JobContext,
    items: Sequence[str],
    process: Callable[[int], ItemResult],
    *,
    verb: str,
) -> tuple[dict[str, npt.NDArray[Any]], list[FileEntry]]:
    """Process this shard's part of ``items`` with checkpoints and gather the results.

    Parameters
    ----------
    ctx : JobContext
        The running job.
    items : sequence of str
        One unique name per input exposure (its path), in dataset order, for every shard.
    process : callable
        ``process(index)`` handles ``items[index]``: it publishes the item's files and returns
        its :class:`ItemResult`. It is not called for items a previous attempt finished.
    verb : str
        Progress message verb (``"aligned"``).

    Returns
    -------
    columns : dict of str to ndarray
        The items' columns concatenated in item order (empty when the shard has no items).
    files : list of FileEntry
        Every item's files, in item order.
    """
    from cryokube.processing.worker.manifest import FileEntry

    mine = ctx.my_part(list(range(len(items))))
    parts: list[dict[str, npt.NDArray[Any]]] = []
    files: list[FileEntry] = []
    resumed = 0
    for done, index in enumerate(mine):
        item = items[index]
        record_key = ctx.key(_record_name(item))
        if ctx.is_done(item):
            record = json.loads(ctx.storage.read_bytes(record_key))
            result = ItemResult(
                _decode(record["columns"]), [FileEntry(**f) for f in record["files"]]
            )
            resumed += 1
        else:
            result = process(index)
            local = ctx.scratch_path(_record_name(item))
            record = {
                "item": item,
                "columns": _encode(result.columns),
                "files": [f.model_dump() for f in result.files],
            }
            local.write_text(json.dumps(record))
            ctx.publish(local, _record_name(item))
            ctx.mark_done(item)
        parts.append(result.columns)
        files.extend(result.files)
        ctx.progress((done + 1) / len(mine), f"{verb} {item}")
    if resumed:
        ctx.log(f"resumed {resumed} of {len(mine)} items from an earlier attempt's checkpoints")
    return _concatenate(parts), files


def _concatenate(parts: Sequence[Mapping[str, npt.NDArray[Any]]]) -> dict[str, npt.NDArray[Any]]:
    """Join item columns in order; items without rows (no picks) add nothing.

    When no item has rows the first item's (empty) columns are returned, so that the output
    is an empty dataset rather than none.
    """
    filled = [p for p in parts if p and len(next(iter(p.values())))]
    if not filled:
        return dict(parts[0]) if parts else {}
    parts = filled
    names = list(parts[0])
    out: dict[str, npt.NDArray[Any]] = {}
    for name in names:
        columns = [np.asarray(p[name]) for p in parts]
        if columns[0].dtype.kind == "S":
            width = max(c.dtype.itemsize for c in columns)
            columns = [c.astype(f"S{max(width, 1)}") for c in columns]
        out[name] = np.concatenate(columns)
    return out


def check_nyquist(
    resolution_A: float, param_name: str, pixel_sizes_A: npt.ArrayLike, paths: Sequence[str]
) -> None:
    """Raise :class:`JobInputError` naming ``params.<param_name>`` if it is finer than Nyquist.

    Parameters
    ----------
    resolution_A : float
        The parameter's value (A).
    param_name : str
        Its name, for the message.
    pixel_sizes_A : array_like of shape (n,)
        Pixel size of each input item (A).
    paths : sequence of str
        The items' paths, to name the first offending one.
    """
    sizes = np.asarray(pixel_sizes_A, dtype=np.float64)
    bad = np.flatnonzero(resolution_A < 2 * sizes)
    if bad.size:
        nyquist = 2 * sizes[bad[0]]
        raise JobInputError(
            f"params.{param_name}: {resolution_A} A is finer than Nyquist ({nyquist:.3g} A) "
            f"of {paths[bad[0]]}"
        )


def shard_dataset_name(ctx: JobContext, group: str) -> str:
    """The dataset file of ``group`` for this shard (``micrographs.cs`` or ``..._shard1.cs``)."""
    return f"{group}.cs" if ctx.shards == 1 else f"{group}_shard{ctx.shard_index}.cs"


def publish_array(ctx: JobContext, array: npt.ArrayLike, relative: str) -> FileEntry:
    """Save a small array as ``.npy`` in the job folder and return its file entry."""
    local = ctx.scratch_path(relative)
    np.save(local, np.asarray(array))
    return ctx.publish(local, relative)


def publish_mrc(
    ctx: JobContext,
    array: npt.ArrayLike,
    relative: str,
    *,
    pixel_size_A: float,
    float16: bool = False,
    stack: bool = False,
) -> FileEntry:
    """Write an image (or stack) as MRC with its pixel size (A) and publish it."""
    from cryokube.processing.io.mrc import write_mrc

    local = ctx.scratch_path(relative)
    write_mrc(local, array, pixel_size_A=pixel_size_A, float16=float16, stack=stack)
    return ctx.publish(local, relative)


def save_output(
    ctx: JobContext,
    group: str,
    dataset: Dataset | None,
    files: Sequence[FileEntry],
    summary: dict[str, Any],
) -> None:
    """Save this shard's dataset of ``group`` and declare the output group.

    ``dataset`` is None when the shard had no items (more shards than exposures): the group is
    declared empty so that the merged manifest still lists it.
    """
    entry = None if dataset is None else ctx.save_dataset(dataset, shard_dataset_name(ctx, group))
    n_items = 0 if dataset is None else len(dataset)
    ctx.add_output(group, dataset=entry, files=files, n_items=n_items, summary=summary)
