"""Console pages over HTTP against the real service on nx-27017, with a finished pipeline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryokube.operator.console.forms import csrf_token
from cryokube.operator.metadata.app import create_app
from cryokube.processing.storage import S3Storage
from support.console_data import JOBS, register_pipeline, write_pipeline
from support.metadata_app import OPERATOR, TOKEN_SECRET, admin, make_settings, user

pytestmark = pytest.mark.mongo


@pytest.fixture
async def api(aiohttp_client: Any, mongo_server: Any, mongo_db_name: str, tmp_path: Path) -> Any:
    client = await aiohttp_client(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    write_pipeline(tmp_path)
    projects = [
        {"name": "apo", "members": ["mia"], "storage_root": str(tmp_path)},
        {"name": "secret", "members": ["sam"]},
    ]
    for body in projects:
        resp = await client.post("/api/v1/projects", json=body, headers=admin())
        assert resp.status == 201, await resp.text()
    client.uids = await register_pipeline(client)
    return client


MIA = user("mia")


async def _html(api: Any, path: str, status: int = 200, headers: Any = MIA) -> str:
    resp = await api.get(path, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    return str(text)


async def test_projects_page_lists_only_the_callers_projects(api: Any) -> None:
    page = await _html(api, "/console/projects")
    assert 'data-project="apo"' in page
    assert "secret" not in page
    everything = await _html(api, "/console/projects", headers=admin())
    assert 'data-project="secret"' in everything


async def test_foreign_project_and_its_jobs_are_not_found(api: Any) -> None:
    await _html(api, "/console/projects/secret", status=404)
    await _html(api, "/console/projects/secret/new", status=404)
    await _html(api, f"/console/jobs/{api.uids['ctf-1']}", status=404, headers=user("sam"))
    await _html(api, "/console/projects", status=401, headers={"X-Forwarded-User": "mia"})


async def test_project_page_draws_the_job_graph(api: Any) -> None:
    page = await _html(api, "/console/projects/apo")
    assert page.count('class="job" data-status="Succeeded"') == len(JOBS)
    assert page.count('class="edge"') == sum(len(j.inputs) for j in JOBS)
    resp = await api.get("/console/projects/apo", headers=MIA)
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


PLOTS = [
    ("motion-1", ["plot motion"]),
    ("ctf-1", ["plot ctf-fit", "plot defocus"]),
    ("picks-1", ["plot picks"]),
    ("classes-1", ["plot classes"]),
    ("refine-1", ["plot fsc", "plot volume"]),
]


@pytest.mark.parametrize(("job", "classes"), PLOTS)
async def test_job_page_shows_the_plots_of_its_outputs(
    api: Any, job: str, classes: list[str]
) -> None:
    page = await _html(api, f"/console/jobs/{api.uids[job]}")
    for css in classes:
        assert f'class="{css}"' in page
    assert "not shown" not in page
    if job == "refine-1":
        assert "FSC: 8.00 Å at 0.143" in page  # the resolution the FSC file encodes
    assert "started" in page  # the log tail
    assert "Run time" in page


@pytest.fixture
async def s3_api(
    aiohttp_client: Any,
    mongo_server: Any,
    mongo_db_name: str,
    s3_server: Any,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """The same finished pipeline, its project root in a bucket of the moto S3 server."""
    # The service reads S3 with boto3's usual credentials, as in a pod.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    write_pipeline(tmp_path)
    bucket = S3Storage(s3_client, s3_bucket, "labs/apo")
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        bucket.put_file(path, path.relative_to(tmp_path).as_posix())
    settings = make_settings(
        mongo_server.uri, mongo_db_name, s3_endpoint_url=s3_server.endpoint_url
    )
    client = await aiohttp_client(create_app(settings))
    body = {"name": "apo", "members": ["mia"], "storage_root": f"s3://{s3_bucket}/labs/apo"}
    assert (await client.post("/api/v1/projects", json=body, headers=admin())).status == 201
    client.uids = await register_pipeline(client)
    return client


@pytest.mark.s3
async def test_a_project_on_s3_shows_the_same_plots(s3_api: Any) -> None:
    for job, classes in PLOTS:
        page = await _html(s3_api, f"/console/jobs/{s3_api.uids[job]}")
        for css in classes:
            assert f'class="{css}"' in page, job
        assert "not shown" not in page
    page = await _html(s3_api, f"/console/jobs/{s3_api.uids['refine-1']}")
    assert "FSC: 8.00 Å at 0.143" in page


CLAIM = "lab-a/cryo-data"


@pytest.fixture
async def pvc_api(
    aiohttp_client: Any, mongo_server: Any, mongo_db_name: str, tmp_path: Path
) -> Any:
    """The same finished pipeline in a subPath of a claim the service has mounted at
    ``tmp_path``, beside projects whose claim it has not mounted or whose subPath escapes."""
    write_pipeline(tmp_path / "labs/apo")
    settings = make_settings(mongo_server.uri, mongo_db_name, pvc_mounts={CLAIM: tmp_path})
    client = await aiohttp_client(create_app(settings))
    roots = {
        "apo": f"pvc://{CLAIM}/labs/apo",
        "elsewhere": "pvc://lab-b/cryo-data/labs/apo",
        "escape": f"pvc://{CLAIM}/../../etc",
    }
    for name, root in roots.items():
        body = {"name": name, "members": ["mia"], "storage_root": root}
        assert (await client.post("/api/v1/projects", json=body, headers=admin())).status == 201
    client.uids = await register_pipeline(client)
    for name in ("elsewhere", "escape"):
        body = {"uid": f"uid-{name}", "name": "refine-1", "project": name, "job_type": "export"}
        assert (await client.post("/api/v1/jobs", json=body, headers=OPERATOR)).status == 201
    return client


async def test_a_project_on_a_mounted_claim_shows_the_same_plots(pvc_api: Any) -> None:
    for job, classes in PLOTS:
        page = await _html(pvc_api, f"/console/jobs/{pvc_api.uids[job]}")
        for css in classes:
            assert f'class="{css}"' in page, job
        assert "not shown" not in page
    page = await _html(pvc_api, f"/console/jobs/{pvc_api.uids['refine-1']}")
    assert "FSC: 8.00 Å at 0.143" in page


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("uid-elsewhere", "claim lab-b/cryo-data is not mounted in the metadata service"),
        ("uid-escape", "would leave the project root"),
    ],
)
async def test_an_unmounted_claim_or_escaping_subpath_is_a_note(
    pvc_api: Any, uid: str, reason: str
) -> None:
    page = await _html(pvc_api, f"/console/jobs/{uid}")
    assert "could not be read" in page
    assert reason in page
    assert 'class="plot' not in page


async def test_queue_page_says_why_jobs_wait(api: Any) -> None:
    body = {"uid": "uid-wait", "name": "wait-1", "project": "apo", "job_type": "ab_initio"}
    assert (await api.post("/api/v1/jobs", json=body, headers=OPERATOR)).status == 201
    patch = {"queue_reason": "Insufficient nvidia.com/gpu"}
    assert (await api.patch("/api/v1/jobs/uid-wait", json=patch, headers=OPERATOR)).status == 200
    page = await _html(api, "/console/queue")
    assert "wait-1" in page
    assert "Insufficient nvidia.com/gpu" in page


async def test_form_shows_units_defaults_and_bounds(api: Any) -> None:
    page = await _html(api, "/console/projects/apo/new?type=ctf_estimation")
    assert re.search(r'name="param.res_max_align"[^>]*max="100.0"[^>]*value="4.0"', page)
    assert '<td class="unit">A</td>' in page
    assert "Lowest resolution fitted (A) (0.0 … 1000.0]; default 25.0" in page  # exclusive min
    assert '<option value="motion-1/micrographs">' in page
    await _html(api, "/console/projects/apo/new?type=no_such_job", status=404)


async def _post(api: Any, form: dict[str, str], headers: Any = MIA) -> Any:
    return await api.post(
        "/console/projects/apo/jobs", data=form, headers=headers, allow_redirects=False
    )


async def test_form_registers_the_job_with_inputs_and_parameters(api: Any) -> None:
    form = {
        "csrf_token": csrf_token(TOKEN_SECRET, "mia"),
        "job_type": "ctf_estimation",
        "name": "ctf-2",
        "input.micrographs": "motion-1/micrographs",
        "param.res_max_align": "5",
    }
    resp = await _post(api, form)
    assert resp.status == 303, await resp.text()
    uid = resp.headers["Location"].rsplit("/", 1)[-1]
    job = await (await api.get(f"/api/v1/jobs/{uid}", headers=MIA)).json()
    assert job["name"] == "ctf-2"
    assert job["inputs"] == [{"job": "motion-1", "output": "micrographs"}]
    assert job["parameters"]["res_max_align"] == 5.0
    assert job["parameters"]["res_min_align"] == 25.0
    assert job["resources"]["gpus"] == 1


async def test_form_rejects_a_missing_or_foreign_csrf_token_and_origin(api: Any) -> None:
    form = {"job_type": "ctf_estimation", "name": "ctf-3"}
    assert (await _post(api, form)).status == 403
    assert (await _post(api, {**form, "csrf_token": csrf_token(TOKEN_SECRET, "sam")})).status == 403
    good = {**form, "csrf_token": csrf_token(TOKEN_SECRET, "mia")}
    evil = {**MIA, "Origin": "https://evil.example"}
    assert (await _post(api, good, headers=evil)).status == 403


async def test_form_names_the_bad_parameter(api: Any) -> None:
    form = {
        "csrf_token": csrf_token(TOKEN_SECRET, "mia"),
        "job_type": "ctf_estimation",
        "name": "ctf-4",
        "param.res_max_align": "500",
    }
    resp = await _post(api, form)
    assert resp.status == 422
    assert "res_max_align" in await resp.text()


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("path", "headers", "status", "reason"),
    [
        ("/console/projects", {"X-Forwarded-User": "mia"}, 401, "Unauthenticated"),
        ("/console/projects/secret", MIA, 404, "NotFound"),
        ("/console/no/such/page", MIA, 404, "Not Found"),
    ],
)
async def test_errors_are_pages_for_a_browser_and_json_for_api_clients(
    api: Any, path: str, headers: dict[str, str], status: int, reason: str
) -> None:
    page = await api.get(path, headers={**headers, "Accept": BROWSER})
    assert page.status == status
    assert page.content_type == "text/html"
    assert f'<h1 id="error" data-status="{status}">' in await page.text()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for accept in ("*/*", "application/json", "application/json, text/html;q=0.5"):
        resp = await api.get(path, headers={**headers, "Accept": accept})
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"].replace(" ", "") == reason.replace(" ", "")


async def test_a_refused_form_post_is_a_403_page_for_a_browser(api: Any) -> None:
    form = {"job_type": "ctf_estimation", "name": "ctf-9"}
    resp = await _post(api, form, headers={**MIA, "Accept": BROWSER})
    assert resp.status == 403
    assert '<h1 id="error" data-status="403">403 Forbidden</h1>' in await resp.text()
    api_resp = await api.get("/api/v1/projects/secret", headers={**MIA, "Accept": BROWSER})
    assert api_resp.status == 404
    assert api_resp.content_type == "text/html"  # a browser opening an API URL reads a page too
