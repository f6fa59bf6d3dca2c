"""Rotation geometry: RELION ZYZ Euler angles, rotation matrices and cryoSPARC axis-angle poses.

One matrix convention is used everywhere in CryoKube: the matrix ``A`` of RELION's
``Euler_angles2matrix(rot, tilt, psi)`` (identical to cisTEM's ZYZ matrix). ``A`` maps
coordinates of the reference (volume) frame to the frame of the particle image::

    r_image = A @ r_volume

so a particle image is the projection along the image z axis of the volume rotated by ``A``,
``image(x, y) = integral of V(A.T @ (x, y, z)) dz``, and by the Fourier slice theorem the image
spectrum at ``(kx, ky)`` is the volume spectrum at ``A.T @ (kx, ky, 0)``. Vectors are ordered
``(x, y, z)``; x runs along array columns, y along rows.

Relations to other programs (see ``docs/conventions.md``):

* RELION and cisTEM: the same ``A`` from the same ``(rot, tilt, psi)`` in degrees.
* cryoSPARC ``alignments3D/pose``: an axis-angle vector ``p`` in radians with
  ``A = R(p).T = R(-p)``, where ``R`` is the usual right-handed Rodrigues rotation (that of
  ``scipy.spatial.transform.Rotation.from_rotvec``). This is the conversion of pyem's
  ``csparc2star`` (its ``expmap`` builds ``R(p).T``).
* ASPIRE and cryojax's ``EulerAnglePose`` use the transpose (inverse) of ``A``: ASPIRE's
  rotation for the same view is ``A.T``; cryojax needs ``(-rot, -tilt, -psi)``.

All functions are batched over leading axes and follow the input's array module. Angles
are computed in float64 unless the input is float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cryokube.processing.backend import Array, array_module

__all__ = [
    "axis_angle_to_euler",
    "axis_angle_to_matrix",
    "euler_to_axis_angle",
    "euler_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_euler",
]


def _float_array(x: Any, name: str, last: tuple[int, ...]) -> Array:
    xp = array_module(x)
    arr = xp.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)
    if arr.shape[arr.ndim - len(last) :] != last:
        raise ValueError(
            f"{name} must have shape (..., {', '.join(map(str, last))}), got {arr.shape}"
        )
    return arr


def euler_to_matrix(angles_deg: Array) -> Array:
    """Rotation matrices from RELION ZYZ Euler angles.

    Parameters
    ----------
    angles_deg : array of shape (..., 3)
        ``(rot, tilt, psi)`` in degrees (RELION ``rlnAngleRot/Tilt/Psi``; cisTEM
        ``phi, theta, psi``).

    Returns
    -------
    matrices : array of shape (..., 3, 3)
        ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` acting on column vectors ``(x, y, z)``, with
        the passive sign convention of RELION's ``Euler_angles2matrix``.

    References
    ----------
    Heymann, Chagoyen & Belnap (2005), "Common conventions for interchange and archiving of
    three-dimensional electron microscopy information in structural biology", J. Struct.
    Biol. 151, 196-207, doi:10.1016/j.jsb.2005.06.001.
    """
    angles = _float_array(angles_deg, "angles_deg", (3,))
    xp = array_module(angles)
    rad = xp.deg2rad(angles)
    ca, cb, cg = (xp.cos(rad[..., i]) for i in range(3))
    sa, sb, sg = (xp.sin(rad[..., i]) for i in range(3))
    cc = cb * ca
    cs = cb * sa
    sc = sb * ca
    ss = sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return xp.stack([xp.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_euler(matrices: Array) -> Array:
    """RELION ZYZ Euler angles of rotation matrices (the inverse of :func:`euler_to_matrix`).

    Parameters
    ----------
    matrices : array of shape (..., 3, 3)
        Rotation matrices in the convention of :func:`euler_to_matrix`.

    Returns
    -------
    angles_deg : array of shape (..., 3)
        ``(rot, tilt, psi)`` in degrees with tilt in [0, 180] and rot, psi in (-180, 180].
        At tilt 0 or 180 only ``rot + psi`` (or ``psi - rot``) is defined; rot is then 0, as
        in RELION's ``Euler_matrix2angles``.
    """
    m = _float_array(matrices, "matrices", (3, 3))
    xp = array_module(m)
    abs_sin_tilt = xp.sqrt(m[..., 0, 2] ** 2 + m[..., 1, 2] ** 2)
    gimbal = abs_sin_tilt <= 16 * np.finfo(m.dtype).eps
    tilt = xp.arctan2(abs_sin_tilt, m[..., 2, 2])
    rot = xp.where(gimbal, 0.0, xp.arctan2(m[..., 2, 1], m[..., 2, 0]))
    psi_general = xp.arctan2(m[..., 1, 2], -m[..., 0, 2])
    # tilt 0: A = Rz(rot + psi); tilt 180: A = diag(-1, 1, -1) Rz(psi - rot)
    psi_gimbal = xp.where(
        m[..., 2, 2] > 0,
        xp.arctan2(-m[..., 1, 0], m[..., 0, 0]),
        xp.arctan2(m[..., 1, 0], -m[..., 0, 0]),
    )
    psi = xp.where(gimbal, psi_gimbal, psi_general)
    tilt = xp.where(gimbal, xp.where(m[..., 2, 2] > 0, 0.0, np.pi), tilt)
    out = xp.rad2deg(xp.stack([rot, tilt, psi], axis=-1)).astype(m.dtype, copy=False)
    # atan2 returns [-180, 180]; map -180 to 180 so that each view has one spelling
    return xp.where(out == -180.0, 180.0, out)


def _rodrigues(rotvec: Array) -> Array:
    """Right-handed rotation matrices ``R(v)`` of axis-angle vectors ``v`` (..., 3)."""
    xp = array_module(rotvec)
    theta = xp.sqrt(xp.sum(rotvec * rotvec, axis=-1))
    small = theta < np.finfo(rotvec.dtype).eps
    safe = xp.where(small, 1.0, theta)
    # sin(t)/t and (1 - cos t)/t^2, with their limits at t -> 0
    a = xp.where(small, 1.0, xp.sin(safe) / safe)[..., None, None]
    b = xp.where(small, 0.5, (1.0 - xp.cos(safe)) / (safe * safe))[..., None, None]
    x, y, z = rotvec[..., 0], rotvec[..., 1], rotvec[..., 2]
    zero = xp.zeros_like(x)
    k = xp.stack(
        [
            xp.stack([zero, -z, y], axis=-1),
            xp.stack([z, zero, -x], axis=-1),
            xp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )
    eye = xp.eye(3, dtype=rotvec.dtype)
    return eye + a * k + b * (k @ k)


def _rotvec_of(r: Array) -> Array:
    """Axis-angle vectors (angle in [0, pi]) of right-handed rotation matrices ``r``.

    Goes through the unit quaternion chosen by Shepperd's method (the largest of the four
    candidate components), which stays accurate at angles near 0 and pi.
    """
    xp = array_module(r)
    tr = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    # four candidate quaternions (w, x, y, z), each scaled by 4 times its pivot component
    cands = xp.stack(
        [
            xp.stack(
                [
                    1 + tr,
                    r[..., 2, 1] - r[..., 1, 2],
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 1, 0] - r[..., 0, 1],
                ],
                axis=-1,
            ),
            xp.stack(
                [
                    r[..., 2, 1] - r[..., 1, 2],
                    1 + 2 * r[..., 0, 0] - tr,
                    r[..., 0, 1] + r[..., 1, 0],
                    r[..., 0, 2] + r[..., 2, 0],
                ],
                axis=-1,
            ),
            xp.stack(
                [
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 0, 1] + r[..., 1, 0],
                    1 + 2 * r[..., 1, 1] - tr,
                    r[..., 1, 2] + r[..., 2, 1],
                ],
                axis=-1,
            ),
            xp.stack(
                [
                    r[..., 1, 0] - r[..., 0, 1],
                    r[..., 0, 2] + r[..., 2, 0],
                    r[..., 1, 2] + r[..., 2, 1],
                    1 + 2 * r[..., 2, 2] - tr,
                ],
                axis=-1,
            ),
        ],
        axis=-2,
    )
    pivots = xp.stack([tr, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], axis=-1)
    best = xp.argmax(pivots, axis=-1)
    q = xp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / xp.sqrt(xp.sum(q * q, axis=-1, keepdims=True))
    q = xp.where(q[..., :1] < 0, -q, q)  # w >= 0 gives the angle in [0, pi]
    sin_half = xp.sqrt(xp.sum(q[..., 1:] ** 2, axis=-1))
    angle = 2 * xp.arctan2(sin_half, q[..., 0])
    small = sin_half < np.finfo(r.dtype).eps
    # angle / sin(angle/2) -> 2 as the angle -> 0
    scale = xp.where(small, 2.0, angle / xp.where(small, 1.0, sin_half))
    return q[..., 1:] * scale[..., None]


def axis_angle_to_matrix(pose_rad: Array) -> Array:
    """Rotation matrices (RELION convention) of cryoSPARC ``alignments3D/pose`` vectors.

    Parameters
    ----------
    pose_rad : array of shape (..., 3)
        cryoSPARC axis-angle vectors: direction is the axis, length the angle in radians.

    Returns
    -------
    matrices : array of shape (..., 3, 3)
        ``A = R(pose).T``, the matrix :func:`euler_to_matrix` gives for the same view.
    """
    pose = _float_array(pose_rad, "pose_rad", (3,))
    return _rodrigues(-pose)


def matrix_to_axis_angle(matrices: Array) -> Array:
    """cryoSPARC ``alignments3D/pose`` vectors (radians) of rotation matrices.

    Parameters
    ----------
    matrices : array of shape (..., 3, 3)
        Rotation matrices in the convention of :func:`euler_to_matrix`.

    Returns
    -------
    pose_rad : array of shape (..., 3)
        Axis-angle vectors with length (the angle) in [0, pi] radians.
    """
    m = _float_array(matrices, "matrices", (3, 3))
    return _rotvec_of(array_module(m).swapaxes(m, -1, -2))


def euler_to_axis_angle(angles_deg: Array) -> Array:
    """cryoSPARC axis-angle poses (radians, (..., 3)) of RELION Euler angles (degrees, (..., 3))."""
    return matrix_to_axis_angle(euler_to_matrix(angles_deg))


def axis_angle_to_euler(pose_rad: Array) -> Array:
    """RELION Euler angles (degrees, (..., 3)) of cryoSPARC axis-angle poses (radians, (..., 3))."""
    return matrix_to_euler(axis_angle_to_matrix(pose_rad))
