"""The create-job form in a cluster: the service creates the Job resource through the Kubernetes
API (kmock's emulator over real HTTP, the production kubernetes client) in the project's
namespace, with the console user recorded; the API server's 409 and 422 come back as form errors
naming the field."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest
from cryokube.operator.console.forms import csrf_token
from cryokube.operator.console.submit import SUBMITTED_BY
from cryokube.operator.metadata.app import create_app
from support.metadata_app import TOKEN_SECRET, admin, make_settings, user

pytestmark = [pytest.mark.mongo, pytest.mark.k8s]

GROUP, VERSION = "cryokube.io", "v1alpha1"
MIA = user("mia")


@pytest.fixture
async def api(aiohttp_client: Any, mongo_server: Any, mongo_db_name: str, k8s_emulator: Any) -> Any:
    settings = make_settings(
        mongo_server.uri,
        mongo_db_name,
        job_submitter="kubernetes",
        kube_host=str(k8s_emulator.url).rstrip("/"),
    )
    client = await aiohttp_client(create_app(settings))
    for name, namespace in (("apo", "lab-a"), ("ribo", "lab-b"), ("loose", None)):
        body = {"name": name, "members": ["mia"], "namespace": namespace}
        resp = await client.post("/api/v1/projects", json=body, headers=admin())
        assert resp.status == 201, await resp.text()
    return client


def read_job(emulator: Any, namespace: str, name: str) -> dict[str, Any]:
    """The Job resource as the API server stores it, read with the production client."""
    conf = kubernetes.client.Configuration()
    conf.host = str(emulator.url).rstrip("/")
    with kubernetes.client.ApiClient(conf) as client:
        body: dict[str, Any] = kubernetes.client.CustomObjectsApi(
            client
        ).get_namespaced_custom_object(GROUP, VERSION, namespace, "jobs", name)
    return body


def ctf_form(name: str) -> dict[str, str]:
    return {
        "csrf_token": csrf_token(TOKEN_SECRET, "mia"),
        "job_type": "ctf_estimation",
        "name": name,
        "input.micrographs": "motion-1/micrographs",
        "param.res_max_align": "5",
    }


async def post(api: Any, project: str, form: dict[str, str]) -> Any:
    return await api.post(
        f"/console/projects/{project}/jobs", data=form, headers=MIA, allow_redirects=False
    )


async def test_form_creates_the_job_resource_in_the_projects_namespace(
    api: Any, k8s_emulator: Any
) -> None:
    resp = await post(api, "apo", ctf_form("ctf-2"))
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/console/projects/apo#job-ctf-2"
    job = await asyncio.to_thread(read_job, k8s_emulator, "lab-a", "ctf-2")
    assert job["apiVersion"] == f"{GROUP}/{VERSION}"
    assert job["kind"] == "Job"
    assert job["metadata"]["annotations"] == {SUBMITTED_BY: "mia"}
    spec = job["spec"]
    assert (spec["project"], spec["type"]) == ("apo", "ctf_estimation")
    assert spec["inputs"] == [{"job": "motion-1", "output": "micrographs"}]
    assert spec["params"]["res_max_align"] == 5.0
    assert spec["params"]["res_min_align"] == 25.0  # the model's default, spelled out
    # The operator registers the job when it sees the resource; the form did not.
    listed = await (await api.get("/api/v1/projects/apo/jobs", headers=MIA)).json()
    assert listed["items"] == []


async def test_a_taken_name_is_a_form_error_naming_the_name(api: Any) -> None:
    assert (await post(api, "apo", ctf_form("ctf-3"))).status == 303
    resp = await post(api, "apo", ctf_form("ctf-3"))
    assert resp.status == 422
    page = await resp.text()
    assert "name: a job &#39;ctf-3&#39; already exists in project &#39;apo&#39;" in page


async def test_the_api_servers_validation_error_names_the_field(
    api: Any, k8s_emulator: Any
) -> None:
    # What kube-apiserver answers when a Job fails validation (a Status with its causes).
    message = 'Invalid value: "ctf-4": must be no more than 40 characters'
    status = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'Job.cryokube.io "ctf-4" is invalid: metadata.name: {message}',
        "reason": "Invalid", "code": 422,
        "details": {
            "name": "ctf-4", "group": GROUP, "kind": "Job",
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "metadata.name"}],
        },
    }  # fmt: skip
    k8s_emulator[f"post /apis/{GROUP}/{VERSION}/namespaces/lab-b/jobs"] << 422 << status
    resp = await post(api, "ribo", ctf_form("ctf-4"))
    assert resp.status == 422
    page = await resp.text()
    assert "name: Invalid value: &#34;ctf-4&#34;: must be no more than 40 characters" in page


async def test_a_project_without_a_namespace_is_a_form_error(api: Any) -> None:
    resp = await post(api, "loose", ctf_form("ctf-5"))
    assert resp.status == 422
    assert "spec.project: project &#39;loose&#39; records no Kubernetes namespace" in (
        await resp.text()
    )
