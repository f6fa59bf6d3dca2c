"""cryoSPARC ``.cs`` files: read and write :class:`~cryokube.processing.datasets.Dataset`.

A ``.cs`` file as cryoSPARC (v2 to v4) writes it is a numpy ``.npy`` file holding one
structured array, strings as fixed-width bytes (numpy ``S``); cryosparc-tools'
``Dataset.load`` reads it and ``Dataset.save`` writes it by default (``NUMPY_FORMAT``).
cryosparc-tools can also write a newer compressed stream (``CSDAT_FORMAT``, magic
``\\x95CSDAT``); that format is read through cryosparc-tools when it is installed and
otherwise refused with a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryokube.processing.datasets.dataset import Dataset
from cryokube.processing.io.atomic import atomic_path
from numpy.lib import recfunctions

NPY_MAGIC = b"\x93NUMPY"
CSDAT_MAGIC = b"\x95CSDAT"


class DatasetFileError(ValueError):
    """A dataset file (``.cs`` or ``.star``) that cannot be read; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def _filter_fields(
    names: Sequence[str], fields: Sequence[str] | None, prefixes: Sequence[str] | None
) -> list[str]:
    if fields is None and prefixes is None:
        return list(names)
    wanted = set(fields or ())
    starts = tuple(f"{prefix}/" for prefix in prefixes or ())
    return [
        name
        for name in names
        if name == "uid" or name in wanted or (starts and name.startswith(starts))
    ]


def _load_csdat(path: Path) -> np.ndarray:
    """Read cryosparc-tools' compressed stream format through cryosparc-tools."""
    try:
        from cryosparc.dataset import Dataset as CsToolsDataset
    except ImportError as error:
        raise DatasetFileError(
            path, "compressed CSDAT .cs format needs cryosparc-tools (pip install cryosparc-tools)"
        ) from error
    try:
        records: Any = CsToolsDataset.load(path).to_records(fixed=True)
    except Exception as error:
        raise DatasetFileError(path, f"unreadable CSDAT .cs file ({error})") from error
    return np.asarray(records).view(np.ndarray)


def load_cs(
    path: str | os.PathLike[str],
    *,
    fields: Sequence[str] | None = None,
    prefixes: Sequence[str] | None = None,
    mmap: bool = False,
) -> Dataset:
    """Read a cryoSPARC ``.cs`` file.

    Parameters
    ----------
    path : path-like
        The ``.cs`` file (numpy ``.npy`` layout, or cryosparc-tools' CSDAT stream).
    fields : sequence of str, optional
        Keep only these fields (``uid`` is always kept).
    prefixes : sequence of str, optional
        Keep only fields under these prefixes, e.g. ``["ctf", "blob"]``; combined with
        ``fields`` as a union.
    mmap : bool, optional
        Memory-map the file read-only instead of reading it (``.npy`` layout only, and only
        when no field selection is asked for), so a large particle set is not copied.

    Returns
    -------
    Dataset
        Rows in file order; dtypes as stored (an empty file keeps its fields).

    Raises
    ------
    DatasetFileError
        If the file is truncated, not a ``.cs`` file, has no ``uid`` field or holds Python
        objects (which would need pickle; those are refused for safety).
    FileNotFoundError
        If ``path`` does not exist.
    """
    source = Path(path)
    with source.open("rb") as stream:
        magic = stream.read(len(NPY_MAGIC))
    if magic == CSDAT_MAGIC:
        data = _load_csdat(source)
    elif magic == NPY_MAGIC:
        try:
            data = np.load(source, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as error:
            raise DatasetFileError(source, f"not a readable .cs array ({error})") from error
    else:
        raise DatasetFileError(source, f"not a .cs file (starts with {magic!r})")
    if data.dtype.names is None or data.ndim != 1:
        raise DatasetFileError(source, "not a one-dimensional structured array")
    selected = _filter_fields(data.dtype.names, fields, prefixes)
    if len(selected) != len(data.dtype.names):
        data = recfunctions.repack_fields(data[selected])
    try:
        return Dataset(data)
    except (TypeError, ValueError) as error:
        raise DatasetFileError(source, str(error)) from error


def save_cs(dataset: Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``dataset`` as a cryoSPARC ``.cs`` file (numpy ``.npy`` layout), atomically.

    Parameters
    ----------
    dataset : Dataset
        Rows to write; strings are stored as fixed-width UTF-8 bytes, which both
        ``numpy.load`` (without pickle) and cryosparc-tools read.
    path : path-like
        Destination; its folder must exist. Written under a temporary name and renamed.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError("dataset must be a Dataset")
    data = np.ascontiguousarray(dataset.data)
    with atomic_path(path) as temporary, temporary.open("wb") as stream:
        np.save(stream, data, allow_pickle=False)
