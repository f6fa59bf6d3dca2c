#!/usr/bin/env bash
# Install what the console's browser tests drive: Debian's chromium and its chromedriver.
# Idempotent: does nothing when both are on PATH. The Python driver (selenium) is a dev extra
# of pyproject.toml, installed with the virtualenv. Needs root (or passwordless sudo) for apt.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser.sh: chromium and chromedriver are missing and apt needs root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
command -v chromium >/dev/null && command -v chromedriver >/dev/null
