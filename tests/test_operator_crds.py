"""The committed CRDs equal what the models render, and their schemas are explainable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryokube.operator import crdgen

RENDERED = crdgen.render_all()


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_committed_crd_is_current(repo_root: Path, name: str) -> None:
    committed = (repo_root / "crds" / name).read_text()
    assert committed == crdgen.dump(RENDERED[name]), (
        f"crds/{name} is stale: run PYTHONSAFEPATH=1 .venv/bin/python -m cryokube.operator.crdgen"
    )


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, sub in node.get("properties", {}).items():
        found += walk(sub, f"{path}.{key}")
    if "items" in node:
        found += walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_spec_field_has_a_description_and_is_structural(name: str) -> None:
    schema = RENDERED[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in walk(schema["properties"][part], part):
            assert node.get("description"), f"{name}: {path} has no description"
            assert "type" in node, f"{name}: {path} has no type (not structural)"
            assert not {"$ref", "anyOf", "allOf", "title"} & node.keys(), f"{name}: {path}"


def test_params_is_the_only_escape_hatch_in_job_spec() -> None:
    schema = RENDERED["cryokube.io_jobs.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    open_paths = [
        path
        for path, node in walk(schema["properties"]["spec"], "spec")
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert open_paths == ["spec.params"]


def test_names_columns_and_category() -> None:
    job = RENDERED["cryokube.io_jobs.yaml"]["spec"]
    assert job["names"]["shortNames"] == ["cjob"]
    assert job["names"]["categories"] == ["cryokube"]
    columns = [c["name"] for c in job["versions"][0]["additionalPrinterColumns"]]
    assert {"Type", "Phase", "Progress", "GPUs", "Age"} <= set(columns)
    project = RENDERED["cryokube.io_projects.yaml"]["spec"]
    assert project["names"]["shortNames"] == ["cproj"]


def test_examples_validate_and_their_inputs_resolve(repo_root: Path) -> None:
    from cryokube.operator.models import JobResource, parse_job, parse_project
    from cryokube.processing import jobs as catalog

    projects, job_list = [], []
    for path in sorted((repo_root / "examples").glob("**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None and doc["kind"] == "Project":
                projects.append(parse_project(doc))  # raises InvalidSpecError naming the field
            elif doc is not None:
                job_list.append(parse_job(doc))
    assert [p.metadata.name for p in projects] == ["apoferritin"]
    pipeline: dict[str, JobResource] = {j.metadata.name: j for j in job_list}
    for job in job_list:
        for ref in job.spec.inputs:
            upstream = pipeline[ref.job]
            catalog.get(upstream.spec.type).output_group(ref.output)
    assert {j.spec.type for j in job_list} == {t.name for t in catalog.all()}
