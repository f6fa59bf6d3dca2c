"""Figures read from job outputs on storage: what each job of a finished pipeline shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryokube.operator.console.figures import (
    MAX_MRC_BYTES,
    FigureCache,
    StorageOpener,
    job_figures,
    read_job_manifest,
)
from cryokube.operator.metadata.settings import Settings
from cryokube.processing.storage import PosixStorage, StorageError, StoragePathError
from support.console_data import write_pipeline


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("project")
    write_pipeline(path)
    return path


@pytest.mark.parametrize(
    ("job", "titles"),
    [
        ("motion-1", ["Motion trajectories"]),
        ("ctf-1", ["CTF fit: mic_0001", "Defocus distribution"]),
        ("picks-1", ["Picks on motion-1/micrographs/mic_0001.mrc (6)"]),
        ("classes-1", ["2D class averages"]),
        ("refine-1", ["FSC", "Volume volume"]),
    ],
)
def test_each_job_shows_its_figures(root: Path, job: str, titles: list[str]) -> None:
    storage = PosixStorage(root)
    manifest = read_job_manifest(storage, job)
    assert manifest is not None
    figures = job_figures(storage, manifest)
    assert [f.title for f in figures] == titles
    assert all(f.svg.startswith("<svg") and not f.note for f in figures)


def test_unfinished_job_has_no_manifest(root: Path) -> None:
    assert read_job_manifest(PosixStorage(root), "not-run-yet") is None


def test_an_oversized_or_missing_file_is_a_note_not_an_error(root: Path) -> None:
    storage = PosixStorage(root)
    manifest = read_job_manifest(storage, "refine-1")
    assert manifest is not None
    group = manifest.outputs["volume"]
    volume, fsc = group.files
    huge = volume.model_copy(update={"size_bytes": MAX_MRC_BYTES + 1})
    gone = fsc.model_copy(update={"path": "refine-1/missing_fsc.npy"})
    broken = manifest.model_copy(
        update={"outputs": {"volume": group.model_copy(update={"files": [huge, gone]})}}
    )
    notes = {f.title: f.note for f in job_figures(storage, broken)}
    assert "refine-1/volume.mrc" in notes["volume (volume)"]
    assert "more than a plot reads" in notes["volume (volume)"]
    assert "missing_fsc.npy" in notes["FSC (volume)"]
    assert notes.keys() == {"FSC (volume)", "volume (volume)"}


def test_cache_draws_a_manifest_once(root: Path) -> None:
    storage = PosixStorage(root)
    manifest = read_job_manifest(storage, "picks-1")
    assert manifest is not None
    cache = FigureCache(size=1)
    first = cache.figures(str(root), storage, manifest)
    assert cache.figures(str(root), storage, manifest) is first
    other = read_job_manifest(storage, "ctf-1")
    assert other is not None
    cache.figures(str(root), storage, other)
    assert cache.figures(str(root), storage, manifest) is not first  # evicted (size 1)
    with pytest.raises(ValueError, match="size"):
        FigureCache(size=0)


def test_a_pvc_root_opens_its_subpath_under_the_claims_mount(root: Path) -> None:
    opener = StorageOpener(pvc_mounts={"lab-a/cryo-data": root.parent})
    storage = opener.open(f"pvc://lab-a/cryo-data/{root.name}")
    assert read_job_manifest(storage, "refine-1") is not None
    assert opener.open("pvc://lab-a/cryo-data/").exists(f"{root.name}/refine-1/manifest.json")
    with pytest.raises(StorageError, match="lab-b/cryo-data is not mounted"):
        opener.open(f"pvc://lab-b/cryo-data/{root.name}")
    with pytest.raises(StoragePathError, match="leave the project root"):
        opener.open(f"pvc://lab-a/cryo-data/{root.name}/../..")
    with pytest.raises(ValueError, match="storage_root"):
        opener.open("nfs://server/apo")


def test_pvc_mounts_come_from_the_environment_as_json() -> None:
    env = {"CRYOKUBE_TOKEN_SECRET": "s" * 32, "CRYOKUBE_PVC_MOUNTS": '{"ns/claim": "/projects"}'}
    assert Settings.from_env(env).pvc_mounts == {"ns/claim": Path("/projects")}
    for bad in ("{not json", '["ns/claim"]', '{"claim": "/projects"}', '{"ns/claim": "rel"}'):
        with pytest.raises(ValueError, match="CRYOKUBE_PVC_MOUNTS"):
            Settings.from_env({**env, "CRYOKUBE_PVC_MOUNTS": bad})
