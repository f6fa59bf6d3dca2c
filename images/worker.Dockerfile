# syntax=docker/dockerfile:1
# CryoKube GPU worker: `cryokube-worker` with CuPy on the NVIDIA CUDA 12 runtime.
# Build from the repository root: docker build -f images/worker.Dockerfile -t cryokube/worker .
#
# The runtime image carries the CUDA libraries CuPy loads (cuFFT, cuBLAS, NVRTC); the driver
# comes from the node. Ubuntu 24.04's python3 is 3.12, the same in both stages, so the
# virtualenv built first runs unchanged in the final stage, which holds no compiler and no pip.
ARG CUDA_IMAGE=docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# Distribution packages are not pinned to exact versions: the base tag fixes the release and
# Ubuntu's security updates within it are wanted.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "build==1.2.2.post1"
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY processing/ processing/
RUN /opt/build/bin/python -m build --wheel --outdir /dist . \
    && python3 -m venv /opt/cryokube \
    && /opt/cryokube/bin/pip install --no-cache-dir "$(ls /dist/*.whl)[gpu]" \
    && /opt/cryokube/bin/pip uninstall --yes pip

FROM ${CUDA_IMAGE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin cryokube
COPY --from=build /opt/cryokube /opt/cryokube
ENV PATH=/opt/cryokube/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CUPY_CACHE_DIR=/tmp/cupy
USER 10001:10001
# Workers are batch pods: Kubernetes follows them by exit status and heartbeats to the metadata
# service, so a container health check would only add noise.
HEALTHCHECK NONE
ENTRYPOINT ["cryokube-worker"]
