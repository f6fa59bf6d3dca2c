"""Point-group symmetry as sets of rotation matrices: C_n, D_n, T, O, I.

Matrices act on column vectors ``(x, y, z)`` like those of :mod:`cryokube.processing.geometry`.
Axis settings (stated because programs differ, see Heymann et al. 2005):

* ``Cn``: the n-fold axis along z.
* ``Dn``: ``Cn`` plus a 2-fold axis along x (RELION's setting).
* ``T``: 2-fold axes along x, y and z, 3-fold axes along the body diagonals ``(±1, ±1, ±1)``.
* ``O``: 4-fold axes along x, y and z, 3-folds along the body diagonals.
* ``I``: the "222" setting with 2-fold axes along x, y and z and 5-fold axes along
  ``(0, ±1, ±phi)`` (phi the golden ratio), so one 5-fold axis lies in the y-z plane.
  Other settings (for example a 5-fold on z) are this group rotated; convert a map by
  rotating it, not by renaming the group.

References
----------
Heymann, B., Chagoyen, M. & Belnap, D. M. (2005). Common conventions for interchange and
archiving of three-dimensional electron microscopy information in structural biology.
J. Struct. Biol. 151, 196-207. doi:10.1016/j.jsb.2005.06.001
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt
from cryokube.processing.backend import Array, array_module

__all__ = ["axis_rotation", "expand_poses", "symmetry_group"]

_GOLDEN = (1.0 + np.sqrt(5.0)) / 2.0


def axis_rotation(axis: npt.ArrayLike, angle_deg: float) -> npt.NDArray[np.float64]:
    """Right-handed rotation by ``angle_deg`` about ``axis`` (any length), shape (3, 3)."""
    u = np.asarray(axis, dtype=np.float64)
    norm = float(np.linalg.norm(u))
    if u.shape != (3,) or norm == 0.0:
        raise ValueError(f"axis must be a non-zero 3-vector, got {axis!r}")
    x, y, z = u / norm
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    matrix: npt.NDArray[np.float64] = (
        c * np.eye(3) + s * cross + (1.0 - c) * np.outer(u, u) / norm**2
    )
    return matrix


def _close(generators: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """All products of ``generators`` (a finite group), identity first."""
    elements = [np.eye(3)]
    keys = {tuple(np.round(np.eye(3), 6).ravel())}
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for g in frontier:
            for h in generators:
                product = h @ g
                key = tuple(np.round(product, 6).ravel() + 0.0)
                if key not in keys:
                    keys.add(key)
                    elements.append(product)
                    new.append(product)
        frontier = new
    return np.stack(elements)


def symmetry_group(name: str) -> npt.NDArray[np.float64]:
    """Rotation matrices of a point group.

    Parameters
    ----------
    name : str
        ``"C1"``, ``"Cn"``, ``"Dn"`` (n >= 1), ``"T"``, ``"O"`` or ``"I"`` (case-insensitive),
        in the settings of the module docstring.

    Returns
    -------
    ndarray of shape (order, 3, 3), float64
        The group's rotations, identity first. Orders: n, 2n, 12, 24, 60.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'C4' or 'I', got {type(name).__name__}")
    match = re.fullmatch(r"([CD])(\d+)|([TOI])", name.strip().upper())
    if match is None:
        raise ValueError(f"name must be Cn, Dn, T, O or I, got {name!r}")
    z, x = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    if match.group(1):
        n = int(match.group(2))
        if n < 1:
            raise ValueError(f"name must have an order n >= 1, got {name!r}")
        generators = [axis_rotation(z, 360.0 / n)]
        if match.group(1) == "D":
            generators.append(axis_rotation(x, 180.0))
    elif match.group(3) == "T":
        generators = [axis_rotation(z, 180.0), axis_rotation((1.0, 1.0, 1.0), 120.0)]
    elif match.group(3) == "O":
        generators = [axis_rotation(z, 90.0), axis_rotation((1.0, 1.0, 1.0), 120.0)]
    else:
        generators = [axis_rotation((0.0, 1.0, _GOLDEN), 72.0), axis_rotation(z, 180.0)]
    return _close(generators)


def expand_poses(matrices: Array, group: npt.ArrayLike) -> Array:
    """Every symmetry-equivalent pose of each particle.

    A volume invariant under rotations ``R`` (``V(R r) = V(r)``) projects to the same image
    under pose ``A`` and ``A @ R.T``; reconstruction with symmetry back-projects each image
    with all of them.

    Parameters
    ----------
    matrices : array of shape (n, 3, 3)
        Particle poses (the ``A`` of :mod:`cryokube.processing.geometry`).
    group : array of shape (order, 3, 3)
        From :func:`symmetry_group`.

    Returns
    -------
    array of shape (n, order, 3, 3)
        Poses on the device of ``matrices``, in its dtype.
    """
    xp = array_module(matrices)
    ops = np.asarray(group)
    if ops.ndim != 3 or ops.shape[1:] != (3, 3):
        raise ValueError(f"group must have shape (order, 3, 3), got {ops.shape}")
    if matrices.ndim != 3 or matrices.shape[1:] != (3, 3):
        raise ValueError(f"matrices must have shape (n, 3, 3), got {matrices.shape}")
    ops_t = xp.asarray(np.swapaxes(ops, 1, 2), dtype=matrices.dtype)
    return xp.einsum("nij,gjk->ngik", matrices, ops_t)
