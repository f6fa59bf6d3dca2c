"""Pre-processing jobs run by the real worker on simulated movies, checked against the truth.

The chain import_movies -> motion_correction -> ctf_estimation -> blob_picker ->
extract_particles runs once per module, each job as its own ``cryokube-worker run`` process, on
three small movies (384 x 384 px, 10 frames, 2 A/px, one camera's gain and hot pixels)
simulated from micrographs with known particle positions, defocus and drift; each test then
checks one job's output in physical units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryokube.processing.algorithms.picking import templates_from_volume
from cryokube.processing.backend import gpu_available
from cryokube.processing.datasets import Dataset, concatenate, load_cs, save_cs
from cryokube.processing.geometry import euler_to_matrix
from cryokube.processing.io.mrc import read_mrc, write_mrc
from cryokube.processing.jobs import DataKind
from cryokube.processing.jobs._picking import centres_px
from cryokube.processing.simulate import (
    MicrographTruth,
    MovieTruth,
    phantom_volume,
    save_movie,
    simulate_micrograph,
    simulate_movie,
)
from cryokube.processing.worker.manifest import GroupEntry, JobManifest

pytestmark = pytest.mark.slow

WORKER = str(Path(sys.executable).with_name("cryokube-worker"))
PIXEL_A = 2.0
SHAPE = (384, 384)
BOX_PX = 40
N_MOVIES = 3
N_FRAMES = 10
DEFOCI_A = ((12000.0, 11200.0), (16000.0, 15400.0), (20000.0, 19000.0))
ASTIG_DEG = 30.0
DRIFT_PX = 6.0
MOTION = {"res_max_align": 6.0}
CTF = {"res_min_align": 30.0, "res_max_align": 6.0, "box_size_pix": 128, "df_search_min": 5000.0}
BLOB = {"diameter_min_A": 50.0, "diameter_max_A": 80.0, "min_score": 4.0}
EXTRACT = {"box_size_pix": 48, "bin_size_pix": 32}


@dataclass
class Project:
    root: Path
    micrographs: list[MicrographTruth]
    movies: list[MovieTruth]
    volume: np.ndarray


def run_worker(
    root: Path, job: str, job_type: str, params: dict[str, Any], *inputs: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cryokube-worker run`` as the operator's pods do (environment only).

    ``inputs`` are ``"job/output"`` references.
    """
    refs = [dict(zip(("job", "output"), ref.split("/"), strict=True)) for ref in inputs]
    full_env = {
        **os.environ,
        "CRYOKUBE_PROJECT": "sim",
        "CRYOKUBE_JOB": job,
        "CRYOKUBE_JOB_UID": f"uid-{job}",
        "CRYOKUBE_JOB_TYPE": job_type,
        "CRYOKUBE_PARAMS": json.dumps(params),
        "CRYOKUBE_INPUTS": json.dumps(refs),
        "CRYOKUBE_STORAGE_ROOT": str(root),
        "CRYOKUBE_DEVICE": "cpu",
        **env,
    }
    return subprocess.run(
        [WORKER, "run"], env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


def spool(root: Path, job: str, shard: int = 0) -> list[dict[str, Any]]:
    """The reports a job's worker spooled for the metadata service, in order."""
    path = root / job / ".cryokube" / f"reports-{shard}" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_ok(
    root: Path, job: str, job_type: str, params: dict[str, Any], *inputs: str
) -> dict[str, Any]:
    """Run a job (one shard) that must succeed and return its manifest."""
    result = run_worker(root, job, job_type, params, *inputs)
    errors = [e["body"] for e in spool(root, job) if e["body"].get("level") == "error"]
    assert result.returncode == 0, f"{result.stderr}\n{errors}"
    manifest: dict[str, Any] = json.loads((root / job / "manifest.json").read_text())
    return manifest


def output(root: Path, manifest: dict[str, Any], group: str) -> Dataset:
    """An output group's dataset, its shard parts concatenated."""
    parts = [load_cs(root / key) for key in manifest["outputs"][group]["datasets"]]
    return parts[0] if len(parts) == 1 else concatenate(parts)


def match_picks(
    picks_xy: np.ndarray, truth_xy: np.ndarray, tolerance_px: float
) -> tuple[float, float, np.ndarray]:
    """Precision, recall, and the distances (px) of the picks within ``tolerance_px``."""
    distance = np.hypot(*(picks_xy[:, None, :] - truth_xy[None, :, :]).transpose(2, 0, 1))
    nearest = distance.min(axis=1)
    hit = nearest < tolerance_px
    return float(hit.mean()), float((distance.min(axis=0) < tolerance_px).mean()), nearest[hit]


def micrograph_index(paths: list[str]) -> np.ndarray:
    """The simulated movie each path belongs to (``.../m1_...`` -> 1)."""
    return np.array([int(Path(p).name[1]) for p in paths])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Three simulated movies, 384 x 384 px x 10 frames at 2 A/px, with a gain reference."""
    root = tmp_path_factory.mktemp("preprocessing") / "project"
    (root / "movies").mkdir(parents=True)
    volume = phantom_volume(BOX_PX, PIXEL_A, seed=1).volume
    micrographs, movies = [], []
    for i, (df_u, df_v) in enumerate(DEFOCI_A):
        micrograph = simulate_micrograph(
            volume,
            PIXEL_A,
            shape=SHAPE,
            n_particles=12,
            snr=1.0,
            defocus_u_A=df_u,
            defocus_v_A=df_v,
            astig_angle_deg=ASTIG_DEG,
            amp_contrast=0.1,
            carbon_fraction=0.0,
            keep_clean=True,
            seed=10 + i,
        )
        movie = simulate_movie(
            micrograph.clean,
            pixel_size_A=PIXEL_A,
            n_frames=N_FRAMES,
            dose_per_frame_e_per_A2=1.5,
            image_contrast=0.1,
            total_drift_px=DRIFT_PX,
            local_drift_px=0.0,
            seed=20,  # one camera: the same gain and hot pixels (and drift path) for all
        )
        save_movie(movie, root / "movies" / f"m{i}.tif", gain_path=root / "gain.mrc")
        micrographs.append(micrograph.truth)
        movies.append(movie.truth)
    return Project(root, micrographs, movies, volume)


@pytest.fixture(scope="module")
def chain(project: Project) -> dict[str, dict[str, Any]]:
    """Run import -> motion -> CTF -> blob picking -> extraction; the manifests by job."""
    root = project.root
    manifests = {
        "import": run_ok(
            root,
            "import",
            "import_movies",
            {
                "blob_paths": "movies/*.tif",
                "gain_ref_path": "gain.mrc",
                "psize_A": PIXEL_A,
                "total_dose_e_per_A2": 1.5 * N_FRAMES,
            },
        )
    }
    manifests["motion"] = run_ok(root, "motion", "motion_correction", MOTION, "import/movies")
    manifests["ctf"] = run_ok(root, "ctf", "ctf_estimation", CTF, "motion/micrographs")
    manifests["blob"] = run_ok(root, "blob", "blob_picker", BLOB, "ctf/micrographs")
    manifests["extract"] = run_ok(
        root, "extract", "extract_particles", EXTRACT, "ctf/micrographs", "blob/particles"
    )
    return manifests


def test_motion_correction_recovers_the_drift(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    micrographs = output(root, chain["motion"], "micrographs")
    paths = micrographs.strings("movie_blob/path")
    assert paths == [f"movies/m{i}.tif" for i in range(N_MOVIES)]
    for i, truth in enumerate(project.movies):
        trajectory_yx = np.load(root / micrographs.strings("rigid_motion/path")[i])
        error = trajectory_yx - truth.drift_px[:, ::-1]
        assert np.sqrt(np.mean(np.sum(error**2, axis=1))) < 0.3  # px
        image, info = read_mrc(root / micrographs.strings("micrograph_blob/path")[i])
        assert image.shape == SHAPE
        assert info.voxel_size_A[0] == pytest.approx(PIXEL_A)
    np.testing.assert_allclose(micrographs["rigid_motion/drift_total_px"], DRIFT_PX, atol=0.3)
    summary = chain["motion"]["outputs"]["micrographs"]["summary"]
    assert summary["drift_total_px_mean"] == pytest.approx(DRIFT_PX, abs=0.3)
    assert summary["drift_total_A_max"] == pytest.approx(DRIFT_PX * PIXEL_A, abs=0.6)
    reports = [e["body"] for e in spool(root, "motion") if e["endpoint"] == "exposures"]
    assert [r["name"] for r in reports] == ["m0", "m1", "m2"]
    assert all(r["drift_total_px"] == pytest.approx(DRIFT_PX, abs=0.3) for r in reports)


def test_ctf_estimation_finds_the_defocus(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    micrographs = output(project.root, chain["ctf"], "micrographs")
    for i, truth in enumerate(project.micrographs):
        assert micrographs["ctf/df1_A"][i] == pytest.approx(truth.defocus_u_A, rel=0.03)
        assert micrographs["ctf/df2_A"][i] == pytest.approx(truth.defocus_v_A, rel=0.03)
        angle = np.degrees(micrographs["ctf/df_angle_rad"][i])
        assert abs((angle - truth.astig_angle_deg + 90) % 180 - 90) < 15  # degrees
        assert 2 * PIXEL_A <= micrographs["ctf/ctf_fit_to_A"][i] < CTF["res_min_align"]
    summary = chain["ctf"]["outputs"]["micrographs"]["summary"]
    means = [0.5 * (u + v) for u, v in DEFOCI_A]
    assert summary["defocus_min_A"] == pytest.approx(min(means), rel=0.03)
    assert summary["defocus_max_A"] == pytest.approx(max(means), rel=0.03)
    reports = [e["body"] for e in spool(project.root, "ctf") if e["endpoint"] == "exposures"]
    assert [(r["name"], r["movie_path"]) for r in reports] == [
        (f"m{i}", f"movies/m{i}.tif") for i in range(N_MOVIES)
    ]
    assert reports[0]["defocus_u_A"] == pytest.approx(DEFOCI_A[0][0], rel=0.03)


def assert_picks_match(project: Project, particles: Dataset, min_fraction: float) -> None:
    """Precision and recall of all picks against the true centres, within a third of a box."""
    which = micrograph_index(particles.strings("location/micrograph_path"))
    picks_xy = centres_px(particles)
    hits, true_found, errors = 0, 0, []
    for i, truth in enumerate(project.micrographs):
        precision, recall, distance = match_picks(
            picks_xy[which == i], truth.centres_px, BOX_PX / 3
        )
        hits += round(precision * np.sum(which == i))
        true_found += round(recall * len(truth.centres_px))
        errors.append(distance)
    n_true = sum(len(t.centres_px) for t in project.micrographs)
    assert hits / len(particles) >= min_fraction  # precision
    assert true_found / n_true >= min_fraction  # recall
    assert np.median(np.concatenate(errors)) * PIXEL_A < 10.0  # A


def test_blob_picker_finds_the_particles(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    particles = output(project.root, chain["blob"], "particles")
    assert_picks_match(project, particles, 0.8)
    summary = chain["blob"]["outputs"]["particles"]["summary"]
    assert summary["picks"] == len(particles) == chain["blob"]["outputs"]["particles"]["n_items"]
    assert summary["picks_per_micrograph_mean"] == pytest.approx(
        len(particles) / N_MOVIES, abs=0.01
    )
    assert np.all(particles["location/micrograph_shape"] == SHAPE)


def test_extraction_boxes_every_particle_inside_the_micrograph(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    picks = output(root, chain["blob"], "particles")
    particles = output(root, chain["extract"], "particles")
    half = EXTRACT["box_size_pix"] // 2
    corner = np.rint(centres_px(picks)).astype(int) - half
    inside = np.all((corner >= 0) & (corner + 2 * half <= np.array(SHAPE)[::-1]), axis=1)
    assert len(particles) == int(inside.sum())
    assert set(particles.uid.tolist()) == set(picks.uid[inside].tolist())
    summary = chain["extract"]["outputs"]["particles"]["summary"]
    assert summary["particles_extracted"] == len(particles)
    assert summary["dropped_at_edges"] == int((~inside).sum())
    binned = EXTRACT["bin_size_pix"]
    psize = PIXEL_A * EXTRACT["box_size_pix"] / binned
    np.testing.assert_allclose(particles["blob/psize_A"], psize)
    assert np.all(particles["blob/shape"] == binned)
    fitted = output(root, chain["ctf"], "micrographs")["ctf/df1_A"]
    which = micrograph_index(particles.strings("location/micrograph_path"))
    np.testing.assert_array_equal(particles["ctf/df1_A"], fitted[which])
    stacks = {path: read_mrc(root / path)[0] for path in set(particles.strings("blob/path"))}
    blobs = zip(particles.strings("blob/path"), particles["blob/idx"], strict=True)
    images = np.stack([stacks[path][index] for path, index in blobs])
    assert images.shape == (len(particles), binned, binned)
    yy, xx = np.mgrid[:binned, :binned] - binned // 2
    ring = np.hypot(yy, xx) > 0.375 * binned
    np.testing.assert_allclose(images[:, ring].mean(axis=1), 0.0, atol=1e-3)
    np.testing.assert_allclose(images[:, ring].std(axis=1), 1.0, rtol=1e-3)
    # contrast inverted: the particles (dark in the micrographs) are white in the boxes
    centre = np.hypot(yy, xx) < 0.2 * binned
    assert images[:, centre].mean() > 0.5
    # and say so, for the reconstruction jobs' CTF sign
    np.testing.assert_array_equal(particles["blob/sign"], 1.0)


def run_shard(root: Path, index: int) -> subprocess.CompletedProcess[str]:
    """Run shard ``index`` of 2 of the motion correction job ``motion2``."""
    return run_worker(
        root,
        "motion2",
        "motion_correction",
        MOTION,
        "import/movies",
        CRYOKUBE_SHARDS="2",
        JOB_COMPLETION_INDEX=str(index),
    )


def test_two_shards_give_the_single_run_result_and_a_retry_resumes(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    for index in (0, 1):
        result = run_shard(root, index)
        assert result.returncode == 0, result.stderr
    sharded = json.loads((root / "motion2" / "manifest.json").read_text())
    group = sharded["outputs"]["micrographs"]
    assert sharded["shards"] == 2
    assert group["datasets"] == ["motion2/micrographs_shard0.cs", "motion2/micrographs_shard1.cs"]
    assert group["n_items"] == N_MOVIES
    single = output(root, chain["motion"], "micrographs")
    merged = output(root, sharded, "micrographs")
    order = np.argsort(micrograph_index(merged.strings("movie_blob/path")))
    np.testing.assert_array_equal(merged.uid[order], single.uid)
    np.testing.assert_array_equal(
        merged["rigid_motion/drift_total_px"][order], single["rigid_motion/drift_total_px"]
    )
    for a, b in zip(
        np.array(merged.strings("micrograph_blob/path"))[order],
        single.strings("micrograph_blob/path"),
        strict=True,
    ):
        np.testing.assert_array_equal(read_mrc(root / a)[0], read_mrc(root / b)[0])

    # Shard 0 (m0, m2) is killed after m2 but before its manifest: its retry redoes m0 only.
    before = (root / "motion2" / "micrographs_shard0.cs").read_bytes()
    kept = root / "motion2" / "motioncorrected" / "m2_patch_aligned_doseweighted.mrc"
    kept_mtime = kept.stat().st_mtime_ns
    (root / "motion2" / "shards" / "0" / "manifest.json").unlink()
    (root / "motion2" / "manifest.json").unlink()
    checkpoints = sorted((root / "motion2" / "checkpoints").iterdir())
    [m0_checkpoint] = [c for c in checkpoints if c.read_text() == "movies/m0.tif"]
    m0_checkpoint.unlink()
    assert run_shard(root, 0).returncode == 0
    assert (root / "motion2" / "micrographs_shard0.cs").read_bytes() == before
    assert kept.stat().st_mtime_ns == kept_mtime
    logs = [e["body"]["message"] for e in spool(root, "motion2") if e["endpoint"] == "events"]
    assert any("resumed 1 of 2 items" in m for m in logs)


def make_templates_job(root: Path, volume: np.ndarray) -> None:
    """A finished upstream job whose ``templates`` output holds projections of the particle."""
    views = euler_to_matrix(np.array([[0.0, 0.0, 0.0], [0.0, 90.0, 0.0], [90.0, 90.0, 0.0]]))
    images = np.asarray(templates_from_volume(volume, np.asarray(views)), dtype=np.float32)
    (root / "templates").mkdir()
    write_mrc(root / "templates" / "templates.mrcs", images, pixel_size_A=PIXEL_A, stack=True)
    n = len(images)
    dataset = Dataset.from_columns(
        {
            "blob/path": ["templates/templates.mrcs"] * n,
            "blob/idx": np.arange(n, dtype=np.uint32),
            "blob/shape": np.tile(np.array([BOX_PX, BOX_PX], dtype=np.uint32), (n, 1)),
            "blob/psize_A": np.full(n, PIXEL_A, dtype=np.float32),
        },
        seed=0,
    )
    save_cs(dataset, root / "templates" / "templates.cs")
    manifest = JobManifest(
        project="sim",
        job="templates",
        job_uid="uid-templates",
        job_type="select_2d",
        params={},
        inputs=[],
        outputs={
            "templates_selected": GroupEntry(
                name="templates_selected",
                kind=DataKind.TEMPLATES,
                datasets=["templates/templates.cs"],
                n_items=n,
            )
        },
    )
    (root / "templates" / "manifest.json").write_text(manifest.model_dump_json())


def test_template_picker_finds_the_particles(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    make_templates_job(root, project.volume)
    manifest = run_ok(
        root,
        "template",
        "template_picker",
        {"diameter_A": 60.0, "angular_sampling_deg": 15.0, "min_score": 0.75},
        "ctf/micrographs",
        "templates/templates_selected",
    )
    particles = output(root, manifest, "particles")
    assert_picks_match(project, particles, 0.9)
    assert set(particles["pick_stats/template"].tolist()) <= {0, 1, 2}


def test_import_micrographs_registers_the_motion_corrected_sums(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    pattern = "motion/motioncorrected/*_doseweighted.mrc"
    manifest = run_ok(
        root, "import-mics", "import_micrographs", {"blob_paths": pattern, "psize_A": PIXEL_A}
    )
    micrographs = output(root, manifest, "micrographs")
    assert micrographs.strings("micrograph_blob/path") == output(
        root, chain["motion"], "micrographs"
    ).strings("micrograph_blob/path")
    assert np.all(micrographs["micrograph_blob/shape"] == SHAPE)
    assert manifest["outputs"]["micrographs"]["summary"] == {"micrographs": 3, "shape_px": [*SHAPE]}


def test_no_picks_give_empty_datasets_downstream(
    project: Project, chain: dict[str, dict[str, Any]]
) -> None:
    root = project.root
    params = {**BLOB, "min_score": 1000.0}
    picks = run_ok(root, "nopicks", "blob_picker", params, "ctf/micrographs")
    assert len(output(root, picks, "particles")) == 0
    assert picks["outputs"]["particles"]["summary"]["picks"] == 0
    extracted = run_ok(
        root, "noboxes", "extract_particles", EXTRACT, "ctf/micrographs", "nopicks/particles"
    )
    assert len(output(root, extracted, "particles")) == 0
    assert extracted["outputs"]["particles"]["summary"]["particles_extracted"] == 0


def test_recentring_moves_boxes_to_the_2d_classification_offset() -> None:
    """A particle found 1 px below and 2 px left of its box centre (box pixels of 2 A) on a
    1 A/px micrograph is re-extracted 2 px down and 4 px left, in 2D classification's terms."""
    from cryokube.processing.jobs._particles import shift_from_offset
    from cryokube.processing.jobs.extract_particles import _recentred

    offset_yx_px = np.array([[1.0, -2.0]])
    particles = Dataset.from_columns(
        {
            "location/center_x_frac": np.array([0.5], dtype=np.float32),
            "location/center_y_frac": np.array([0.25], dtype=np.float32),
            "location/micrograph_shape": np.array([[200, 200]], dtype=np.uint32),
            "alignments2D/shift": shift_from_offset(offset_yx_px),
            "alignments2D/psize_A": np.array([2.0], dtype=np.float32),
        },
        seed=0,
    )
    np.testing.assert_allclose(_recentred(particles, np.array([1.0])), [[96.0, 52.0]])


@pytest.mark.parametrize(
    ("job_type", "params", "inputs", "message"),
    [
        ("motion_correction", {"frame_end": 40}, ("import/movies",), "params.frame_end"),
        ("blob_picker", {"lowpass_res_A": 3.0}, ("ctf/micrographs",), "params.lowpass_res_A"),
        (
            "extract_particles",
            {"phase_flip": True, "box_size_pix": 48},
            ("motion/micrographs", "blob/particles"),
            "params.phase_flip",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_parameter(
    project: Project,
    chain: dict[str, dict[str, Any]],
    job_type: str,
    params: dict[str, Any],
    inputs: tuple[str, ...],
    message: str,
) -> None:
    root = project.root
    result = run_worker(root, "bad", job_type, params, *inputs)
    assert result.returncode == 2, result.stderr
    errors = [e["body"]["message"] for e in spool(root, "bad") if e["endpoint"] == "events"]
    assert any(message in m for m in errors)
    assert not (root / "bad" / "manifest.json").exists()
    assert not (root / "bad" / "checkpoints").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")
def test_gpu_jobs_match_cpu(project: Project, chain: dict[str, dict[str, Any]]) -> None:
    """Motion correction and extraction with CRYOKUBE_DEVICE=gpu give the CPU results."""
    root = project.root
    for job, job_type, params, inputs in (
        ("motion-gpu", "motion_correction", MOTION, ("import/movies",)),
        ("extract-gpu", "extract_particles", EXTRACT, ("ctf/micrographs", "blob/particles")),
    ):
        result = run_worker(root, job, job_type, params, *inputs, CRYOKUBE_DEVICE="gpu")
        assert result.returncode == 0, result.stderr
    gpu = output(
        root, json.loads((root / "motion-gpu" / "manifest.json").read_text()), "micrographs"
    )
    cpu = output(root, chain["motion"], "micrographs")
    np.testing.assert_allclose(
        gpu["rigid_motion/drift_total_px"], cpu["rigid_motion/drift_total_px"], atol=0.05
    )
    manifest = json.loads((root / "extract-gpu" / "manifest.json").read_text())
    gpu_particles = output(root, manifest, "particles")
    cpu_particles = output(root, chain["extract"], "particles")
    np.testing.assert_array_equal(gpu_particles.uid, cpu_particles.uid)
    for path_gpu, path_cpu in zip(
        sorted(set(gpu_particles.strings("blob/path"))),
        sorted(set(cpu_particles.strings("blob/path"))),
        strict=True,
    ):
        np.testing.assert_allclose(
            read_mrc(root / path_gpu)[0], read_mrc(root / path_cpu)[0], atol=1e-3
        )
