# syntax=docker/dockerfile:1
# The base image is pinned by digest (Python 3.11.11 on Debian 12; a tag can be re-pushed, a
# digest cannot). This machine has no registry access: the digest is the one five unrelated
# public repositories pin this tag to. To check or move it:
# `docker buildx imagetools inspect python:3.11.11-slim-bookworm` (the index digest, first line).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

# Build stage: a virtual environment with the locked dependencies, then the service as a wheel.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# Dependency layer: only the lock file, so a change to the source reuses it. Every package is
# pinned and hash-checked (requirements.lock is pip-compile --generate-hashes of pyproject.toml),
# the build backend included (setuptools, wheel: pyproject's [build-system] requires).
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock
# The service, installed (not editable): code, pages and migrations all live in site-packages.
# Without build isolation: pip would fetch the build backend unpinned into it; the locked one
# installed above builds the project instead.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llm_service ./llm_service
COPY budgets ./budgets
COPY cache ./cache
RUN /opt/venv/bin/pip install --no-build-isolation --no-deps /src

# Runtime stage: no build tree, code owned by root, run by a non-root user who owns only /data.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LLM_SERVICE_DATA_DIR=/data
RUN useradd --system --uid 10001 --create-home --home-dir /home/llm --shell /usr/sbin/nologin llm \
    && mkdir -p /data && chown llm /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
# Migrates (as the owner in DATABASE_URL), then serves the API with in-process workers.
CMD ["llm-service", "serve"]
