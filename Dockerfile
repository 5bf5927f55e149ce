# syntax=docker/dockerfile:1
# Build stage: a virtual environment with the service and its dependencies.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY llm_service ./llm_service
COPY budgets ./budgets
COPY cache ./cache
COPY migrations ./migrations
RUN /opt/venv/bin/pip install -e .

# Runtime stage: no compiler, no build caches, a non-root user.
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LLM_SERVICE_DATA_DIR=/data
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin llm \
    && mkdir -p /data && chown llm /data
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=llm /app /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
# Migrates (as the owner in DATABASE_URL), then serves the API with in-process workers.
CMD ["llm-service", "serve"]
