"""A job created from the console's form runs: form -> Job resource -> local runner -> worker.

The service has the workstation runner's :class:`LocalStoreSubmitter`, as under
``cryokube up``; the :class:`LocalController` registers the project and the job in the service
over HTTP and runs the worker as a process that reports back to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryokube.operator.console import LocalStoreSubmitter, set_job_submitter
from cryokube.operator.console.forms import csrf_token
from cryokube.operator.local.controller import LocalController
from cryokube.operator.local.store import ResourceStore
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.client import MetadataClient
from cryokube.operator.registration import ServiceMetadata
from cryokube.processing.io.movies import write_movie_tiff
from support.metadata_app import SERVICE_TOKEN, TOKEN_SECRET, make_settings, user

pytestmark = [pytest.mark.mongo, pytest.mark.slow]
MIA = user("mia")


async def test_job_created_from_the_form_runs(
    aiohttp_server: Any, aiohttp_client: Any, mongo_server: Any, mongo_db_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "movies").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        frames = rng.poisson(1.0, size=(3, 24, 32)).astype(np.uint8)
        write_movie_tiff(data / "movies" / f"m{i}.tif", frames, compression="lzw")
    store = ResourceStore(tmp_path / "state")
    store.apply({
        "apiVersion": "cryokube.io/v1alpha1", "kind": "Project",
        "metadata": {"name": "apo", "namespace": "lab-a"},
        "spec": {"storage": {"path": str(data)}, "members": [{"kind": "User", "name": "mia"}]},
    })  # fmt: skip
    app = create_app(make_settings(mongo_server.uri, mongo_db_name))
    set_job_submitter(app, LocalStoreSubmitter(store))
    server = await aiohttp_server(app)
    api = await aiohttp_client(server)
    url = str(server.make_url("")).rstrip("/")
    link = ServiceMetadata(
        MetadataClient(url, service_token=SERVICE_TOKEN), token_secret=TOKEN_SECRET
    )
    controller = LocalController(
        store, slots=1, link=link, metadata_url=url, log_dir=tmp_path / "logs"
    )
    try:
        await controller.reconcile_once()  # registers the project, with its storage root
        form = {
            "csrf_token": csrf_token(TOKEN_SECRET, "mia"),
            "job_type": "import_movies",
            "name": "import-1",
            "param.blob_paths": "movies/*.tif",
            "param.psize_A": "1.5",
        }
        resp = await api.post(
            "/console/projects/apo/jobs", data=form, headers=MIA, allow_redirects=False
        )
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/console/projects/apo#job-import-1"
        again = await api.post(
            "/console/projects/apo/jobs", data=form, headers=MIA, allow_redirects=False
        )
        assert again.status == 422
        assert "already exists" in await again.text()

        await controller.run(interval_s=0.1, until_idle=True)
    finally:
        await link.close()

    stored = store.get("Job", "lab-a", "import-1")
    assert stored is not None
    assert stored["status"]["phase"] == "Succeeded"
    page = await (await api.get("/console/projects/apo", headers=MIA)).text()
    assert page.count('data-status="Succeeded"') == 1
    job = await (await api.get(f"/api/v1/jobs/{stored['metadata']['uid']}", headers=MIA)).json()
    assert job["status"] == "Succeeded"
    assert job["parameters"]["psize_A"] == 1.5
    job_page = await (await api.get(f"/console/jobs/{job['uid']}", headers=MIA)).text()
    assert "import_movies" in job_page
    assert "No manifest yet" not in job_page
