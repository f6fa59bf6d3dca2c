"""The columnar Dataset and cryoSPARC .cs files, checked against real cryoSPARC output and
cryosparc-tools (an independent reader and writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryokube.processing.datasets import (
    Dataset,
    DatasetFileError,
    concatenate,
    load_cs,
    random_uids,
    save_cs,
)
from cryokube.processing.geometry import axis_angle_to_euler
from cryosparc.dataset import CSDAT_FORMAT
from cryosparc.dataset import Dataset as CsToolsDataset

CS_FILES = {
    "cryodrgn-testdata/cryosparc_P12_J24_001_particles.cs": (2019, 34),
    "cryodrgn-testdata/cryosparc_J2_particles_exported.cs": (22, 42),
    "cryodrgn-testdata/empiar_10076_7.cs": (7, 24),
    "cryosparc-tools-testdata/4k_dataset.cs": (0, 106),
}


@pytest.fixture
def real(shared_data: Path) -> Path:
    return shared_data / "real"


def small_dataset(n: int = 5, *, seed: int = 0, path: str = "J1/extract/a.mrc") -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_columns(
        {
            "blob/path": [path] * n,
            "blob/idx": np.arange(n, dtype=np.uint32),
            "blob/psize_A": np.full(n, 1.31, dtype=np.float32),
            "ctf/df1_A": rng.uniform(8000, 20000, n).astype(np.float32),
            "alignments3D/pose": rng.normal(size=(n, 3)).astype(np.float32),
            "alignments3D/shift": rng.normal(size=(n, 2)).astype(np.float32),
        },
        seed=seed,
    )


@pytest.mark.parametrize(("name", "shape"), CS_FILES.items())
def test_every_real_cs_file_reads_with_its_schema_and_round_trips_exactly(
    real: Path, tmp_path: Path, name: str, shape: tuple[int, int]
) -> None:
    source = real / name
    dataset = load_cs(source)
    assert (len(dataset), len(dataset.fields)) == shape
    raw = np.load(source, allow_pickle=False)
    assert dataset.data.dtype == raw.dtype  # dtypes kept, including sub-arrays and S widths
    save_cs(dataset, tmp_path / "out.cs")
    written = np.load(tmp_path / "out.cs", allow_pickle=False)
    assert written.dtype == raw.dtype
    assert written.tobytes() == raw.tobytes()  # every value, bit for bit
    assert load_cs(tmp_path / "out.cs", mmap=True) == dataset


def test_cryosparc_tools_reads_what_we_write_and_we_read_what_it_writes(
    real: Path, tmp_path: Path
) -> None:
    ours = load_cs(real / "cryodrgn-testdata/cryosparc_J2_particles_exported.cs")
    save_cs(ours, tmp_path / "ours.cs")
    theirs = CsToolsDataset.load(tmp_path / "ours.cs")
    assert len(theirs) == 22
    assert set(theirs.fields()) == set(ours.fields)
    np.testing.assert_array_equal(theirs["uid"], ours.uid)
    np.testing.assert_array_equal(theirs["alignments2D/shift"], ours["alignments2D/shift"])
    assert list(theirs["blob/path"]) == ours.strings("blob/path")
    # cryosparc-tools holds strings as Python objects in memory; both of its on-disk formats
    # (numpy .npy and the compressed CSDAT stream) come back unchanged.
    theirs.save(tmp_path / "theirs.cs")
    assert load_cs(tmp_path / "theirs.cs") == ours
    theirs.save(tmp_path / "theirs_csdat.cs", format=CSDAT_FORMAT)
    assert load_cs(tmp_path / "theirs_csdat.cs") == ours


def test_empty_schema_file_survives_cryosparc_tools(real: Path, tmp_path: Path) -> None:
    empty = load_cs(real / "cryosparc-tools-testdata/4k_dataset.cs")
    assert empty.prefixes()[:3] == ("alignments3D", "quality_stats", "alignments2D")
    assert empty["alignments_class_2/pose"].shape == (0, 3)
    save_cs(empty, tmp_path / "empty.cs")
    assert len(CsToolsDataset.load(tmp_path / "empty.cs").fields()) == 106


def test_3d_refinement_cs_values_named_in_readme(real: Path) -> None:
    """DNA tetrahedron, DE-20, 200 kV, 2.95 A/px, box 180, CTFFIND4, two half sets."""
    particles = load_cs(real / "cryodrgn-testdata/cryosparc_P12_J24_001_particles.cs")
    np.testing.assert_allclose(particles["ctf/accel_kv"], 200.0)
    np.testing.assert_allclose(particles["blob/psize_A"], 2.95, atol=1e-5)
    np.testing.assert_array_equal(particles["blob/shape"], 180)
    assert set(particles.strings("ctf/type")) == {"ctffind4"}
    assert set(np.unique(particles["alignments3D/split"])) == {0, 1}
    half = particles.filter(**{"alignments3D/split": 0})
    assert 900 < len(half) < 1120  # two roughly equal half sets
    # cryoSPARC stores rotation vectors of length up to 3.75 rad (> pi): Euler angles still
    # come out in RELION's ranges.
    euler_deg = axis_angle_to_euler(particles["alignments3D/pose"].astype(np.float64))
    assert np.all(np.abs(euler_deg[:, [0, 2]]) <= 180.0)
    assert np.all((euler_deg[:, 1] >= 0.0) & (euler_deg[:, 1] <= 180.0))


def test_2d_and_prefix_selection(real: Path) -> None:
    """22 particles imported from 18jam15b at 1.345 A/px with alignments2D."""
    path = real / "cryodrgn-testdata/cryosparc_J2_particles_exported.cs"
    only = load_cs(path, prefixes=["alignments2D"], fields=["blob/psize_A"])
    assert only.fields[0] == "uid"
    assert {name.split("/")[0] for name in only.fields[1:]} == {"alignments2D", "blob"}
    np.testing.assert_allclose(only["blob/psize_A"], 1.345, atol=1e-6)
    assert only["alignments2D/class"].max() < 50


def test_from_columns_join_and_concatenate() -> None:
    particles = small_dataset(6, seed=1)
    assert particles.uid.dtype == np.uint64
    assert particles["blob/path"].dtype == np.dtype("S16")
    classes = Dataset.from_columns(
        {"alignments2D/class": np.arange(3, dtype=np.uint32)}, uid=particles.uid[[4, 1, 2]]
    )
    joined = particles.join(classes)
    np.testing.assert_array_equal(joined.uid, particles.uid[[1, 2, 4]])  # left order kept
    np.testing.assert_array_equal(joined["alignments2D/class"], [1, 2, 0])
    np.testing.assert_array_equal(joined["ctf/df1_A"], particles["ctf/df1_A"][[1, 2, 4]])

    shard = small_dataset(2, seed=2, path="J1/extract/longer_name.mrc")
    merged = concatenate([particles, shard])
    assert len(merged) == 8
    assert merged.strings("blob/path")[-1] == "J1/extract/longer_name.mrc"
    first = merged.take(np.arange(6))
    assert all(np.array_equal(first[name], particles[name]) for name in particles.fields)
    with pytest.raises(ValueError, match="share uids"):
        concatenate([particles, particles])
    with pytest.raises(ValueError, match="different fields"):
        concatenate([particles, particles.select_fields(["ctf/df1_A"])])
    with pytest.raises(ValueError, match="alignments3D/pose"):
        concatenate([particles, shard.with_columns({"alignments3D/pose": np.zeros((2, 4))})])


def test_bad_datasets_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Dataset.from_columns({"blob/idx": [0, 1]}, uid=[7, 7])
    with pytest.raises(ValueError, match=r"'ctf/df2_A' has 1 rows, expected 2"):
        Dataset.from_columns({"ctf/df1_A": [1.0, 2.0], "ctf/df2_A": [1.0]})
    with pytest.raises(ValueError, match="non-negative"):
        Dataset.from_columns({"blob/idx": [0]}, uid=[-1])
    with pytest.raises(KeyError, match="ctf/df9_A"):
        small_dataset()["ctf/df9_A"]
    with pytest.raises(ValueError, match="keep must be a boolean"):
        small_dataset().mask([1, 0, 1, 0, 1])
    assert len(set(random_uids(1000, seed=3).tolist())) == 1000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a .cs file"),
        (b"PK\x03\x04 a zip", "not a .cs file"),
        ("truncated", "not a readable .cs array"),
        ("no uid", "no 'uid' field"),
        ("pickled", "not a readable .cs array"),
    ],
)
def test_bad_cs_files_raise_an_error_naming_the_file(
    tmp_path: Path, content: bytes | str, reason: str
) -> None:
    path = tmp_path / "bad.cs"
    if content == "truncated":
        save_cs(small_dataset(50), path)
        path.write_bytes(path.read_bytes()[:-100])
    elif content == "no uid":
        np.save(path.with_suffix(".npy"), np.zeros(3, dtype=[("ctf/df1_A", "f4")]))
        path.with_suffix(".npy").rename(path)
    elif content == "pickled":
        with path.open("wb") as stream:
            np.save(stream, np.array([("a",)], dtype=[("uid", "O")]), allow_pickle=True)
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(DatasetFileError, match=reason) as caught:
        load_cs(path)
    assert str(path) in str(caught.value)


def test_writes_are_atomic(tmp_path: Path) -> None:
    target = tmp_path / "particles.cs"
    save_cs(small_dataset(3), target)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        save_cs("not a dataset", target)  # type: ignore[arg-type]
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["particles.cs"]  # no temporaries
    assert target.stat().st_mode & 0o777 == 0o644  # readable by the other pods of the project


def test_unicode_string_columns_read(tmp_path: Path) -> None:
    """Some writers store strings as numpy unicode ('U') instead of bytes ('S')."""
    rows = np.zeros(2, dtype=[("uid", "<u8"), ("blob/path", "<U12")])
    rows["uid"] = [1, 2]
    rows["blob/path"] = ["a.mrcs", "b/ü.mrcs"]
    np.save(tmp_path / "u.npy", rows)
    (tmp_path / "u.npy").rename(tmp_path / "u.cs")
    assert load_cs(tmp_path / "u.cs").strings("blob/path") == ["a.mrcs", "b/ü.mrcs"]
    assert Dataset.from_columns({"blob/path": ["b/ü.mrcs"]}).strings("blob/path") == ["b/ü.mrcs"]
