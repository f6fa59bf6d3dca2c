"""Select 2D: keep particles of chosen 2D classes, by index or by population and resolution.

Like cryoSPARC's Select 2D and RELION's subset selection: either the user names the classes,
or classes are kept automatically when they hold enough particles and their half-set FRC
resolution (:attr:`~cryokube.processing.algorithms.class2d.Class2DResult.class_resolution_A`)
is good enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Selection2D", "select_2d"]


@dataclass(frozen=True)
class Selection2D:
    """Classes kept and the particles that belong to them.

    Attributes
    ----------
    classes : ndarray of shape (n_kept,), int
        Kept class indices, ascending.
    particle_mask : ndarray of shape (B,), bool
        True for particles assigned to a kept class.
    """

    classes: np.ndarray[Any, np.dtype[np.int64]]
    particle_mask: np.ndarray[Any, np.dtype[np.bool_]]

    @property
    def particle_indices(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Indices of the kept particles, ascending."""
        return np.flatnonzero(self.particle_mask)


def select_2d(
    assignments: npt.ArrayLike,
    *,
    n_classes: int,
    classes: Sequence[int] | None = None,
    class_resolution_A: npt.ArrayLike | None = None,
    min_particles: int | None = None,
    min_fraction: float | None = None,
    max_resolution_A: float | None = None,
) -> Selection2D:
    """Keep 2D classes by index, or automatically by population and resolution.

    Parameters
    ----------
    assignments : array-like of shape (B,), int
        Class of each particle (``Class2DResult.assignments``).
    n_classes : int
        Number of classes K.
    classes : sequence of int, optional
        Classes to keep; when given, the automatic criteria must be left out.
    class_resolution_A : array-like of shape (K,), optional
        Resolution of each class average in Angstrom; required with ``max_resolution_A``.
    min_particles : int, optional
        Keep only classes with at least this many particles.
    min_fraction : float, optional
        Keep only classes holding at least this fraction (0 to 1) of all particles.
    max_resolution_A : float, optional
        Keep only classes whose resolution is this value or better (numerically smaller).

    Returns
    -------
    Selection2D
    """
    labels = np.asarray(assignments)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise TypeError(
            f"assignments must be a 1D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"assignments must lie in 0..{n_classes - 1}")
    sizes = np.bincount(labels, minlength=n_classes)
    automatic = (min_particles, min_fraction, max_resolution_A)
    if classes is not None:
        if any(criterion is not None for criterion in automatic):
            raise ValueError(
                "classes cannot be combined with min_particles, min_fraction or max_resolution_A"
            )
        kept = np.unique(np.asarray(classes, dtype=np.int64))
        if kept.size and (kept.min() < 0 or kept.max() >= n_classes):
            raise ValueError(f"classes must lie in 0..{n_classes - 1}, got {list(classes)}")
    else:
        keep = np.ones(n_classes, dtype=bool)
        if min_particles is not None:
            keep &= sizes >= min_particles
        if min_fraction is not None:
            if not 0 <= min_fraction <= 1:
                raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
            keep &= sizes >= min_fraction * labels.size
        if max_resolution_A is not None:
            if class_resolution_A is None:
                raise ValueError("max_resolution_A needs class_resolution_A")
            resolution = np.asarray(class_resolution_A, dtype=np.float64)
            if resolution.shape != (n_classes,):
                raise ValueError(
                    f"class_resolution_A must have shape ({n_classes},), got {resolution.shape}"
                )
            keep &= resolution <= max_resolution_A
        kept = np.flatnonzero(keep).astype(np.int64)
    return Selection2D(kept, np.isin(labels, kept))
