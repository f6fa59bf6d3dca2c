"""One columnar dataset type for movies, micrographs, particles, classes and volumes.

A :class:`Dataset` wraps a one-dimensional numpy structured array laid out like cryoSPARC's
``.cs`` files: one row per item, a ``uid`` column (uint64) that identifies the item across
files, and further columns named ``prefix/field`` (``ctf/df1_A``, ``blob/path``,
``alignments3D/pose``...). Vector fields are sub-array columns (``alignments3D/shift`` has
shape ``(n, 2)``). Strings are fixed-width UTF-8 bytes (numpy ``S``), which is how cryoSPARC
writes them to disk and what :func:`numpy.load` reads without pickle; columns given as Python
strings (numpy ``U`` or ``object``, as cryosparc-tools holds them in memory) are encoded on the
way in.

Units follow the field names: ``_A`` is Angstrom, ``_rad`` radians, ``_kv`` kilovolts, ``_mm``
millimetres, ``_frac`` a fraction of the micrograph's width or height. Poses and shifts have
cryoSPARC's units: ``alignments3D/pose`` is an axis-angle rotation vector in radians and
``alignments3D/shift`` is in pixels of ``alignments3D/psize_A``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

UID_FIELD = "uid"
"""Name of the identifier column every dataset has (uint64)."""

UID_DTYPE = np.dtype(np.uint64)


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a comparison: ``np.unique`` is much slower here)."""
    ordered = np.sort(values)
    keep = np.ones(ordered.shape, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def random_uids(count: int, *, seed: int | None = None) -> npt.NDArray[np.uint64]:
    """Draw ``count`` distinct random uint64 identifiers, as cryoSPARC does for new items.

    Parameters
    ----------
    count : int
        Number of identifiers (>= 0).
    seed : int, optional
        Seed for a reproducible draw; fresh entropy when omitted.

    Returns
    -------
    uids : ndarray of shape (count,), uint64
        Distinct identifiers.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    uids = np.empty(0, dtype=UID_DTYPE)
    while uids.size < count:
        draw = rng.integers(0, np.iinfo(np.uint64).max, size=count, dtype=np.uint64, endpoint=True)
        uids = _sorted_distinct(np.concatenate([uids, draw]))
    return rng.permutation(uids)[:count]


def _as_column(name: str, values: npt.ArrayLike, length: int | None) -> np.ndarray:
    """Coerce one column to a storable numpy array (strings become UTF-8 ``S`` bytes)."""
    array = np.asarray(values)
    if array.dtype.kind in "UO":
        flat = [
            item if isinstance(item, bytes) else str(item).encode("utf-8") for item in array.ravel()
        ]
        width = max((len(item) for item in flat), default=0)
        array = np.array(flat, dtype=f"S{max(width, 1)}").reshape(array.shape)
    elif array.dtype.kind not in "biufcSV":
        raise TypeError(f"column {name!r} has unsupported dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"column {name!r} must have one row per item, got a scalar")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"column {name!r} has {array.shape[0]} rows, expected {length}")
    return array


def _structured(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Build a structured array from equal-length columns (vector columns become sub-arrays)."""
    length = len(next(iter(columns.values())))
    dtype = np.dtype([(name, col.dtype, col.shape[1:]) for name, col in columns.items()])
    data = np.empty(length, dtype=dtype)
    for name, col in columns.items():
        data[name] = col
    return data


class Dataset:
    """Items (movies, micrographs, particles, classes, volumes) as columns in cryoSPARC layout.

    Parameters
    ----------
    data : ndarray of shape (n_items,), structured
        The rows. It must have a ``uid`` field of dtype uint64 with distinct values. The array
        is used as is (no copy), so a memory-mapped array stays memory-mapped.

    Notes
    -----
    Operations that select or combine rows (:meth:`take`, :meth:`mask`, :meth:`join`,
    :func:`concatenate`) return new datasets; ``dataset["ctf/df1_A"]`` returns a view of the
    column, so writing to it changes the dataset.
    """

    __slots__ = ("_data",)

    def __init__(self, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray):  # runtime check for untyped callers
            raise TypeError("data must be a numpy structured array")
        if data.dtype.names is None:
            raise TypeError("data must be a numpy structured array")
        if data.ndim != 1:
            raise ValueError(f"data must be one-dimensional, got shape {data.shape}")
        if UID_FIELD not in data.dtype.names:
            raise ValueError(f"data has no {UID_FIELD!r} field")
        if data.dtype[UID_FIELD] != UID_DTYPE:
            raise ValueError(f"data field 'uid' must be uint64, got {data.dtype[UID_FIELD]}")
        if _sorted_distinct(data[UID_FIELD]).size != data.shape[0]:
            raise ValueError("data field 'uid' has duplicate values")
        self._data = data

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, npt.ArrayLike],
        *,
        uid: npt.ArrayLike | None = None,
        seed: int | None = None,
    ) -> Dataset:
        """Build a dataset from named columns.

        Parameters
        ----------
        columns : mapping of str to array_like
            Field name to values; every column has the same first dimension ``n_items``.
            Strings (``str``, numpy ``U`` or ``object``) are stored as UTF-8 bytes.
        uid : array_like of shape (n_items,), optional
            Identifiers; may also be given as ``columns["uid"]``. Random ones are drawn when
            neither is given.
        seed : int, optional
            Seed for the random identifiers.

        Returns
        -------
        Dataset
            ``uid`` first, then the columns in the given order.
        """
        if not columns and uid is None:
            raise ValueError("columns must name at least one column")
        given = dict(columns)
        if uid is not None:
            if UID_FIELD in given:
                raise ValueError("uid was given both as a keyword and in columns")
            given[UID_FIELD] = uid
        length = len(np.asarray(next(iter(given.values()))))
        stored = {name: _as_column(name, values, length) for name, values in given.items()}
        if UID_FIELD in stored:
            uid_column = stored.pop(UID_FIELD)
            if uid_column.dtype.kind not in "ui" or (
                uid_column.dtype.kind == "i" and (uid_column < 0).any()
            ):
                raise ValueError("uid must hold non-negative integers")
            uid_column = uid_column.astype(UID_DTYPE)
        else:
            uid_column = random_uids(length, seed=seed)
        return cls(_structured({UID_FIELD: uid_column, **stored}))

    @property
    def data(self) -> np.ndarray:
        """The structured array of shape ``(n_items,)``."""
        return self._data

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names in storage order (``uid`` included)."""
        names = self._data.dtype.names
        return tuple(names) if names is not None else ()

    @property
    def uid(self) -> npt.NDArray[np.uint64]:
        """Identifiers, shape ``(n_items,)``."""
        return self._data[UID_FIELD]

    def prefixes(self) -> tuple[str, ...]:
        """Distinct ``prefix`` parts of ``prefix/field`` names, in first-seen order."""
        seen = dict.fromkeys(name.split("/", 1)[0] for name in self.fields if "/" in name)
        return tuple(seen)

    def __len__(self) -> int:
        return int(self._data.shape[0])

    def __contains__(self, field: object) -> bool:
        return field in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __getitem__(self, field: str) -> np.ndarray:
        if field not in self.fields:
            raise KeyError(f"dataset has no field {field!r}")
        column: np.ndarray = self._data[field]
        return column

    def get(self, field: str, *, default: np.ndarray | None = None) -> np.ndarray | None:
        """The column ``field``, or ``default`` when the dataset has no such field."""
        return self[field] if field in self.fields else default

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        if self._data.dtype != other._data.dtype or len(self) != len(other):
            return False
        return all(
            np.array_equal(self[name], other[name], equal_nan=self[name].dtype.kind in "fc")
            for name in self.fields
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Dataset({len(self)} items, fields={list(self.fields)})"

    def strings(self, field: str) -> list[str]:
        """A string column as Python strings (bytes decoded as UTF-8), ``n_items`` long."""
        column = self[field]
        if column.dtype.kind not in "SU" or column.ndim != 1:
            raise TypeError(f"field {field!r} is not a string column (dtype {column.dtype})")
        if column.dtype.kind == "U":  # a .cs file written with numpy unicode strings
            return [str(item) for item in column.tolist()]
        return [item.decode("utf-8") for item in column.tolist()]

    def take(self, indices: npt.ArrayLike) -> Dataset:
        """Rows at ``indices`` (integer array), in that order, as a new dataset."""
        index = np.asarray(indices)
        if index.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {index.dtype}")
        return Dataset(self._data[index])

    def mask(self, keep: npt.ArrayLike) -> Dataset:
        """Rows where the boolean ``keep`` of shape ``(n_items,)`` is true, as a new dataset."""
        selector = np.asarray(keep)
        if selector.dtype != np.bool_ or selector.shape != (len(self),):
            raise ValueError(f"keep must be a boolean array of shape ({len(self)},)")
        return Dataset(self._data[selector])

    def filter(self, **equal_to: Any) -> Dataset:
        """Rows whose fields equal the given values, e.g. ``filter(**{"ctf/exp_group_id": 2})``.

        String values match bytes columns after UTF-8 encoding.
        """
        keep = np.ones(len(self), dtype=bool)
        for field, value in equal_to.items():
            column = self[field]
            wanted = value.encode("utf-8") if isinstance(value, str) else value
            keep &= column == wanted
        return self.mask(keep)

    def select_fields(self, fields: Iterable[str]) -> Dataset:
        """Only the named fields (``uid`` is always kept), as a new dataset."""
        wanted = [UID_FIELD, *(name for name in fields if name != UID_FIELD)]
        for name in wanted:
            if name not in self.fields:
                raise KeyError(f"dataset has no field {name!r}")
        return Dataset(_structured({name: self._data[name] for name in wanted}))

    def with_columns(self, columns: Mapping[str, npt.ArrayLike]) -> Dataset:
        """A copy with columns added or replaced (replaced ones keep their position)."""
        if UID_FIELD in columns:
            raise ValueError("columns may not replace 'uid'")
        merged: dict[str, np.ndarray] = {name: self._data[name] for name in self.fields}
        for name, values in columns.items():
            merged[name] = _as_column(name, values, len(self))
        return Dataset(_structured(merged))

    def join(self, other: Dataset) -> Dataset:
        """Inner join by ``uid``: rows present in both, in this dataset's order.

        Fields of ``other`` are added; where both datasets have a field, ``other``'s values
        win (cryoSPARC's "passthrough" semantics: newer results override older ones).

        Parameters
        ----------
        other : Dataset
            Dataset to join.

        Returns
        -------
        Dataset
            ``len`` equals the number of shared uids.
        """
        if not isinstance(other, Dataset):
            raise TypeError("other must be a Dataset")
        _, mine, theirs = np.intersect1d(
            self.uid, other.uid, assume_unique=True, return_indices=True
        )
        order = np.argsort(mine, kind="stable")
        mine, theirs = mine[order], theirs[order]
        merged: dict[str, np.ndarray] = {name: self._data[name][mine] for name in self.fields}
        for name in other.fields:
            merged[name] = other._data[name][theirs]
        return Dataset(_structured(merged))


def _common_dtype(name: str, columns: Sequence[np.ndarray]) -> np.dtype[Any]:
    """One dtype for a field across datasets: strings widen, everything else must agree."""
    first = columns[0].dtype
    if first.kind == "S":
        if any(col.dtype.kind != "S" for col in columns):
            raise ValueError(f"field {name!r} is a string column in some datasets only")
        return np.dtype(f"S{max(col.dtype.itemsize for col in columns)}")
    for col in columns[1:]:
        if col.dtype != first or col.shape[1:] != columns[0].shape[1:]:
            raise ValueError(
                f"field {name!r} has dtype {first}{columns[0].shape[1:]} in one dataset "
                f"and {col.dtype}{col.shape[1:]} in another"
            )
    return first


def concatenate(datasets: Sequence[Dataset]) -> Dataset:
    """Append the rows of datasets with the same fields (for example shards of one job).

    Parameters
    ----------
    datasets : sequence of Dataset
        At least one; every dataset has the same field names (order may differ). String
        columns of different widths are widened to the longest.

    Returns
    -------
    Dataset
        ``sum(len(d))`` rows in the given order, fields in the first dataset's order.

    Raises
    ------
    ValueError
        If field names or dtypes differ, or a uid occurs twice.
    """
    if not datasets:
        raise ValueError("datasets must hold at least one dataset")
    names = datasets[0].fields
    for index, dataset in enumerate(datasets):
        if not isinstance(dataset, Dataset):
            raise TypeError(f"datasets[{index}] is not a Dataset")
        if set(dataset.fields) != set(names):
            missing = sorted(set(names) ^ set(dataset.fields))
            raise ValueError(f"datasets[{index}] has different fields: {missing}")
    merged: dict[str, np.ndarray] = {}
    for name in names:
        columns = [dataset.data[name] for dataset in datasets]
        dtype = _common_dtype(name, columns)
        merged[name] = np.concatenate([col.astype(dtype, copy=False) for col in columns])
    total = sum(len(dataset) for dataset in datasets)
    if _sorted_distinct(merged[UID_FIELD]).size != total:
        raise ValueError("datasets share uids; concatenate needs distinct items")
    return Dataset(_structured(merged))
