"""RELION STAR import and export for :class:`~cryokube.processing.datasets.Dataset`.

STAR files are parsed and written by the ``starfile`` package. RELION 3.1 and later split
per-microscope values into a ``data_optics`` table joined to the items by ``rlnOpticsGroup``;
RELION 3.0 files have one table with every value on every row. Both are read; both styles are
written (``style="relion31"``, the default, or ``style="relion30"``).

Conversions (RELION column to cryoSPARC field)
----------------------------------------------
=============================  ==================================  =============================
RELION                         dataset field                       conversion
=============================  ==================================  =============================
rlnImageName ``n@path``        ``blob/idx``, ``blob/path``         ``idx = n - 1`` (0-based)
rlnDefocusU, rlnDefocusV (A)   ``ctf/df1_A``, ``ctf/df2_A``        none
rlnDefocusAngle (deg)          ``ctf/df_angle_rad``                degrees to radians
rlnPhaseShift (deg)            ``ctf/phase_shift_rad``             degrees to radians
rlnVoltage (kV)                ``ctf/accel_kv``                    none
rlnSphericalAberration (mm)    ``ctf/cs_mm``                       none
rlnAmplitudeContrast           ``ctf/amp_contrast``                none
rlnCtfBfactor (A^2)            ``ctf/bfactor``                     none
rlnCtfScalefactor              ``ctf/scale``                       none
rlnOpticsGroup                 ``ctf/exp_group_id``                ``id = group - 1``
rlnImagePixelSize (A)          ``blob/psize_A``                    or detector pixel (um) * 1e4
                                                                   / rlnMagnification (3.0)
rlnImageSize (px)              ``blob/shape``                      ``(size, size)``
rlnAngleRot/Tilt/Psi (deg)     ``alignments3D/pose``               ZYZ Euler to axis-angle (rad)
rlnAnglePsi alone (deg)        ``alignments2D/pose``               degrees to radians
rlnOriginXAngst/YAngst (A)     ``alignments{2D,3D}/shift`` (px)    divided by ``blob/psize_A``
rlnOriginX/Y (px, 3.0)         ``alignments{2D,3D}/shift`` (px)    none
rlnClassNumber                 ``alignments{2D,3D}/class``         ``class = number - 1``
rlnRandomSubset                ``alignments3D/split``              ``split = subset - 1``
rlnMicrographName              ``location/micrograph_path``        (particles)
                               ``micrograph_blob/path``            (micrograph lists)
rlnMicrographPixelSize (A)     ``micrograph_blob/psize_A``         none
rlnMicrographMovieName         ``movie_blob/path``                 none
rlnCoordinateX/Y (px)          ``location/center_{x,y}_frac``      divided by the micrograph size,
                                                                   when it is given
=============================  ==================================  =============================

Every other column is kept verbatim under ``relion/<name>`` (``relion_optics/<name>`` for
optics-table columns), so ``STAR -> dataset -> STAR`` loses nothing. Mapped values are stored
in cryoSPARC's dtypes (float32), so they come back to float32 precision (relative 6e-8); they
are written as the shortest decimal that reads back to the same float32, which makes
``dataset -> STAR -> dataset`` bit-exact and reproduces any STAR value with at most 7
significant digits exactly.

Shift signs follow pyem's ``csparc2star`` (D. Asarnow, https://doi.org/10.5281/zenodo.3576630):
``alignments3D/shift`` and ``rlnOriginX`` have the same sign. Pose conversions are those of
:mod:`cryokube.processing.geometry`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import starfile
from cryokube.processing.datasets.cs import DatasetFileError
from cryokube.processing.datasets.dataset import Dataset
from cryokube.processing.geometry import axis_angle_to_euler, euler_to_axis_angle
from cryokube.processing.io.atomic import atomic_path

PASSTHROUGH = "relion/"
"""Prefix of dataset fields that carry item-table STAR columns with no cryoSPARC equivalent."""

PASSTHROUGH_OPTICS = "relion_optics/"
"""Prefix of dataset fields that carry optics-table STAR columns with no cryoSPARC equivalent."""

StarStyle = Literal["relion31", "relion30"]

_IMAGE_NAME = re.compile(r"^(\d+)@(.+)$")

# RELION column -> (dataset field, scale to dataset units, 1-based index) for plain columns.
_SCALARS: dict[str, tuple[str, float, bool]] = {
    "rlnDefocusU": ("ctf/df1_A", 1.0, False),
    "rlnDefocusV": ("ctf/df2_A", 1.0, False),
    "rlnDefocusAngle": ("ctf/df_angle_rad", np.pi / 180.0, False),
    "rlnPhaseShift": ("ctf/phase_shift_rad", np.pi / 180.0, False),
    "rlnVoltage": ("ctf/accel_kv", 1.0, False),
    "rlnSphericalAberration": ("ctf/cs_mm", 1.0, False),
    "rlnAmplitudeContrast": ("ctf/amp_contrast", 1.0, False),
    "rlnCtfBfactor": ("ctf/bfactor", 1.0, False),
    "rlnCtfScalefactor": ("ctf/scale", 1.0, False),
    "rlnOpticsGroup": ("ctf/exp_group_id", 1.0, True),
    "rlnImagePixelSize": ("blob/psize_A", 1.0, False),
    "rlnMicrographPixelSize": ("micrograph_blob/psize_A", 1.0, False),
}
_STRINGS: dict[str, str] = {
    "rlnMicrographMovieName": "movie_blob/path",
}
# Columns that live in the optics table in RELION 3.1+ (the rest go to the item table).
_OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnMicrographPixelSize",
)
# Columns that hold text even when a value looks like a number (a micrograph named "1").
_TEXT_COLUMNS = (
    "rlnImageName",
    "rlnMicrographName",
    "rlnMicrographMovieName",
    "rlnOpticsGroupName",
)
_ITEM_BLOCKS = ("particles", "micrographs", "movies", "images")


def read_star(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """Read every data block of a STAR file.

    Parameters
    ----------
    path : path-like
        The STAR file.

    Returns
    -------
    dict
        Block name (without ``data_``; ``""`` for an unnamed block) to a DataFrame for a
        ``loop_`` block or a dict for a single-value block. Column names drop the leading
        underscore (``rlnDefocusU``).

    Raises
    ------
    DatasetFileError
        If the file cannot be parsed or holds no data block.
    FileNotFoundError
        If ``path`` does not exist.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such STAR file")
    try:
        blocks = starfile.read(source, always_dict=True, parse_as_string=list(_TEXT_COLUMNS))
    except Exception as error:
        raise DatasetFileError(source, f"unreadable STAR file ({error})") from error
    if not blocks:
        raise DatasetFileError(source, "no data_ block")
    return dict(blocks)


def _item_table(
    blocks: Mapping[str, pd.DataFrame | dict[str, Any]], source: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Find the item table and the optics table (None for RELION 3.0 files)."""
    optics = blocks.get("optics")
    if optics is not None and not isinstance(optics, pd.DataFrame):
        raise DatasetFileError(source, "data_optics is not a loop_ table")
    loops = {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}
    for name in (*_ITEM_BLOCKS, ""):
        if name in loops:
            return loops[name], optics
    others = [name for name in loops if name != "optics"]
    if len(others) == 1:
        return loops[others[0]], optics
    raise DatasetFileError(source, f"no particles/micrographs/movies table among {list(blocks)}")


def _strings(values: pd.Series) -> npt.NDArray[np.bytes_]:
    encoded = [str(item).encode("utf-8") for item in values.tolist()]
    width = max((len(item) for item in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def _passthrough(values: pd.Series) -> np.ndarray:
    """A STAR column as stored verbatim: int64, float64 or UTF-8 bytes."""
    if pd.api.types.is_integer_dtype(values.dtype):
        integers: np.ndarray = values.to_numpy(dtype=np.int64)
        return integers
    if pd.api.types.is_float_dtype(values.dtype):
        floats: np.ndarray = values.to_numpy(dtype=np.float64)
        return floats
    return _strings(values)


def dataset_from_star(
    path: str | os.PathLike[str],
    *,
    micrograph_shape_px: tuple[int, int] | None = None,
    seed: int | None = None,
) -> Dataset:
    """Import the items (particles, micrographs or movies) of a RELION STAR file.

    Parameters
    ----------
    path : path-like
        RELION 3.0 (one table) or 3.1+/5 (``data_optics`` plus ``data_particles``,
        ``data_micrographs`` or ``data_movies``) STAR file.
    micrograph_shape_px : (int, int), optional
        ``(ny, nx)`` of the micrographs, in pixels. When given, ``rlnCoordinateX/Y`` become
        ``location/center_{x,y}_frac`` and ``location/micrograph_shape``; otherwise the
        coordinates are kept under ``relion/``.
    seed : int, optional
        Seed for the random ``uid`` values of the new items.

    Returns
    -------
    Dataset
        One row per item, fields as listed in the module docstring.

    Raises
    ------
    DatasetFileError
        If the file is unreadable, a table is missing, ``rlnImageName`` is not ``n@path``
        with ``n >= 1``, an item names an optics group absent from ``data_optics``, or the
        pixel size needed to convert ``rlnOriginXAngst`` is missing.
    """
    source = os.fspath(path)
    items, optics = _item_table(read_star(path), source)
    items = items.reset_index(drop=True)
    columns: dict[str, np.ndarray] = {}
    optics_names: set[str] = set()
    if optics is not None:
        if "rlnOpticsGroup" not in optics or "rlnOpticsGroup" not in items:
            raise DatasetFileError(source, "rlnOpticsGroup is missing from data_optics or items")
        if optics["rlnOpticsGroup"].duplicated().any():
            raise DatasetFileError(source, "data_optics lists an optics group twice")
        unknown = set(items["rlnOpticsGroup"]) - set(optics["rlnOpticsGroup"])
        if unknown:
            raise DatasetFileError(
                source, f"items use optics groups {sorted(unknown)} absent from data_optics"
            )
        # A column in both tables is a per-item override: the item table's value wins.
        shared = set(optics.columns) & set(items.columns) - {"rlnOpticsGroup"}
        optics_names = set(optics.columns) - shared - {"rlnOpticsGroup"}
        optics_only = optics.drop(columns=sorted(shared))
        items = items.merge(optics_only, on="rlnOpticsGroup", how="left", sort=False)
    used: set[str] = set()

    def take(name: str) -> pd.Series:
        used.add(name)
        return items[name]

    if "rlnImageName" in items:
        parts = take("rlnImageName").astype(str).str.extract(_IMAGE_NAME)
        if parts.isna().any().any():
            raise DatasetFileError(source, "rlnImageName must be 'n@path' with n >= 1")
        index = parts[0].astype(np.int64).to_numpy()
        if (index < 1).any():
            raise DatasetFileError(source, "rlnImageName index must be >= 1 (STAR is 1-based)")
        columns["blob/path"] = _strings(parts[1])
        columns["blob/idx"] = (index - 1).astype(np.uint32)
    if "rlnMicrographName" in items:
        field = "location/micrograph_path" if "rlnImageName" in items else "micrograph_blob/path"
        columns[field] = _strings(take("rlnMicrographName"))
    for name, field in _STRINGS.items():
        if name in items:
            columns[field] = _strings(take(name))
    for name, (field, scale, one_based) in _SCALARS.items():
        if name not in items:
            continue
        values = take(name).to_numpy(dtype=np.float64)
        if one_based and values.size and values.min() < 1:
            raise DatasetFileError(source, f"{name} must be >= 1 (STAR is 1-based)")
        if one_based:
            columns[field] = (values - 1).astype(np.uint32)
        else:
            columns[field] = (values * scale).astype(np.float32)
    if "blob/psize_A" not in columns and {"rlnDetectorPixelSize", "rlnMagnification"} <= set(items):
        detector_um = items["rlnDetectorPixelSize"].to_numpy(dtype=np.float64)
        magnification = items["rlnMagnification"].to_numpy(dtype=np.float64)
        columns["blob/psize_A"] = (detector_um * 1e4 / magnification).astype(np.float32)
    if "rlnImageSize" in items:
        size = take("rlnImageSize").to_numpy(dtype=np.uint32)
        columns["blob/shape"] = np.stack([size, size], axis=1)
    _import_alignments(items, columns, take, source)
    if micrograph_shape_px is not None and {"rlnCoordinateX", "rlnCoordinateY"} <= set(items):
        ny, nx = micrograph_shape_px
        if ny <= 0 or nx <= 0:
            raise ValueError(f"micrograph_shape_px must be positive, got {micrograph_shape_px}")
        columns["location/center_x_frac"] = (take("rlnCoordinateX") / nx).to_numpy(np.float32)
        columns["location/center_y_frac"] = (take("rlnCoordinateY") / ny).to_numpy(np.float32)
        columns["location/micrograph_shape"] = np.tile(
            np.array([ny, nx], dtype=np.uint32), (len(items), 1)
        )
    for name in items.columns:
        if name in used:
            continue
        prefix = PASSTHROUGH_OPTICS if name in optics_names else PASSTHROUGH
        columns[prefix + name.removeprefix("rln")] = _passthrough(items[name])
    if not columns:
        raise DatasetFileError(source, "the item table has no columns")
    return Dataset.from_columns(columns, seed=seed)


def _import_alignments(
    items: pd.DataFrame, columns: dict[str, np.ndarray], take: Any, source: str
) -> None:
    """Poses, shifts, classes and half sets (2D when only rlnAnglePsi is present)."""
    names = set(items.columns)
    if {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= names:
        prefix = "alignments3D/"
        euler_deg = np.stack(
            [
                take(name).to_numpy(np.float64)
                for name in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
            ],
            axis=1,
        )
        columns[prefix + "pose"] = euler_to_axis_angle(euler_deg).astype(np.float32)
    elif "rlnAnglePsi" in names:
        prefix = "alignments2D/"
        columns[prefix + "pose"] = np.deg2rad(take("rlnAnglePsi").to_numpy(np.float64)).astype(
            np.float32
        )
    else:
        prefix = "alignments3D/"
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= names:
        if "blob/psize_A" not in columns:
            raise DatasetFileError(source, "rlnOriginXAngst needs rlnImagePixelSize")
        psize_A = columns["blob/psize_A"].astype(np.float64)
        origin_A = np.stack(
            [
                take("rlnOriginXAngst").to_numpy(np.float64),
                take("rlnOriginYAngst").to_numpy(np.float64),
            ],
            axis=1,
        )
        columns[prefix + "shift"] = (origin_A / psize_A[:, None]).astype(np.float32)
    elif {"rlnOriginX", "rlnOriginY"} <= names:
        columns[prefix + "shift"] = np.stack(
            [take("rlnOriginX").to_numpy(np.float32), take("rlnOriginY").to_numpy(np.float32)],
            axis=1,
        )
    if prefix + "shift" in columns and "blob/psize_A" in columns:
        columns[prefix + "psize_A"] = columns["blob/psize_A"]
    # 1-based in RELION, 0-based in cryoSPARC; files that use 0 for "unassigned" keep the column
    # under relion/ instead.
    for name, field in (("rlnClassNumber", "class"), ("rlnRandomSubset", "split")):
        if name not in names or (field == "split" and prefix != "alignments3D/"):
            continue
        numbers = items[name].to_numpy(np.int64)
        if numbers.size and numbers.min() >= 1:
            columns[prefix + field] = (take(name).to_numpy(np.int64) - 1).astype(np.uint32)


def _format_floats(values: npt.ArrayLike, dtype: npt.DTypeLike) -> list[str]:
    """Decimals that read back to exactly the same ``dtype`` values.

    float64 uses Python's shortest round-trip ``repr``; float32 uses the fewest of 7, 8 or 9
    significant digits that round-trip (9 always do), so a STAR value with at most 7
    significant digits is written back as it was read.
    """
    array = np.asarray(values, dtype=dtype)
    wide = array.astype(np.float64).tolist()
    if array.dtype != np.float32:
        return [repr(item) for item in wide]
    text = [f"{item:.7g}" for item in wide]
    for digits in (8, 9):
        parsed = np.array(text, dtype=np.float64).astype(np.float32)
        redo = np.flatnonzero((parsed != array) & ~np.isnan(array)).tolist()
        for index in redo:
            text[index] = f"{wide[index]:.{digits}g}"
    return text


def _format_column(values: np.ndarray) -> list[str]:
    """A dataset column as STAR text: integers plain, floats shortest-exact, bytes decoded."""
    if values.dtype.kind == "S":
        return [item.decode("utf-8") for item in values.tolist()]
    if values.dtype.kind in "iu":
        return [str(item) for item in values.tolist()]
    if values.dtype.kind == "f":
        # A float column must read back as floats: "300" would come back as an integer.
        return [
            text if any(mark in text for mark in ".eni") else text + ".0"
            for text in _format_floats(values, values.dtype)
        ]
    raise TypeError(f"cannot write a column of dtype {values.dtype} to STAR")


def _export_columns(
    dataset: Dataset, *, style: StarStyle, image_index_digits: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Item-table columns as text, and the names of those that belong to the optics table."""
    out: dict[str, list[str]] = {}
    optics: list[str] = []
    blob_path, blob_idx = dataset.get("blob/path"), dataset.get("blob/idx")
    if blob_path is not None and blob_idx is not None:
        out["rlnImageName"] = [
            f"{index + 1:0{image_index_digits}d}@{path.decode('utf-8')}"
            for index, path in zip(blob_idx.tolist(), blob_path.tolist(), strict=True)
        ]
    for field in ("location/micrograph_path", "micrograph_blob/path"):
        if field in dataset:
            out["rlnMicrographName"] = _format_column(dataset[field])
    for name, field in _STRINGS.items():
        if field in dataset:
            out[name] = _format_column(dataset[field])
    for name, (field, scale, one_based) in _SCALARS.items():
        values = dataset.get(field)
        if values is None:
            continue
        if one_based:
            out[name] = [str(item + 1) for item in values.astype(np.int64).tolist()]
        else:
            converted = values.astype(np.float64) / scale
            out[name] = _format_floats(converted, values.dtype if scale == 1.0 else np.float64)
    shape = dataset.get("blob/shape")
    if shape is not None:
        out["rlnImageSize"] = [str(item) for item in shape[:, 0].tolist()]
    _export_alignments(dataset, out, style=style)
    location = dataset.get("location/center_x_frac")
    mic_shape = dataset.get("location/micrograph_shape")
    if location is not None and mic_shape is not None:
        center_y = dataset["location/center_y_frac"].astype(np.float64)
        out["rlnCoordinateX"] = _format_floats(
            location.astype(np.float64) * mic_shape[:, 1], np.float64
        )
        out["rlnCoordinateY"] = _format_floats(center_y * mic_shape[:, 0], np.float64)
    psize = dataset.get("blob/psize_A")
    if style == "relion30" and psize is not None:
        out.pop("rlnImagePixelSize")
    if style == "relion30" and psize is not None and "relion/Magnification" not in dataset:
        out["rlnMagnification"] = ["10000.0"] * len(dataset)
        out["rlnDetectorPixelSize"] = _format_floats(psize, np.float32)
    for field in dataset.fields:
        for prefix in (PASSTHROUGH, PASSTHROUGH_OPTICS):
            if field.startswith(prefix):
                name = "rln" + field.removeprefix(prefix)
                out[name] = _format_column(dataset[field])
                if prefix == PASSTHROUGH_OPTICS:
                    optics.append(name)
    optics.extend(name for name in _OPTICS_COLUMNS if name in out)
    return out, optics


def _export_alignments(dataset: Dataset, out: dict[str, list[str]], *, style: StarStyle) -> None:
    """Poses, shifts, classes and half sets, from alignments3D or else alignments2D."""
    if "alignments3D/pose" in dataset:
        prefix = "alignments3D/"
        euler_deg = axis_angle_to_euler(dataset["alignments3D/pose"].astype(np.float64))
        for axis, name in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
            out[name] = _format_floats(euler_deg[:, axis], np.float64)
    elif "alignments2D/pose" in dataset:
        prefix = "alignments2D/"
        psi_deg = np.rad2deg(dataset["alignments2D/pose"].astype(np.float64))
        out["rlnAnglePsi"] = _format_floats(psi_deg, np.float64)
    elif "alignments2D/shift" in dataset:
        prefix = "alignments2D/"
    else:
        prefix = "alignments3D/"
    shift = dataset.get(prefix + "shift")
    if shift is not None:
        if style == "relion30":
            out["rlnOriginX"] = _format_floats(shift[:, 0], np.float32)
            out["rlnOriginY"] = _format_floats(shift[:, 1], np.float32)
        else:
            psize = dataset.get(prefix + "psize_A")
            if psize is None:
                psize = dataset.get("blob/psize_A")
            if psize is None:
                raise ValueError(
                    f"dataset needs {prefix}psize_A or blob/psize_A to write rlnOriginXAngst"
                )
            origin_A = shift.astype(np.float64) * psize.astype(np.float64)[:, None]
            out["rlnOriginXAngst"] = _format_floats(origin_A[:, 0], np.float64)
            out["rlnOriginYAngst"] = _format_floats(origin_A[:, 1], np.float64)
    classes = dataset.get(prefix + "class")
    if classes is not None:
        out["rlnClassNumber"] = [str(item + 1) for item in classes.astype(np.int64).tolist()]
    split = dataset.get(prefix + "split")
    if split is not None and prefix == "alignments3D/":
        out["rlnRandomSubset"] = [str(item + 1) for item in split.astype(np.int64).tolist()]


def star_blocks_from_dataset(
    dataset: Dataset, *, style: StarStyle = "relion31", image_index_digits: int = 6
) -> dict[str, pd.DataFrame]:
    """The STAR tables for ``dataset``, as text DataFrames ready for ``starfile``.

    Parameters
    ----------
    dataset : Dataset
        Items to export.
    style : {"relion31", "relion30"}, optional
        ``"relion31"`` (RELION 3.1 to 5: ``optics`` plus ``particles``/``micrographs``/
        ``movies``, origins in A) or ``"relion30"`` (one table, origins in pixels, pixel size
        as detector pixel and magnification).
    image_index_digits : int, optional
        Zero padding of the 1-based index in ``rlnImageName`` (RELION writes 6).

    Returns
    -------
    dict of str to DataFrame
        Block name to table, every value already formatted as text.

    Raises
    ------
    ValueError
        If items of one optics group disagree on an optics value, or a shift cannot be
        converted to A for lack of a pixel size.
    """
    if style not in ("relion31", "relion30"):
        raise ValueError(f"style must be 'relion31' or 'relion30', got {style!r}")
    if image_index_digits < 0:
        raise ValueError(f"image_index_digits must be >= 0, got {image_index_digits}")
    out, optics_names = _export_columns(dataset, style=style, image_index_digits=image_index_digits)
    kind = (
        "particles"
        if "blob/path" in dataset
        else "micrographs"
        if "micrograph_blob/path" in dataset
        else "movies"
        if "movie_blob/path" in dataset
        else "particles"
    )
    table = pd.DataFrame(out, dtype=object)
    if style == "relion30":
        return {"images" if kind == "particles" else kind: table}
    optics_values = [name for name in optics_names if name != "rlnOpticsGroup"]
    if "rlnOpticsGroup" not in table:
        keys = (
            table[optics_values].astype(str).agg("\x00".join, axis=1)
            if optics_values
            else pd.Series([""] * len(table))
        )
        table.insert(0, "rlnOpticsGroup", [str(code + 1) for code in pd.factorize(keys)[0]])
    groups = table[["rlnOpticsGroup", *optics_values]].drop_duplicates()
    if groups["rlnOpticsGroup"].duplicated().any():
        conflict = [
            name
            for name in optics_values
            if groups.groupby("rlnOpticsGroup")[name].nunique().gt(1).any()
        ]
        raise ValueError(f"items of one optics group disagree on {conflict}")
    order = np.argsort(groups["rlnOpticsGroup"].astype(np.int64).to_numpy(), kind="stable")
    optics = groups.iloc[order].reset_index(drop=True)
    if "rlnOpticsGroupName" not in optics:
        optics.insert(
            1, "rlnOpticsGroupName", ["opticsGroup" + group for group in optics["rlnOpticsGroup"]]
        )
    if kind == "particles" and "rlnImageDimensionality" not in optics and "rlnImageSize" in optics:
        optics["rlnImageDimensionality"] = "2"
    items = table.drop(columns=optics_values)
    return {"optics": optics, kind: items}


def save_star(
    dataset: Dataset,
    path: str | os.PathLike[str],
    *,
    style: StarStyle = "relion31",
    image_index_digits: int = 6,
) -> None:
    """Write ``dataset`` as a RELION STAR file, atomically.

    Parameters
    ----------
    dataset : Dataset
        Items to export (see the module docstring for the conversions).
    path : path-like
        Destination; its folder must exist.
    style : {"relion31", "relion30"}, optional
        See :func:`star_blocks_from_dataset`.
    image_index_digits : int, optional
        Zero padding of the index in ``rlnImageName``.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError("dataset must be a Dataset")
    blocks = star_blocks_from_dataset(dataset, style=style, image_index_digits=image_index_digits)
    text = starfile.to_string(blocks)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
