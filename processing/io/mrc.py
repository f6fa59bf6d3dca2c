"""MRC / MRCS maps, images and stacks: permissive reading, strict MRC2014 writing.

Reading accepts what real software writes: old EMDB headers (``nversion = 0``), RELION
files without the ``"MAP "`` id or machine stamp, either byte order, modes 0, 1, 2, 4, 6
and 12 (float16), unequal voxel sizes, permuted axes (``mapc/mapr/maps``) and bzip2- or
gzip-compressed files (detected by their magic bytes, decompressed as a stream). Plain
files are memory-mapped, so a large stack is never copied as a whole.

Writing produces strict MRC2014 (Cheng et al. 2015) through :mod:`mrcfile`, which
``mrcfile.validate`` accepts, atomically (see :func:`cryokube.processing.io._atomic.atomic_path`).

References
----------
Cheng A, Henderson R, Mastronarde D, et al. MRC2014: Extensions to the MRC format header
for electron cryo-microscopy and tomography. J Struct Biol 192, 146-150 (2015).
https://doi.org/10.1016/j.jsb.2015.04.002
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, cast

import mrcfile
import numpy as np
import numpy.typing as npt
from cryokube.processing.io.atomic import atomic_path
from cryokube.processing.io.errors import (
    InputFileError,
    TruncatedFileError,
    UnreadableCompressionError,
    UnsupportedModeError,
    WrongDimensionsError,
)
from mrcfile import utils as mrc_utils
from mrcfile.dtypes import HEADER_DTYPE

HEADER_BYTES = 1024
SUPPORTED_MODES = (0, 1, 2, 4, 6, 12)
_WRITE_DTYPES = (np.int8, np.int16, np.uint16, np.float16, np.float32, np.complex64)
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)
_CHUNK_ELEMENTS = 4 * 1024 * 1024  # float64 temporaries of the statistics stay at 32 MiB


@dataclass(frozen=True)
class MrcInfo:
    """What an MRC header says, in physical units.

    Attributes
    ----------
    path : str
        The file.
    shape : tuple of int
        Shape of the data array as returned: ``(ny, nx)`` for one image, ``(n, ny, nx)`` for
        a stack or a volume in (z, y, x) order, ``(n_vol, nz, ny, nx)`` for a volume stack.
    dtype : numpy.dtype
        Element type in the file (native byte order).
    mode : int
        MRC mode (0 int8, 1 int16, 2 float32, 4 complex64, 6 uint16, 12 float16).
    voxel_size_A : tuple of 3 float
        Voxel size along x, y, z in Å (``cella / mx``); 0 where the header leaves it unset.
    origin_A : tuple of 3 float
        MRC2014 origin (x, y, z) in Å.
    start_px : tuple of 3 int
        ``nxstart, nystart, nzstart`` (old-style origin, in voxels, column/row/section order).
    axis_order : tuple of 3 int
        ``mapc, mapr, maps`` (1 = x, 2 = y, 3 = z) as stored; the returned volume is always
        (z, y, x).
    space_group : int
        ``ispg``: 0 for image stacks, 1 for single volumes, 401+ for volume stacks.
    nversion : int
        MRC format version (20140 for MRC2014, 0 for older writers).
    dmin, dmax, dmean, rms : float
        Statistics as recorded in the header (not recomputed).
    labels : tuple of str
        Non-empty text labels.
    extended_header_bytes : int
        ``nsymbt``: bytes between the header and the data.
    compression : str or None
        ``"bz2"``, ``"gzip"`` or None for a plain (memory-mappable) file.
    byte_order : str
        ``"<"`` (little-endian) or ``">"`` (big-endian) as stored.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    mode: int
    voxel_size_A: tuple[float, float, float]
    origin_A: tuple[float, float, float]
    start_px: tuple[int, int, int]
    axis_order: tuple[int, int, int]
    space_group: int
    nversion: int
    dmin: float
    dmax: float
    dmean: float
    rms: float
    labels: tuple[str, ...]
    extended_header_bytes: int
    compression: str | None
    byte_order: Literal["<", ">"]

    @property
    def pixel_size_A(self) -> float:
        """Pixel size along x in Å (images and isotropic maps have one pixel size)."""
        return self.voxel_size_A[0]

    @property
    def data_offset(self) -> int:
        """Byte offset of the data in the (decompressed) file."""
        return HEADER_BYTES + self.extended_header_bytes

    @property
    def file_shape(self) -> tuple[int, ...]:
        """Shape of the data in file order (sections, rows, columns)."""
        return _file_shape(self)

    @property
    def data_bytes(self) -> int:
        """Number of data bytes the header announces."""
        return math.prod(self.shape) * self.dtype.itemsize


def _file_shape(info: MrcInfo) -> tuple[int, ...]:
    if len(info.shape) != 3 or info.axis_order == (1, 2, 3):
        return info.shape
    labels = [info.axis_order[2], info.axis_order[1], info.axis_order[0]]
    zyx = dict(zip((3, 2, 1), info.shape, strict=True))
    return tuple(zyx[label] for label in labels)


def _to_zyx(data: npt.NDArray[Any], axis_order: tuple[int, int, int]) -> npt.NDArray[Any]:
    """View a (sections, rows, columns) volume in (z, y, x) order (no copy)."""
    if data.ndim != 3 or axis_order == (1, 2, 3):
        return data
    labels = [axis_order[2], axis_order[1], axis_order[0]]
    return data.transpose(labels.index(3), labels.index(2), labels.index(1))


def _compression_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(3)
    except OSError as exc:
        raise InputFileError(path, f"cannot open: {exc.strerror or exc}") from exc
    if magic == b"BZh":
        return "bz2"
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    return None


def _open_stream(path: Path, compression: str | None) -> IO[bytes]:
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "gzip":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _read_exact(stream: IO[bytes], n_bytes: int, path: Path, what: str) -> bytes:
    """Read ``n_bytes`` from a possibly compressed stream, mapping failures to typed errors."""
    try:
        raw = stream.read(n_bytes)
    except _DECOMPRESS_ERRORS as exc:
        raise UnreadableCompressionError(
            path, f"compressed stream cannot be decoded ({exc})"
        ) from exc
    if len(raw) < n_bytes:
        raise TruncatedFileError(
            path, f"file ends after {len(raw)} of the {n_bytes} bytes of the {what}"
        )
    return raw


def _parse_header(raw: bytes, path: Path, compression: str | None) -> MrcInfo:
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(()).view(np.recarray)
    byte_order: Literal["<", ">"] = "<"  # RELION and old writers leave the stamp empty
    with contextlib.suppress(ValueError):
        byte_order = ">" if mrc_utils.byte_order_from_machine_stamp(header.machst) == ">" else "<"
    header = header.view(header.dtype.newbyteorder(byte_order))
    mode = int(header.mode)
    if mode not in SUPPORTED_MODES:
        swapped = header.view(header.dtype.newbyteorder())
        if int(swapped.mode) in SUPPORTED_MODES:
            header, mode = swapped, int(swapped.mode)
            byte_order = ">" if byte_order == "<" else "<"
        else:
            raise UnsupportedModeError(
                path, f"MRC mode {mode} is not supported (readable modes: {SUPPORTED_MODES})"
            )
    dims = (int(header.nx), int(header.ny), int(header.nz))
    if min(dims) < 1:
        raise WrongDimensionsError(path, f"header dimensions nx, ny, nz = {dims} must be >= 1")
    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise WrongDimensionsError(path, f"extended header size nsymbt = {nsymbt} is negative")
    space_group = int(header.ispg)
    if mrc_utils.spacegroup_is_volume_stack(space_group) and (
        int(header.mz) < 1 or dims[2] % int(header.mz)
    ):
        raise WrongDimensionsError(
            path, f"volume stack with nz = {dims[2]} not a multiple of mz = {int(header.mz)}"
        )
    shape: tuple[int, ...] = mrc_utils.data_shape_from_header(header)
    sampling = (int(header.mx), int(header.my), int(header.mz))
    cella = (float(header.cella.x), float(header.cella.y), float(header.cella.z))
    voxel = tuple(c / m if m > 0 else 0.0 for c, m in zip(cella, sampling, strict=True))
    axis_order = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axis_order) != [1, 2, 3]:
        axis_order = (1, 2, 3)
    elif len(shape) == 3:
        file_labels = [axis_order[2], axis_order[1], axis_order[0]]
        shape = tuple(shape[file_labels.index(a)] for a in (3, 2, 1))
    labels = tuple(
        text
        for label in header.label[: max(0, min(10, int(header.nlabl)))]
        if (text := bytes(label).decode("ascii", "replace").strip())
    )
    return MrcInfo(
        path=os.fspath(path),
        shape=shape,
        dtype=mrc_utils.dtype_from_mode(mode),
        mode=mode,
        voxel_size_A=(voxel[0], voxel[1], voxel[2]),
        origin_A=(float(header.origin.x), float(header.origin.y), float(header.origin.z)),
        start_px=(int(header.nxstart), int(header.nystart), int(header.nzstart)),
        axis_order=axis_order,
        space_group=space_group,
        nversion=int(header.nversion),
        dmin=float(header.dmin),
        dmax=float(header.dmax),
        dmean=float(header.dmean),
        rms=float(header.rms),
        labels=labels,
        extended_header_bytes=nsymbt,
        compression=compression,
        byte_order=byte_order,
    )


def read_mrc_header(path: str | os.PathLike[str]) -> MrcInfo:
    """Read only the header of an MRC file (plain, bz2 or gzip).

    Parameters
    ----------
    path : str or os.PathLike
        The MRC/MRCS file.

    Returns
    -------
    MrcInfo
        Shape, dtype, voxel size (Å), origin (Å) and the other header fields.

    Raises
    ------
    InputFileError
        A subclass naming the file: truncated header, unsupported mode, impossible
        dimensions or an undecodable compressed stream.
    """
    file = Path(path)
    compression = _compression_of(file)
    with _open_stream(file, compression) as stream:
        raw = _read_exact(stream, HEADER_BYTES, file, "1024-byte MRC header")
    return _parse_header(raw, file, compression)


def read_mrc(
    path: str | os.PathLike[str], *, mmap: bool = True
) -> tuple[npt.NDArray[Any], MrcInfo]:
    """Read an MRC map, image or stack.

    Parameters
    ----------
    path : str or os.PathLike
        The file; bzip2 and gzip compression are detected from the content.
    mmap : bool, optional
        Memory-map plain files read-only (default). Compressed files, and plain files with
        ``mmap=False``, are read into a new writable array.

    Returns
    -------
    data : ndarray of shape ``info.shape``
        The values in the file's dtype; volumes in (z, y, x) order whatever the header's
        ``mapc/mapr/maps``.
    info : MrcInfo
        Header metadata, including ``pixel_size_A`` and ``origin_A``.

    Raises
    ------
    InputFileError
        A subclass naming the file (see :func:`read_mrc_header`), or
        :class:`TruncatedFileError` when the data are shorter than the header says.
    """
    with MrcStack(path, mmap=mmap) as stack:
        data = stack.read_all()
        return data, stack.info


class MrcStack:
    """Lazy access to the sections of an MRC file (a particle or movie stack).

    Indexing reads only the requested sections: through a read-only memory map for plain
    files, or by seeking in the decompressed stream for bz2/gzip files (cheap forwards,
    expensive backwards). Items are returned as new arrays of shape ``(ny, nx)`` for an
    integer and ``(k, ny, nx)`` otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        The MRC/MRCS file.
    mmap : bool, optional
        Memory-map plain files (default); otherwise read them through a file object.

    Attributes
    ----------
    info : MrcInfo
        The header; ``len(stack)`` is the number of sections.
    """

    def __init__(self, path: str | os.PathLike[str], *, mmap: bool = True) -> None:
        self.path = Path(path)
        self.info = read_mrc_header(self.path)
        file_shape = self.info.file_shape
        self._frame_shape: tuple[int, ...] = tuple(file_shape[-2:])
        self._n = 1 if len(file_shape) == 2 else math.prod(file_shape[:-2])
        self._dtype = self.info.dtype.newbyteorder(self.info.byte_order)
        self._frame_bytes = math.prod(self._frame_shape) * self._dtype.itemsize
        self._memmap: np.memmap[Any, Any] | None = None
        self._stream: IO[bytes] | None = None
        if self.info.compression is None:
            size = self.path.stat().st_size
            needed = self.info.data_offset + self._n * self._frame_bytes
            if size < needed:
                raise TruncatedFileError(
                    self.path,
                    f"file has {size} bytes but its header announces {needed} "
                    f"({self._n} sections of {self._frame_shape} {self.info.dtype})",
                )
        if self.info.compression is None and mmap:
            self._memmap = np.memmap(
                self.path,
                dtype=self._dtype,
                mode="r",
                offset=self.info.data_offset,
                shape=(self._n, *self._frame_shape),
            )
        else:
            self._stream = _open_stream(self.path, self.info.compression)

    def __len__(self) -> int:
        return self._n

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of one section in px."""
        return (self._frame_shape[0], self._frame_shape[1])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the memory map or the stream."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._memmap = None

    def _read_range(self, start: int, stop: int) -> npt.NDArray[Any]:
        if self._memmap is not None:
            return np.array(self._memmap[start:stop], dtype=self.info.dtype)
        if self._stream is None:
            raise ValueError(f"{self.path}: the stack is closed")
        try:
            self._stream.seek(self.info.data_offset + start * self._frame_bytes)
        except _DECOMPRESS_ERRORS as exc:
            raise UnreadableCompressionError(
                self.path, f"compressed stream cannot be decoded ({exc})"
            ) from exc
        raw = _read_exact(
            self._stream,
            (stop - start) * self._frame_bytes,
            self.path,
            f"sections {start}-{stop - 1}",
        )
        data = np.frombuffer(bytearray(raw), dtype=self._dtype)
        return data.reshape((stop - start, *self._frame_shape)).astype(self.info.dtype, copy=False)

    def __getitem__(
        self, key: int | slice | Sequence[int] | npt.NDArray[np.integer[Any]]
    ) -> npt.NDArray[Any]:
        if isinstance(key, (int, np.integer)):
            index = int(key)
            if not -self._n <= index < self._n:
                raise IndexError(f"section {index} out of range for {self._n} sections")
            index %= self._n
            frame: npt.NDArray[Any] = self._read_range(index, index + 1)[0]
            return frame
        indices = np.arange(self._n)[key]
        if self._memmap is not None:
            picked: npt.NDArray[Any] = np.array(self._memmap[indices], dtype=self.info.dtype)
            return picked
        out = np.empty((indices.size, *self._frame_shape), dtype=self.info.dtype)
        for i, index in enumerate(indices):
            out[i] = self._read_range(int(index), int(index) + 1)[0]
        return out

    def iter_batches(self, batch_size: int) -> Iterator[npt.NDArray[Any]]:
        """Yield consecutive sections in batches of shape ``(<= batch_size, ny, nx)``.

        Sequential, so compressed files are decompressed once as a stream.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, self._n, batch_size):
            yield self._read_range(start, min(start + batch_size, self._n))

    def read_all(self) -> npt.NDArray[Any]:
        """The whole data array of shape ``info.shape`` (a read-only map for plain files)."""
        if self._memmap is not None:
            data: npt.NDArray[Any] = self._memmap
        else:
            data = self._read_range(0, self._n)
        data = data.reshape(self.info.file_shape)
        return _to_zyx(data, self.info.axis_order)


def open_stack(path: str | os.PathLike[str], *, mmap: bool = True) -> MrcStack:
    """Open an MRC stack for lazy indexing; see :class:`MrcStack`."""
    return MrcStack(path, mmap=mmap)


def _voxel_triplet(pixel_size_A: float | Sequence[float]) -> tuple[float, float, float]:
    values = (
        (float(pixel_size_A),) * 3
        if isinstance(pixel_size_A, (int, float, np.floating))
        else tuple(float(v) for v in pixel_size_A)
    )
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"pixel_size_A must be a positive number or 3 positive numbers (x, y, z), "
            f"got {pixel_size_A!r}"
        )
    return (values[0], values[1], values[2])


def write_mrc(
    path: str | os.PathLike[str],
    data: npt.ArrayLike,
    *,
    pixel_size_A: float | Sequence[float],
    origin_A: Sequence[float] = (0.0, 0.0, 0.0),
    stack: bool = False,
    float16: bool = False,
    label: str | None = None,
) -> None:
    """Write strict MRC2014 atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.mrc`` or ``.mrcs``); replaced atomically.
    data : array_like of shape (ny, nx), (nz, ny, nx) or (n, ny, nx)
        int8, int16, uint16, float16, float32 or complex64 values. float64 is stored as
        float32 and uint8 is widened to uint16 (MRC has no unsigned 8-bit mode).
    pixel_size_A : float or sequence of 3 float
        Pixel (voxel) size in Å, or (x, y, z) sizes for anisotropic voxels.
    origin_A : sequence of 3 float, optional
        MRC2014 origin (x, y, z) in Å.
    stack : bool, optional
        Mark 3D data as an image stack (``ispg = 0``, an ``.mrcs``) rather than a volume.
    float16 : bool, optional
        Store floating data as MRC mode 12 (half precision).
    label : str, optional
        A text label (at most 80 ASCII characters).

    Raises
    ------
    TypeError
        ``data`` has a dtype MRC cannot store.
    ValueError
        ``data`` is not 2D or 3D, or ``pixel_size_A`` / ``origin_A`` / ``label`` is invalid.

    Notes
    -----
    Header statistics are computed in float64. For float16 (mode 12) files the RMS is
    written as -1, which MRC2014 defines as "not determined": readers such as
    ``mrcfile.validate`` recompute it in float16, where the sum of squares overflows
    (RELION's float16 files fail validation for this reason).
    """
    voxel = _voxel_triplet(pixel_size_A)
    origin = tuple(float(v) for v in origin_A)
    if len(origin) != 3 or not all(np.isfinite(origin)):
        raise ValueError(f"origin_A must be 3 finite numbers (x, y, z) in Å, got {origin_A!r}")
    if label is not None and (len(label) > 80 or not label.isascii()):
        raise ValueError("label must be at most 80 ASCII characters")
    array = np.asarray(data)
    if array.ndim not in (2, 3):
        raise ValueError(f"data must be 2D or 3D, got shape {array.shape}")
    file_dtype = _file_dtype(array.dtype, float16=float16)
    sections = array.reshape((-1, *array.shape[-2:]))
    with (
        atomic_path(path) as tmp,
        mrcfile.new_mmap(
            tmp, array.shape, mrc_mode=mrc_utils.mode_from_dtype(file_dtype), overwrite=True
        ) as mrc,
    ):
        stored = mrc.data.reshape(sections.shape)
        step = max(1, _CHUNK_ELEMENTS // max(1, sections[0].size))
        stats = _RunningStats()
        for start in range(0, len(sections), step):
            stored[start : start + step] = sections[start : start + step]
            stats.add(stored[start : start + step])
        if stack and array.ndim == 3:
            mrc.set_image_stack()
        mrc.voxel_size = voxel
        mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = origin
        stats.write_to(mrc.header, rms_undetermined=float16)
        if label is not None:
            mrc.add_label(label)


def _file_dtype(dtype: np.dtype[Any], *, float16: bool) -> np.dtype[Any]:
    """The dtype stored for ``dtype``: uint8 widens to uint16, float64 narrows to float32."""
    if float16:
        if dtype.kind != "f":
            raise TypeError(f"float16=True needs floating data, got dtype {dtype}")
        return np.dtype(np.float16)
    widened = {np.dtype(np.uint8): np.uint16, np.dtype(np.float64): np.float32}.get(dtype, dtype)
    if np.dtype(widened) not in [np.dtype(t) for t in _WRITE_DTYPES]:
        raise TypeError(f"data dtype {dtype} cannot be stored in MRC")
    return np.dtype(widened)


class _RunningStats:
    """Min, max, mean and RMS deviation accumulated chunk by chunk in float64.

    Chunks are the values as stored (after any float16 rounding), so the header agrees with
    what a reader recomputes; no full-size temporary is ever made.
    """

    def __init__(self) -> None:
        self.n = 0
        self.is_complex = False
        self.total: complex = 0.0
        self.squares = 0.0
        self.low = np.inf
        self.high = -np.inf

    def add(self, chunk: npt.NDArray[Any]) -> None:
        self.n += chunk.size
        if chunk.dtype.kind == "c":
            self.is_complex = True
            self.total += complex(chunk.sum(dtype=np.complex128))
            self.squares += float(np.vdot(chunk, chunk).real)
            return
        self.total += float(chunk.sum(dtype=np.float64))
        self.squares += float(np.square(chunk, dtype=np.float64).sum())
        self.low = min(self.low, float(chunk.min()))
        self.high = max(self.high, float(chunk.max()))

    def write_to(self, header: Any, *, rms_undetermined: bool) -> None:
        mean = self.total / self.n
        rms = float(np.sqrt(max(self.squares / self.n - abs(mean) ** 2, 0.0)))
        if self.is_complex:
            header.rms = np.float32(rms)  # MRC2014 leaves min/max/mean of complex data unset
            return
        header.dmin = np.float32(self.low)
        header.dmax = np.float32(self.high)
        header.dmean = np.float32(mean.real)
        header.rms = np.float32(-1.0 if rms_undetermined else rms)
