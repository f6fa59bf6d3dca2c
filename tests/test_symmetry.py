"""Point groups: orders, closure, proper rotations and the stated axis settings."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing.algorithms.symmetry import axis_rotation, expand_poses, symmetry_group

GOLDEN = (1 + 5**0.5) / 2


def _contains(group: np.ndarray, matrix: np.ndarray) -> bool:
    return bool(np.any(np.all(np.abs(group - matrix) < 1e-9, axis=(1, 2))))


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("C1", 1),
        ("C2", 2),
        ("c7", 7),
        ("D1", 2),
        ("D2", 4),
        ("D6", 12),
        ("T", 12),
        ("O", 24),
        ("I", 60),
    ],
)
def test_groups_are_closed_sets_of_proper_rotations(name: str, order: int) -> None:
    group = symmetry_group(name)
    assert group.shape == (order, 3, 3)
    np.testing.assert_allclose(group[0], np.eye(3))
    np.testing.assert_allclose(
        np.einsum("gji,gjk->gik", group, group), np.broadcast_to(np.eye(3), group.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(group), 1.0, atol=1e-12)
    for a in group:
        assert _contains(group, a.T)
        for b in group[:: max(1, order // 7)]:
            assert _contains(group, a @ b)


@pytest.mark.parametrize(
    ("name", "axis", "angle_deg"),
    [
        ("C4", (0, 0, 1), 90),
        ("D3", (1, 0, 0), 180),
        ("D3", (0, 0, 1), 120),
        ("T", (1, 0, 0), 180),
        ("T", (1, -1, 1), 120),
        ("O", (0, 1, 0), 90),
        ("O", (1, 1, 0), 180),
        ("I", (0, 1, GOLDEN), 72),
        ("I", (0, -1, GOLDEN), 72),
        ("I", (0, 0, 1), 180),
        ("I", (1, 1, 1), 120),
    ],
)
def test_groups_have_the_documented_axes(
    name: str, axis: tuple[float, ...], angle_deg: float
) -> None:
    assert _contains(symmetry_group(name), axis_rotation(axis, angle_deg))


def test_icosahedral_5fold_is_not_on_z() -> None:
    assert not _contains(symmetry_group("I"), axis_rotation((0, 0, 1), 72))


def test_bad_names_are_rejected() -> None:
    for bad in ("C0", "X3", "D", "Ih"):
        with pytest.raises(ValueError, match="name"):
            symmetry_group(bad)
    with pytest.raises(TypeError, match="name"):
        symmetry_group(4)  # type: ignore[arg-type]


def test_expand_poses_shape_and_equivalence() -> None:
    rng = np.random.default_rng(0)
    poses = np.stack([axis_rotation(rng.standard_normal(3), rng.uniform(0, 360)) for _ in range(5)])
    group = symmetry_group("D2")
    expanded = expand_poses(poses.astype(np.float32), group)
    assert expanded.shape == (5, 4, 3, 3)
    assert expanded.dtype == np.float32
    np.testing.assert_allclose(expanded[:, 0], poses, atol=1e-6)
    np.testing.assert_allclose(expanded[2, 3], poses[2] @ group[3].T, atol=1e-6)
    with pytest.raises(ValueError, match="group"):
        expand_poses(poses, np.eye(3))
