"""RELION STAR import and export, checked against real RELION 3.0, 3.1 and 5 files, the
cryoSPARC .cs file describing the same particles, and the starfile package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from cryokube.processing.datasets import (
    Dataset,
    DatasetFileError,
    dataset_from_star,
    load_cs,
    read_star,
    save_cs,
    save_star,
)
from cryokube.processing.geometry import axis_angle_to_matrix, euler_to_matrix
from pandas.api.types import is_numeric_dtype

# Tolerances for STAR -> dataset -> STAR, where mapped values pass through float32.
DEFOCUS_ATOL_A = 2e-3  # float32 at 5e4 A has a 4e-3 A spacing
ANGLE_ATOL_DEG = 2e-5  # Euler angles through a float32 axis-angle vector
ORIGIN_ATOL_A = 1e-5

# (file under real/, style, rlnImageName zero padding) for the STAR round trips.
PARTICLE_FILES = [
    ("cryodrgn-testdata/empiar_10076_7.star", "relion30", 0),
    ("cryodrgn-testdata/FinalRefinement-OriginalParticles-PfCRT.star", "relion30", 6),
    ("cryodrgn-testdata/relion31.star", "relion31", 6),
    ("cryodrgn-testdata/relion31.6opticsgroups.star", "relion31", 0),
    ("cryodrgn-testdata/relion5.star", "relion31", 0),
    ("relion30-betagal-sppractice/extract/particles.star", "relion31", 6),
    ("relion30-betagal-sppractice/motioncorr/corrected_micrographs.star", "relion31", 6),
    ("relion30-betagal-sppractice/ctffind_job005_BAD/micrographs_ctf.star", "relion31", 6),
]


@pytest.fixture
def real(shared_data: Path) -> Path:
    return shared_data / "real"


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of the rotation between matrices ``a`` and ``b`` of shape (n, 3, 3), degrees."""
    cosine = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def assert_tables_match(original: pd.DataFrame, written: pd.DataFrame) -> None:
    """Same columns and rows; numbers within float32 tolerances in physical units."""
    assert set(original.columns) == set(written.columns)
    euler = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    for name in original.columns:
        before, after = original[name], written[name]
        if name in euler and set(euler) <= set(original.columns):
            continue  # compared as rotations below: Euler triples are not unique
        if not (is_numeric_dtype(before) and is_numeric_dtype(after)):
            assert before.astype(str).tolist() == after.astype(str).tolist(), name
            continue
        tolerance = {
            "rlnDefocusU": DEFOCUS_ATOL_A,
            "rlnDefocusV": DEFOCUS_ATOL_A,
            "rlnDefocusAngle": ANGLE_ATOL_DEG,
            "rlnAnglePsi": ANGLE_ATOL_DEG,
            "rlnOriginXAngst": ORIGIN_ATOL_A,
            "rlnOriginYAngst": ORIGIN_ATOL_A,
        }.get(name, 0.0)
        rtol = 0.0 if tolerance else 1e-7  # other mapped values: float32 relative precision
        np.testing.assert_allclose(after, before, atol=tolerance, rtol=rtol, err_msg=name)
    if set(euler) <= set(original.columns):
        turned = rotation_angle_deg(
            euler_to_matrix(original[euler].to_numpy(np.float64)),
            euler_to_matrix(written[euler].to_numpy(np.float64)),
        )
        assert turned.max() < ANGLE_ATOL_DEG


@pytest.mark.parametrize(("name", "style", "digits"), PARTICLE_FILES)
def test_star_round_trips(real: Path, tmp_path: Path, name: str, style: str, digits: int) -> None:
    """STAR -> dataset -> STAR keeps every column; dataset -> STAR -> dataset is bit-exact."""
    source = real / name
    dataset = dataset_from_star(source, seed=0)
    out = tmp_path / "out.star"
    save_star(dataset, out, style=style, image_index_digits=digits)  # type: ignore[arg-type]
    again = dataset_from_star(out, seed=0)
    assert again == dataset
    original, written = read_star(source), read_star(out)
    for block, table in original.items():
        assert isinstance(table, pd.DataFrame)
        assert_tables_match(table, written[block or "images"])  # type: ignore[arg-type]
    # starfile, an independent reader, reads our output as the same tables.
    theirs = starfile.read(out, always_dict=True)
    assert list(theirs) == list(written)
    assert len(theirs[list(theirs)[-1]]) == len(dataset)


def test_empiar_10076_star_and_cs_describe_the_same_particles(real: Path, tmp_path: Path) -> None:
    """README truth: DefocusU/V ~15300/14916 A, 5.28 deg = 0.0922 rad, 300 kV, Cs 2.7 mm,
    AC 0.07, 5 um / 38168 = 1.31 A/px; the .cs holds the same 7 particles."""
    star = dataset_from_star(real / "cryodrgn-testdata/empiar_10076_7.star")
    cs = load_cs(real / "cryodrgn-testdata/empiar_10076_7.cs")
    assert len(star) == len(cs) == 7
    np.testing.assert_allclose(star["ctf/df1_A"][0], 15301.1, atol=1e-3)
    np.testing.assert_allclose(star["ctf/df2_A"][0], 14916.4, atol=1e-3)
    np.testing.assert_allclose(np.degrees(cs["ctf/df_angle_rad"]), 5.28, atol=1e-5)
    np.testing.assert_allclose(cs["ctf/df_angle_rad"], 0.0922, atol=1e-4)
    np.testing.assert_allclose(star["blob/psize_A"], 5e4 / 38168, atol=1e-6)
    for field, atol in [
        ("ctf/df1_A", 1e-3),  # A
        ("ctf/df2_A", 1e-3),  # A
        ("ctf/df_angle_rad", np.radians(1e-5)),
        ("ctf/accel_kv", 0.0),
        ("ctf/cs_mm", 0.0),
        ("ctf/amp_contrast", 0.0),
        ("blob/psize_A", 1e-6),  # A
    ]:
        np.testing.assert_allclose(star[field], cs[field], atol=atol, rtol=0, err_msg=field)
    np.testing.assert_array_equal(star["blob/idx"], cs["blob/idx"])  # 1-based STAR, 0-based cs
    assert star.strings("blob/path") == cs.strings("blob/path")
    # .cs -> STAR -> dataset carries the same values back.
    save_star(cs, tmp_path / "from_cs.star", style="relion30", image_index_digits=0)
    back = dataset_from_star(tmp_path / "from_cs.star", seed=0)
    for field in ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "blob/psize_A", "blob/idx"):
        np.testing.assert_array_equal(back[field], cs[field], err_msg=field)
    text = (tmp_path / "from_cs.star").read_text()
    assert "1@empiar_10076_7.mrc" in text


def test_relion31_poses_shifts_and_optics(real: Path) -> None:
    """README truth: 2.806 A/px (original 1.403), 300 kV, Cs 0.01 mm, AC 0.1, refined poses."""
    particles = dataset_from_star(real / "cryodrgn-testdata/relion31.star")
    assert len(particles) == 5
    np.testing.assert_allclose(particles["blob/psize_A"], 2.806, atol=1e-6)
    np.testing.assert_allclose(particles["relion_optics/MicrographOriginalPixelSize"], 1.403)
    np.testing.assert_allclose(particles["ctf/accel_kv"], 300.0)
    np.testing.assert_allclose(particles["ctf/cs_mm"], 0.01, atol=1e-7)
    np.testing.assert_allclose(particles["ctf/amp_contrast"], 0.1, atol=1e-7)
    np.testing.assert_array_equal(particles["blob/shape"], 256)
    np.testing.assert_array_equal(particles["blob/idx"], np.arange(5))
    assert particles.strings("blob/path") == ["relion31.mrcs"] * 5
    # First particle: rot/tilt/psi -102.30296/82.318041/124.706463 deg, origin (0.019324,
    # -0.64686) A; the pose's matrix is RELION's matrix of those angles.
    truth = euler_to_matrix(np.array([[-102.30296, 82.318041, 124.706463]]))
    pose = axis_angle_to_matrix(particles["alignments3D/pose"][:1].astype(np.float64))
    assert rotation_angle_deg(truth, pose)[0] < ANGLE_ATOL_DEG
    np.testing.assert_allclose(
        particles["alignments3D/shift"][0] * 2.806, [0.019324, -0.64686], atol=1e-6
    )
    np.testing.assert_array_equal(particles["alignments3D/split"], [0, 0, 0, 0, 0])


def test_six_optics_groups_keep_aberrations_per_group(real: Path, tmp_path: Path) -> None:
    """README truth: 6 groups, 200 kV, 1.24-1.25 A/px, box 196, Zernike and MagMat columns."""
    source = real / "cryodrgn-testdata/relion31.6opticsgroups.star"
    particles = dataset_from_star(source)
    assert sorted(set(particles["ctf/exp_group_id"].tolist())) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(particles["ctf/accel_kv"], 200.0)
    assert set(np.round(particles["blob/psize_A"].astype(np.float64), 3).tolist()) == {1.24, 1.25}
    np.testing.assert_array_equal(particles["blob/shape"], 196)
    group_6 = particles.filter(**{"ctf/exp_group_id": 5})
    np.testing.assert_allclose(group_6["relion_optics/MagMat01"], -0.00887)
    np.testing.assert_allclose(group_6["relion_optics/BeamTiltX"], -1.28823)
    assert group_6.strings("relion_optics/OddZernike")[0].startswith("[2.87241841102,")
    save_star(particles, tmp_path / "out.star")
    optics = starfile.read(tmp_path / "out.star")["optics"]
    assert optics["rlnOpticsGroup"].tolist() == [1, 2, 3, 4, 5, 6]
    assert optics["rlnOpticsGroupName"].tolist()[:2] == ["opticsGroup5", "opticsGroup3"]


def test_relion5_and_pfcrt_values(real: Path) -> None:
    relion5 = dataset_from_star(real / "cryodrgn-testdata/relion5.star")
    np.testing.assert_allclose(relion5["ctf/accel_kv"], 100.0)
    np.testing.assert_allclose(relion5["blob/psize_A"], 0.89, atol=1e-6)
    np.testing.assert_array_equal(relion5["blob/shape"], 448)
    assert "relion_optics/CtfDataAreCtfPremultiplied" in relion5
    assert "# version 50001" in (real / "cryodrgn-testdata/relion5.star").read_text()
    pfcrt = dataset_from_star(
        real / "cryodrgn-testdata/FinalRefinement-OriginalParticles-PfCRT.star"
    )
    np.testing.assert_allclose(pfcrt["blob/psize_A"], 1.035, atol=1e-6)  # 3.0: detector/mag
    table = read_star(real / "cryodrgn-testdata/FinalRefinement-OriginalParticles-PfCRT.star")
    images = table["images"]
    assert isinstance(images, pd.DataFrame)
    np.testing.assert_allclose(pfcrt["alignments3D/shift"][:, 0], images["rlnOriginX"], atol=1e-5)


def test_betagal_star_files(real: Path) -> None:
    """RELION 5 run on the RELION 3.0 beta-gal tutorial: 2374 particles of 64 px at 3.54 A/px,
    200 kV, Cs 1.4 mm; the CTFFIND job005 defocus (31.5k-50k A) is the README's bad fit."""
    folder = real / "relion30-betagal-sppractice"
    particles = dataset_from_star(folder / "extract/particles.star")
    assert len(particles) == 2374
    np.testing.assert_allclose(particles["blob/psize_A"], 3.54, atol=1e-6)
    np.testing.assert_array_equal(particles["blob/shape"], 64)
    np.testing.assert_allclose(particles["ctf/cs_mm"], 1.4, atol=1e-6)
    assert len(set(particles.strings("blob/path"))) == 10
    assert "relion/ClassNumber" in particles  # 0 means "unassigned" here: kept, not shifted
    bad = dataset_from_star(folder / "ctffind_job005_BAD/micrographs_ctf.star")
    assert len(bad) == 24
    assert bad["ctf/df1_A"].min() > 31000
    assert bad["ctf/df1_A"].max() < 50500
    micrographs = dataset_from_star(folder / "motioncorr/corrected_micrographs.star")
    np.testing.assert_allclose(micrographs["micrograph_blob/psize_A"], 0.885, atol=1e-6)
    assert micrographs["relion/AccumMotionTotal"][0] == 16.420846  # micrograph 21, in A
    picks = sorted((folder / "autopick").glob("*_autopick.star"))
    assert len(picks) == 10
    counts = [len(dataset_from_star(path)) for path in picks]
    assert sum(counts) == 2374  # every LoG pick was extracted
    for path in sorted((folder / "motioncorr").glob("20170629_*_frameImage.star")):
        motion = read_star(path)
        general, shifts = motion["general"], motion["global_shift"]
        assert isinstance(general, dict)
        assert isinstance(shifts, pd.DataFrame)
        assert (general["rlnImageSizeX"], general["rlnImageSizeY"]) == (3710, 3838)
        assert len(shifts) == general["rlnImageSizeZ"] == 24
    mtf = read_star(folder / "mtf_k2_200kV.star")["mtf_k2_200kv"]
    assert isinstance(mtf, pd.DataFrame)
    assert mtf["rlnMtfValue"].iloc[0] == 1.0


def test_starfile_testdata(real: Path) -> None:
    folder = real / "starfile-testdata"
    post = read_star(folder / "postprocess.star")
    general, fsc = post["general"], post["fsc"]
    assert isinstance(general, dict)
    assert isinstance(fsc, pd.DataFrame)
    assert general["rlnFinalResolution"] == pytest.approx(16.363636)
    assert general["rlnRandomiseFrom"] == pytest.approx(32.727273)
    shells = fsc.set_index("rlnSpectralIndex")["rlnFourierShellCorrelationCorrected"]
    assert shells[44] == pytest.approx(0.160329)  # the last shell at or above 0.143
    assert shells[45] == pytest.approx(0.135687)
    np.testing.assert_allclose(
        fsc["rlnAngstromResolution"][1:], 96 * 7.5 / fsc.index[1:], rtol=1e-5
    )
    pipeline = read_star(folder / "default_pipeline.star")
    assert pipeline["pipeline_general"] == {"rlnPipeLineJobCounter": 32}
    style = read_star(folder / "rln3.1_data_style.star")
    assert [len(block) for block in style.values()] == [1, 2, 2]
    assert "rlnCoordinateZ" in style["block_2"]
    for path in sorted((folder / "relion_tutorial").glob("*.star")):
        blocks = read_star(path)
        assert next(iter(blocks)).endswith("_general")
    sampling = read_star(folder / "relion_tutorial/run_it025_sampling_3D.star")
    assert len(sampling["sampling_directions"]) == 12 * 4**2  # HEALPix order 2


def test_we_read_what_starfile_writes(tmp_path: Path) -> None:
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
            "rlnImagePixelSize": [1.5],
            "rlnImageSize": [128],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnImageName": ["000002@a.mrcs"],
            "rlnOpticsGroup": [1],
            "rlnDefocusU": [10000.0],
            "rlnDefocusV": [9000.0],
            "rlnDefocusAngle": [90.0],
            "rlnAngleRot": [0.0],
            "rlnAngleTilt": [90.0],
            "rlnAnglePsi": [0.0],
            "rlnOriginXAngst": [3.0],
            "rlnOriginYAngst": [-1.5],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "in.star")
    dataset = dataset_from_star(tmp_path / "in.star")
    assert dataset["blob/idx"].tolist() == [1]
    np.testing.assert_allclose(dataset["ctf/df_angle_rad"], np.pi / 2, atol=1e-7)
    np.testing.assert_allclose(dataset["alignments3D/shift"], [[2.0, -1.0]], atol=1e-7)
    # tilt 90 deg about y: cryoSPARC's pose is a rotation by 90 deg about the y axis.
    np.testing.assert_allclose(np.abs(dataset["alignments3D/pose"]), [[0, np.pi / 2, 0]], atol=1e-6)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("data_\nloop_\n_rlnImageName\nfoo.mrcs\n", "rlnImageName must be 'n@path'"),
        ("data_\nloop_\n_rlnImageName\n0@foo.mrcs\n", "index must be >= 1"),
        (
            (
                "data_optics\nloop_\n_rlnOpticsGroup\n0\n\ndata_particles\nloop_\n"
                "_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 0\n"
            ),
            "rlnOpticsGroup must be >= 1",
        ),
        (
            (
                "data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n1 300\n\n"
                "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 2\n"
            ),
            "optics groups \\[2\\] absent",
        ),
        ("data_general\n_rlnFinalResolution 3.2\n", "no particles/micrographs/movies table"),
        (
            "data_\nloop_\n_rlnImageName\n_rlnOriginXAngst\n_rlnOriginYAngst\n1@a.mrcs 1 1\n",
            "rlnOriginXAngst needs rlnImagePixelSize",
        ),
    ],
)
def test_bad_star_files_raise_an_error_naming_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "bad.star"
    path.write_text(text)
    with pytest.raises(DatasetFileError, match=reason) as caught:
        dataset_from_star(path)
    assert str(path) in str(caught.value)


def test_export_refuses_inconsistent_optics_and_missing_pixel_size(tmp_path: Path) -> None:
    mixed = Dataset.from_columns(
        {
            "blob/path": ["a.mrcs"] * 2,
            "blob/idx": [0, 1],
            "ctf/exp_group_id": [0, 0],
            "ctf/accel_kv": np.array([300, 200], dtype=np.float32),
        }
    )
    with pytest.raises(ValueError, match="rlnVoltage"):
        save_star(mixed, tmp_path / "mixed.star")
    unscaled = Dataset.from_columns({"alignments3D/shift": np.zeros((1, 2), np.float32)})
    with pytest.raises(ValueError, match="psize_A"):
        save_star(unscaled, tmp_path / "unscaled.star")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="style"):
        save_star(unscaled, tmp_path / "x.star", style="relion4")  # type: ignore[arg-type]


def test_cs_to_star_to_dataset_keeps_3d_poses(real: Path, tmp_path: Path) -> None:
    """2019 refined particles: poses equal as rotations, shifts and CTF exactly."""
    particles = load_cs(real / "cryodrgn-testdata/cryosparc_P12_J24_001_particles.cs")
    save_star(particles, tmp_path / "p.star")
    back = dataset_from_star(tmp_path / "p.star")
    turned = rotation_angle_deg(
        axis_angle_to_matrix(particles["alignments3D/pose"].astype(np.float64)),
        axis_angle_to_matrix(back["alignments3D/pose"].astype(np.float64)),
    )
    assert turned.max() < ANGLE_ATOL_DEG
    for field in ("alignments3D/shift", "alignments3D/split", "ctf/df1_A", "ctf/df_angle_rad"):
        np.testing.assert_array_equal(back[field], particles[field], err_msg=field)
    save_cs(back, tmp_path / "back.cs")
    assert len(load_cs(tmp_path / "back.cs")) == 2019


def test_coordinates_become_fractions_when_the_micrograph_size_is_known(
    real: Path, tmp_path: Path
) -> None:
    """beta-gal picks are in the 3710 x 3838 px micrograph frame (README)."""
    source = real / "relion30-betagal-sppractice/extract/particles.star"
    particles = dataset_from_star(source, micrograph_shape_px=(3838, 3710))
    table = read_star(source)["particles"]
    assert isinstance(table, pd.DataFrame)
    assert "relion/CoordinateX" not in particles
    np.testing.assert_allclose(
        particles["location/center_x_frac"] * 3710.0, table["rlnCoordinateX"], atol=1e-3
    )  # px
    assert particles["location/center_y_frac"].max() < 1.0
    save_star(particles, tmp_path / "out.star")
    again = dataset_from_star(tmp_path / "out.star", micrograph_shape_px=(3838, 3710))
    np.testing.assert_array_equal(
        again["location/center_x_frac"], particles["location/center_x_frac"]
    )
    with pytest.raises(ValueError, match="micrograph_shape_px"):
        dataset_from_star(source, micrograph_shape_px=(0, 3710))


def test_uids_are_reproducible_with_a_seed(real: Path) -> None:
    source = real / "cryodrgn-testdata/relion31.star"
    first, second = dataset_from_star(source, seed=7), dataset_from_star(source, seed=7)
    np.testing.assert_array_equal(first.uid, second.uid)
    assert not np.array_equal(first.uid, dataset_from_star(source, seed=8).uid)
    by_file = first.filter(**{"blob/path": "relion31.mrcs", "ctf/exp_group_id": 0})
    assert len(by_file) == 5


def test_cs_to_star_to_dataset_keeps_2d_alignments(real: Path, tmp_path: Path) -> None:
    """22 particles from a 2D classification: psi, shifts (px) and classes come back."""
    particles = load_cs(real / "cryodrgn-testdata/cryosparc_J2_particles_exported.cs")
    save_star(particles, tmp_path / "p.star")
    back = dataset_from_star(tmp_path / "p.star")
    np.testing.assert_array_equal(back["alignments2D/pose"], particles["alignments2D/pose"])
    np.testing.assert_array_equal(back["alignments2D/shift"], particles["alignments2D/shift"])
    np.testing.assert_array_equal(back["alignments2D/class"], particles["alignments2D/class"])
    table = read_star(tmp_path / "p.star")["particles"]
    assert isinstance(table, pd.DataFrame)
    np.testing.assert_allclose(  # 0 and 12 px at 1.345 A/px for the first particle
        table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy()[0], [0.0, 12 * 1.345], atol=1e-5
    )


def test_movie_lists_round_trip(tmp_path: Path) -> None:
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [200.0],
            "rlnSphericalAberration": [1.4],
            "rlnAmplitudeContrast": [0.1],
            "rlnMicrographOriginalPixelSize": [0.885],
        }
    )
    movies = pd.DataFrame(
        {"rlnMicrographMovieName": ["Movies/a.tiff", "Movies/b.tiff"], "rlnOpticsGroup": [1, 1]}
    )
    starfile.write({"optics": optics, "movies": movies}, tmp_path / "movies.star")
    dataset = dataset_from_star(tmp_path / "movies.star")
    assert dataset.strings("movie_blob/path") == ["Movies/a.tiff", "Movies/b.tiff"]
    save_star(dataset, tmp_path / "again.star")
    written = read_star(tmp_path / "again.star")
    assert list(written) == ["optics", "movies"]
    assert_tables_match(optics, written["optics"])  # type: ignore[arg-type]
    assert_tables_match(movies, written["movies"])  # type: ignore[arg-type]
