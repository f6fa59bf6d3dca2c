# syntax=docker/dockerfile:1
# CryoKube operator: kopf serving Projects and Jobs (`python -m cryokube.operator.handlers`).
# Build from the repository root: docker build -f images/operator.Dockerfile -t cryokube/operator .
#
# Both stages use the same exact Python image, so the virtualenv built in the first stage runs
# unchanged in the second; the final stage holds no compiler, no pip and no source tree.
ARG PYTHON_IMAGE=docker.io/library/python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir "build==1.2.2.post1"
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY processing/ processing/
RUN python -m build --wheel --outdir /dist . \
    && python -m venv --without-pip /opt/cryokube \
    && python -m pip --python /opt/cryokube/bin/python install --no-cache-dir /dist/*.whl

FROM ${PYTHON_IMAGE}
RUN python -m pip uninstall --yes pip setuptools wheel \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin cryokube
COPY --from=build /opt/cryokube /opt/cryokube
ENV PATH=/opt/cryokube/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CRYOKUBE_METRICS_PORT=9090
USER 10001:10001
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/metrics', timeout=4)"]
ENTRYPOINT ["python", "-m", "cryokube.operator.handlers"]
