"""Gain references and detector defects, applied to movie frames on the fly.

Counting cameras record a gain reference (an MRC image of per-pixel multiplicative
factors) and have defective pixels: hot pixels that count far too often, dead ones that
never do, and rows or columns listed by the vendor. :class:`FrameCorrection` multiplies
each frame by the gain and replaces defects by the frame's mean over good pixels, which
keeps the expected dose per pixel and adds no structure.

Gain orientation follows RELION (``--gain_rot``, ``--gain_flip``) and MotionCor2
(``-RotGain``, ``-FlipGain``): rotate first, then flip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryokube.processing.io.errors import GainShapeError
from cryokube.processing.io.mrc import read_mrc

GAIN_FLIPS = ("none", "updown", "leftright")


def orient_gain(
    gain: npt.ArrayLike, *, rotate_90: int = 0, flip: str = "none"
) -> npt.NDArray[np.float32]:
    """Rotate, then flip, a gain reference to match the movie frames.

    Parameters
    ----------
    gain : array_like of shape (ny, nx)
        Gain factors (dimensionless).
    rotate_90 : int, optional
        Number of 90-degree rotations, counter-clockwise with row 0 displayed at the top
        (:func:`numpy.rot90`): 0, 1, 2 or 3.
    flip : {"none", "updown", "leftright"}, optional
        Flip rows (upside down) or columns after rotating.

    Returns
    -------
    ndarray of shape (ny, nx) or (nx, ny), float32
    """
    if rotate_90 not in (0, 1, 2, 3):
        raise ValueError(f"rotate_90 must be 0, 1, 2 or 3, got {rotate_90!r}")
    if flip not in GAIN_FLIPS:
        raise ValueError(f"flip must be one of {GAIN_FLIPS}, got {flip!r}")
    out = np.rot90(np.asarray(gain, dtype=np.float32), rotate_90)
    if flip == "updown":
        out = out[::-1, :]
    elif flip == "leftright":
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def load_gain(
    path: str | os.PathLike[str], *, rotate_90: int = 0, flip: str = "none"
) -> npt.NDArray[np.float32]:
    """Read a gain reference from an MRC file and orient it; see :func:`orient_gain`.

    Raises
    ------
    GainShapeError
        The file holds more than one image.
    InputFileError
        The file cannot be read as MRC.
    """
    data, info = read_mrc(path, mmap=False)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise GainShapeError(path, f"a gain reference must be one 2D image, got shape {info.shape}")
    return orient_gain(data, rotate_90=rotate_90, flip=flip)


def defect_mask(
    shape: tuple[int, int],
    *,
    pixels_yx: npt.ArrayLike | None = None,
    rows: npt.ArrayLike | None = None,
    columns: npt.ArrayLike | None = None,
) -> npt.NDArray[np.bool_]:
    """Build a defect mask from a vendor-style defect list.

    Parameters
    ----------
    shape : tuple of 2 int
        Frame shape ``(ny, nx)`` in px.
    pixels_yx : array_like of shape (k, 2), optional
        Defective pixels as (row, column) indices.
    rows, columns : array_like of int, optional
        Entire defective rows / columns.

    Returns
    -------
    ndarray of shape ``shape``, bool
        True where a pixel is defective.
    """
    mask = np.zeros(shape, dtype=bool)
    if pixels_yx is not None:
        yx = np.asarray(pixels_yx, dtype=np.int64).reshape(-1, 2)
        if yx.size and (yx.min() < 0 or np.any(yx.max(axis=0) >= np.asarray(shape))):
            raise ValueError(f"pixels_yx has coordinates outside the frame of shape {shape}")
        mask[yx[:, 0], yx[:, 1]] = True
    for name, values, axis in (("rows", rows, 0), ("columns", columns, 1)):
        if values is None:
            continue
        index = np.asarray(values, dtype=np.int64).ravel()
        if index.size and (index.min() < 0 or index.max() >= shape[axis]):
            raise ValueError(f"{name} has indices outside 0..{shape[axis] - 1}")
        if axis == 0:
            mask[index, :] = True
        else:
            mask[:, index] = True
    return mask


def find_defects(frame_sum: npt.ArrayLike, *, n_sigma: float = 8.0) -> npt.NDArray[np.bool_]:
    """Find hot and dead pixels in a sum of counting frames as isolated Poisson outliers.

    A pixel is defective when it is further than ``n_sigma * sqrt(m)`` (its Poisson standard
    deviations) both from the median ``m`` of the whole sum and from the median of its 8
    neighbours. The second test keeps the specimen: at a high dose per pixel a particle's dark
    core or bright fringe can lie that far from the sum's median, but over several pixels, so
    its neighbours follow it; a hot or dead pixel (or a single bad row or column) stands alone.
    Dead pixels are only reported where the band lies above zero.

    Parameters
    ----------
    frame_sum : array_like of shape (ny, nx)
        Sum of (gain-corrected) frames, in counts.
    n_sigma : float, optional
        Outlier threshold in Poisson standard deviations.

    Returns
    -------
    ndarray of shape (ny, nx), bool
        True for outliers.
    """
    if n_sigma <= 0:
        raise ValueError(f"n_sigma must be positive, got {n_sigma}")
    total = np.asarray(frame_sum, dtype=np.float64)
    if total.ndim != 2:
        raise ValueError(f"frame_sum must be 2D, got shape {total.shape}")
    mask: npt.NDArray[np.bool_] = _poisson_outlier(total, float(np.median(total)), n_sigma)
    y, x = np.nonzero(mask)
    ny, nx = total.shape
    neighbours = np.stack(
        [
            total[np.clip(y + dy, 0, ny - 1), np.clip(x + dx, 0, nx - 1)]
            for dy in range(-1, 2)
            for dx in range(-1, 2)
            if dy or dx
        ],
        axis=1,
    )
    isolated = _poisson_outlier(total[y, x], np.median(neighbours, axis=1), n_sigma)
    mask[y[~isolated], x[~isolated]] = False
    return mask


def _poisson_outlier(counts: Any, expected: Any, n_sigma: float) -> Any:
    """``counts`` further than ``n_sigma`` Poisson SDs above ``expected``, or below it where
    that band stays above zero."""
    band = n_sigma * np.sqrt(np.maximum(expected, 1.0))
    return (counts > expected + band) | ((expected - band > 0) & (counts < expected - band))


@dataclass(frozen=True)
class FrameCorrection:
    """Gain and defect correction applied to every batch of frames.

    Attributes
    ----------
    gain : ndarray of shape (ny, nx), float32, optional
        Multiplicative gain, already oriented (see :func:`load_gain`).
    defects : ndarray of shape (ny, nx), bool, optional
        True for pixels to replace by the frame's mean over good pixels.
    source : str, optional
        Where the gain came from, named in errors.
    """

    gain: npt.NDArray[np.float32] | None = None
    defects: npt.NDArray[np.bool_] | None = None
    source: str | None = field(default=None)

    def check_frame_shape(
        self, frame_shape: tuple[int, int], movie: str | os.PathLike[str]
    ) -> None:
        """Raise :class:`GainShapeError` unless gain and defects match ``frame_shape``."""
        for what, array in (("gain reference", self.gain), ("defect mask", self.defects)):
            if array is not None and tuple(array.shape) != tuple(frame_shape):
                raise GainShapeError(
                    self.source or movie,
                    f"{what} has shape {tuple(array.shape)} but the frames of "
                    f"{os.fspath(movie)} have shape {tuple(frame_shape)} (ny, nx); "
                    "check the gain rotation/flip",
                )

    def apply(self, frames: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Return gain-multiplied, defect-replaced frames of shape (n, ny, nx) as float32."""
        out = np.asarray(frames, dtype=np.float32)
        if out is frames:
            out = out.copy()
        self.check_frame_shape((out.shape[-2], out.shape[-1]), self.source or "frames")
        if self.gain is not None:
            out *= self.gain
        if self.defects is not None and self.defects.any():
            good = out[:, ~self.defects]
            means = good.mean(axis=1, dtype=np.float64).astype(np.float32)
            out[:, self.defects] = means[:, None]
        return out
