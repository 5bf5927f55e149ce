"""The one typed settings object of the service, read from the environment once."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting the service reads; names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Database. DATABASE_URL is the owner's connection (migrations); unset = embedded PostgreSQL.
    database_url: str | None = None
    # The application role's connection. Unset: DATABASE_URL with the user replaced by
    # APP_DB_ROLE and the password by APP_DB_PASSWORD.
    app_database_url: str | None = None
    app_db_role: str = "llm_app"
    app_db_password: str | None = None
    llm_service_data_dir: Path = Path(".llm_service")
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_statement_timeout_ms: int = 15_000

    # LLM provider.
    llm_model: str | None = None
    llm_api_base: str | None = None
    llm_request_timeout_s: float = 30.0
    llm_max_attempts: int = 3
    # litellm's HTTP transport: aiohttp in production; httpx only where respx mocks the provider.
    llm_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    # The most one call outside an investigation (an explanation, a rationale) may cost, USD.
    llm_call_max_cost_usd: Decimal = Decimal("0.05")
    # Prices for models litellm does not know, USD per token: {"my-model": [input, output]}.
    llm_price_overrides: dict[str, tuple[Decimal, Decimal]] = Field(default_factory=dict)

    embedding_model: str = "local"

    # Explanations (POST /v1/explanations).
    # How long a cached explanation may be served (new data makes it stale sooner: fingerprint).
    explanation_cache_ttl_s: float = 6 * 3600.0
    explanation_max_tokens: int = 600
    # The whole model call of one explanation (attempts, retries, the repair) must end by then.
    explanation_llm_timeout_s: float = 20.0
    # How long a request waits for another's computation of the same explanation (single flight).
    explanation_flight_wait_s: float = 20.0
    # Connections of the single-flight lock pool (each computing leader holds one meanwhile).
    explanation_flight_pool_size: int = 8
    # Normalised questions whose embeddings are kept in memory (per tenant and model), LRU.
    explanation_embedding_cache_size: int = 4096
    # Buffered cache-hit counts are written this often.
    explanation_hit_flush_interval_s: float = 5.0

    # Investigations: the hard ceilings a request may lower but never raise.
    investigation_max_cost_usd: Decimal = Decimal("0.30")
    investigation_timeout_s: float = Field(default=60.0, ge=1.0)  # a run needs at least 1 s

    # HTTP.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = 64 * 1024
    finance_api_token: str | None = None
    # Retention: prompts and responses older than this many days are purged by `retention`.
    retention_prompt_days: int = Field(default=30, ge=1)
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    workers_in_process: int = 1
    # Runs one worker process keeps in flight at once (they mostly wait on the provider). At
    # most 5,000: a heartbeat round sends ceil(n / 10,000) renewals one after another, and
    # past a few thousand runs one process's event loop is the limit, not the database.
    worker_concurrency: int = Field(default=50, ge=1, le=5_000)
    # Connections of a `worker` process's pool. Unset: one per run in flight (WORKER_CONCURRENCY)
    # plus 1 (the sweeper); either way clamped to what the server's max_connections leaves,
    # keeping 10 free and 2 for the worker's claim and heartbeat connections.
    worker_pool_size: int | None = Field(default=None, ge=1)
    # A run whose worker stops heartbeating is taken over this long after its last heartbeat.
    worker_lease_s: float = 10.0
    # On shutdown, runs in flight get this long to finish; the rest are cancelled and handed back
    # (their lease ended at once, so another worker ends them with what they recorded).
    worker_shutdown_grace_s: float = 10.0
    # Every serve and worker process settles expired reservations (of crashed callers) at their
    # worst case this often, so none stays pending longer than this past its expiry.
    ledger_sweep_interval_s: float = Field(default=10.0, gt=0, le=50)

    # The hot path (issue 15): request logging and `serve --workers`.
    # One log line per N successful requests (the first, then every N-th; 1 = all, 0 = none);
    # errors (status >= 400) and requests slower than HTTP_LOG_SLOW_MS are always logged.
    http_log_every: int = Field(default=100, ge=0)
    # Finite and at most a day: "inf" (or 1e400, which parses as inf) would silently log none.
    http_log_slow_ms: float = Field(default=1000.0, gt=0, le=86_400_000, allow_inf_nan=False)
    # The most bytes a request's head (its header names and values) may have: 431 beyond
    # (httptools, unlike h11, has no limit of its own). 16 KiB like h11's.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    # `serve` processes (uvicorn workers) sharing one socket and one database; the in-process
    # job worker (WORKERS_IN_PROCESS) runs in one of them only (a lock file elects it).
    serve_workers: int = Field(default=1, ge=1, le=64)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, created once."""
    return Settings()
