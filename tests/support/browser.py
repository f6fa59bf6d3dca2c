"""Headless Chromium for the console's end-to-end tests, driven by Selenium.

:func:`ensure_browser` runs ``scripts/install-browser.sh`` once (Debian's ``chromium`` and
``chromium-driver`` through apt, a no-op when present); :func:`start_chromium` starts a fresh
browser with its own profile. The auth proxy's identity headers are added to every request by
the DevTools protocol (``Network.setExtraHTTPHeaders``), as the proxy in front of the console
would add them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-browser.sh"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def ensure_browser() -> tuple[str, str]:
    """Paths of ``chromium`` and ``chromedriver``, installing them first when missing.

    Raises
    ------
    RuntimeError
        The install script failed (its output is in the message).
    """
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{INSTALL_SCRIPT} failed:\n{done.stdout}\n{done.stderr}")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise RuntimeError(f"{INSTALL_SCRIPT} ran but chromium or chromedriver is not on PATH")
    return chromium, driver


def start_chromium(profile_dir: Path, headers: Mapping[str, str]) -> Any:
    """A headless Chromium with a fresh profile in ``profile_dir`` sending ``headers``.

    The browser's console log (``driver.get_log("browser")``) is kept at every level.
    """
    chromium, driver_path = ensure_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": dict(headers)})
    return driver


def console_errors(driver: Any) -> list[str]:
    """Messages the page logged at level SEVERE (JavaScript errors, failed loads) since last read."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
