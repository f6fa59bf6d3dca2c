"""Rotation geometry: RELION Euler angles <-> matrices <-> cryoSPARC axis-angle, exact both ways."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing import geometry as geo
from scipy.spatial.transform import Rotation

ATOL = {np.float64: 1e-12, np.float32: 2e-6}


def _random_euler(n: int, seed: int) -> np.ndarray:
    """Random angles (deg) in RELION's canonical ranges, plus tilt 0 and 180 cases."""
    rng = np.random.default_rng(seed)
    angles = np.stack(
        [rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)], axis=-1
    )
    angles[:4, 1] = 0.0
    angles[4:8, 1] = 180.0
    return angles


def _cistem_matrix(phi: float, theta: float, psi: float) -> np.ndarray:
    """cisTEM's ZYZ matrix written out element by element (cryojax's test_agree_with_cistem)."""
    cph, sph = np.cos(np.deg2rad(phi)), np.sin(np.deg2rad(phi))
    cth, sth = np.cos(np.deg2rad(theta)), np.sin(np.deg2rad(theta))
    cps, sps = np.cos(np.deg2rad(psi)), np.sin(np.deg2rad(psi))
    return np.array(
        [
            [cph * cth * cps - sph * sps, sph * cth * cps + cph * sps, -sth * cps],
            [-cph * cth * sps - sph * cps, -sph * cth * sps + cph * cps, sth * sps],
            [sth * cph, sth * sph, cth],
        ]
    )


@pytest.mark.parametrize(
    "angles", [(10.0, 90.0, 170.0), (10.0, 80.0, -20.0), (-1.2, 90.5, 67.0), (-50.0, 62.0, -21.0)]
)
def test_euler_matrix_equals_cistem_zyz(angles: tuple[float, float, float]) -> None:
    np.testing.assert_allclose(
        geo.euler_to_matrix(np.array(angles)), _cistem_matrix(*angles), atol=1e-14
    )


def test_euler_matrix_is_transpose_of_intrinsic_zyz() -> None:
    """A = Rz(psi) Ry(tilt) Rz(rot) in the passive sense: scipy's intrinsic ZYZ, transposed."""
    angles = _random_euler(200, seed=1)
    expected = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().swapaxes(-1, -2)
    np.testing.assert_allclose(geo.euler_to_matrix(angles), expected, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_euler_round_trip_exact(dtype: type) -> None:
    angles = _random_euler(500, seed=2).astype(dtype)
    matrices = geo.euler_to_matrix(angles)
    assert matrices.dtype == dtype
    back = geo.matrix_to_euler(matrices)
    assert back.dtype == dtype
    np.testing.assert_allclose(geo.euler_to_matrix(back), matrices, atol=ATOL[dtype])
    # away from the gimbal lock the angles themselves come back (degrees)
    angle_atol = 1e-9 if dtype == np.float64 else 0.05
    np.testing.assert_allclose(back[8:], angles[8:], atol=angle_atol)
    # at tilt 0 / 180 RELION's canonical form has rot = 0 and keeps the in-plane angle
    np.testing.assert_array_equal(back[:8, 0], 0.0)
    np.testing.assert_allclose(back[:8, 1], angles[:8, 1], atol=angle_atol)
    np.testing.assert_allclose(
        np.cos(np.deg2rad(back[:4, 2])),
        np.cos(np.deg2rad(angles[:4, 0] + angles[:4, 2])),
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_axis_angle_round_trips_exact(dtype: type) -> None:
    angles = _random_euler(500, seed=3).astype(dtype)
    matrices = geo.euler_to_matrix(angles)
    pose = geo.euler_to_axis_angle(angles)
    assert pose.shape == (500, 3)
    assert pose.dtype == dtype
    np.testing.assert_allclose(geo.axis_angle_to_matrix(pose), matrices, atol=ATOL[dtype])
    np.testing.assert_allclose(
        geo.euler_to_matrix(geo.axis_angle_to_euler(pose)), matrices, atol=ATOL[dtype]
    )
    norms = np.linalg.norm(pose, axis=-1)
    assert np.all(norms <= np.pi + 1e-6)


def test_axis_angle_is_transposed_rodrigues() -> None:
    """cryoSPARC pose p gives A = R(p).T (pyem csparc2star), R = scipy's from_rotvec."""
    rng = np.random.default_rng(4)
    pose = rng.normal(size=(100, 3))
    pose *= (rng.uniform(0, np.pi, 100) / np.linalg.norm(pose, axis=-1))[:, None]
    expected = Rotation.from_rotvec(pose).as_matrix().swapaxes(-1, -2)
    np.testing.assert_allclose(geo.axis_angle_to_matrix(pose), expected, atol=1e-14)
    np.testing.assert_allclose(geo.matrix_to_axis_angle(expected), pose, atol=1e-12)


@pytest.mark.parametrize(
    "pose",
    [
        [0.0, 0.0, 0.0],
        [1e-12, 0.0, 0.0],
        [np.pi, 0.0, 0.0],
        [0.0, 0.0, np.pi],
        [np.pi / np.sqrt(2), np.pi / np.sqrt(2), 0.0],
    ],
    ids=["identity", "tiny", "pi-x", "pi-z", "pi-xy"],
)
def test_axis_angle_edge_cases(pose: list[float]) -> None:
    matrix = geo.axis_angle_to_matrix(np.array(pose))
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-14)
    back = geo.matrix_to_axis_angle(matrix)
    np.testing.assert_allclose(geo.axis_angle_to_matrix(back), matrix, atol=1e-12)


def test_batched_shapes() -> None:
    angles = _random_euler(24, seed=5).reshape(2, 3, 4, 3)
    assert geo.euler_to_matrix(angles).shape == (2, 3, 4, 3, 3)
    assert geo.matrix_to_euler(geo.euler_to_matrix(angles)).shape == (2, 3, 4, 3)
    assert geo.euler_to_axis_angle(angles).shape == (2, 3, 4, 3)


def test_bad_input_names_argument() -> None:
    with pytest.raises(ValueError, match="angles_deg"):
        geo.euler_to_matrix(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="matrices"):
        geo.matrix_to_euler(np.zeros((5, 3)))
    with pytest.raises(TypeError, match="pose_rad"):
        geo.axis_angle_to_matrix(np.array(["a", "b", "c"]))
