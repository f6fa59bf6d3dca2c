"""The console in real headless Chromium against the running service with a finished pipeline.

The browser is Debian's chromium driven by Selenium (installed by ``scripts/install-browser.sh``
on first use). Selenium calls block, so each runs in a thread while the service answers on the
test's event loop. Screenshots of every page go to ``<tmp_path>/screenshots``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryokube.operator.metadata.app import create_app
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from support.browser import console_errors, start_chromium
from support.console_data import JOBS, register_pipeline, write_pipeline
from support.metadata_app import OPERATOR, admin, make_settings, user, worker

pytestmark = [pytest.mark.mongo, pytest.mark.slow]

WAIT_S = 60.0
"""Deadline of the waits for the page (a redirect, a live-log line): it only matters when the test
fails, and Chromium on a loaded 2-core runner can take seconds to render and reconnect."""

PLOTS = {
    "motion-1": ["svg.plot.motion polyline.curve"],
    "ctf-1": ["svg.plot.ctf-fit line.fit-resolution", "svg.plot.defocus rect.bar"],
    "picks-1": ["svg.plot.picks circle.pick"],
    "classes-1": ["svg.plot.classes g.class-average"],
    "refine-1": ["svg.plot.fsc line.threshold", "svg.plot.volume g.view"],
}


@pytest.fixture
async def site(
    aiohttp_server: Any, aiohttp_client: Any, mongo_server: Any, mongo_db_name: str, tmp_path: Path
) -> tuple[Any, Any]:
    server = await aiohttp_server(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    api = await aiohttp_client(server)
    root = tmp_path / "project"
    root.mkdir()
    write_pipeline(root)
    for body in (
        {"name": "apo", "members": ["mia"], "storage_root": str(root)},
        {"name": "secret", "members": ["sam"]},
    ):
        assert (await api.post("/api/v1/projects", json=body, headers=admin())).status == 201
    api.uids = await register_pipeline(api)
    return server, api


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    driver = await asyncio.to_thread(start_chromium, tmp_path / "chromium-profile", user("mia"))
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


async def _run(call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


async def _visit(driver: Any, url: str, shots: Path, name: str) -> None:
    """Open ``url``, wait for the page, save a screenshot, and fail on console errors."""
    await _run(driver.get, url)
    await _run(driver.save_screenshot, str(shots / f"{name}.png"))
    errors = await _run(console_errors, driver)
    assert errors == [], f"{name}: console errors {errors}"


async def test_console_in_chromium(site: tuple[Any, Any], browser: Any, tmp_path: Path) -> None:
    server, api = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = server.make_url

    await _visit(browser, str(url("/console/projects")), shots, "projects")
    rows = await _run(browser.find_elements, By.CSS_SELECTOR, "#projects tbody tr")
    assert [r.get_attribute("data-project") for r in rows] == ["apo"]

    await _visit(browser, str(url("/console/projects/apo")), shots, "project")
    boxes = await _run(browser.find_elements, By.CSS_SELECTOR, "svg.graph g.job")
    assert len(boxes) == len(JOBS)
    edges = await _run(browser.find_elements, By.CSS_SELECTOR, "svg.graph path.edge")
    assert len(edges) == sum(len(j.inputs) for j in JOBS)

    for job, selectors in PLOTS.items():
        await _visit(browser, str(url(f"/console/jobs/{api.uids[job]}")), shots, f"job-{job}")
        for selector in selectors:
            found = await _run(browser.find_elements, By.CSS_SELECTOR, selector)
            assert found, f"{job}: no {selector}"
            size = found[0].size if selector.endswith(("curve", "threshold")) else {"width": 1}
            assert size["width"] > 0

    await _visit(browser, str(url("/console/queue")), shots, "queue")

    # The form: pick a type, fill it in, submit; the job is registered with its inputs.
    await _visit(browser, str(url("/console/projects/apo/new?type=ctf_estimation")), shots, "form")
    name = await _run(browser.find_element, By.NAME, "name")
    await _run(name.clear)
    await _run(name.send_keys, "ctf-from-form")
    slot = Select(await _run(browser.find_element, By.NAME, "input.micrographs"))
    await _run(slot.select_by_value, "motion-1/micrographs")
    res = await _run(browser.find_element, By.NAME, "param.res_max_align")
    await _run(res.clear)
    await _run(res.send_keys, "5")
    await _run((await _run(browser.find_element, By.ID, "submit-job")).click)
    await _run(WebDriverWait(browser, WAIT_S).until, lambda d: "/console/jobs/" in d.current_url)
    await _run(browser.save_screenshot, str(shots / "created-job.png"))
    assert await _run(console_errors, browser) == []
    uid = browser.current_url.rsplit("/", 1)[-1]
    created = await (await api.get(f"/api/v1/jobs/{uid}", headers=OPERATOR)).json()
    assert created["name"] == "ctf-from-form"
    assert created["status"] == "Queued"
    assert created["inputs"] == [{"job": "motion-1", "output": "micrographs"}]
    assert created["parameters"]["res_max_align"] == 5.0

    # The live log: a worker's events reach the open page over server-sent events.
    w = worker("apo", uid)
    assert (await api.post(f"/rpc/v1/jobs/{uid}/heartbeat", json={}, headers=w)).status == 200
    await _visit(browser, str(url(f"/console/jobs/{uid}")), shots, "running-job")
    line = {"seq": 0, "message": "fitting mic_0001"}
    assert (await api.post(f"/rpc/v1/jobs/{uid}/events", json=line, headers=w)).status == 201
    step = {"seq": 1, "fraction": 0.5, "message": "half"}
    assert (await api.post(f"/rpc/v1/jobs/{uid}/progress", json=step, headers=w)).status == 201
    log = await _run(browser.find_element, By.ID, "log")
    await _run(WebDriverWait(browser, WAIT_S).until, lambda _: "fitting mic_0001" in log.text)
    bar = await _run(browser.find_element, By.ID, "progress")
    await _run(WebDriverWait(browser, WAIT_S).until, lambda _: bar.get_attribute("value") == "0.5")
    await _run(browser.save_screenshot, str(shots / "live-log.png"))
    assert await _run(console_errors, browser) == []

    # A foreign project is not visible: a 404 page (HTML for a browser), and nothing of it on
    # the projects page.
    await _run(browser.get, str(url("/console/projects/secret")))
    heading = await _run(browser.find_element, By.ID, "error")
    assert await _run(heading.get_attribute, "data-status") == "404"
    await _run(browser.save_screenshot, str(shots / "foreign-project.png"))
    assert len(list(shots.glob("*.png"))) >= 11
