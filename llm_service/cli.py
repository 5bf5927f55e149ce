"""The `llm-service` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from llm_service.db import migrate
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.runtime import database_runtime
from llm_service.errors import ServiceError
from llm_service.settings import Settings, get_settings
from llm_service.workers.sweeper import start_sweeper


def _cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    urls = database_runtime(settings).urls
    migrate.upgrade(urls.owner)
    if settings.app_db_password:
        migrate.set_app_role_password(urls.owner, settings.app_db_role, settings.app_db_password)
    print(f"database at {', '.join(migrate.current_revisions(urls.owner))}")
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # A normal exit, so that atexit runs: it releases (and, if this process was the last user,
    # stops) the embedded server. uvicorn re-raises SIGTERM after its graceful shutdown, which
    # by default would kill the process before that.
    raise SystemExit(0)


def _in_range(flag: str, value: int, low: int, high: int) -> int:
    """`value` of `flag` if within `low`..`high`, else a clear start-up error."""
    if not low <= value <= high:
        raise ServiceError(f"{flag} must be from {low} to {high}, not {value}")
    return value


def _settings_error(exc: ValidationError) -> str:
    """One line naming each environment variable a settings error is about."""
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        # The value helps, except where it may be a secret (a password in a URL, a token).
        secret = any(word in name for word in ("PASSWORD", "SECRET", "TOKEN", "URL", "KEY"))
        value = "" if secret else f"={error.get('input')!r}"
        parts.append(f"{name}{value}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from llm_service.api.app import create_app

    # `is None`, not `or`: 0 is a value to refuse, not "unset".
    workers = _in_range(
        "--workers", settings.serve_workers if args.workers is None else args.workers, 1, 64
    )
    # Port 0 ("any free port") is refused: nobody could learn which port clients should use.
    port = _in_range("--port", settings.port if args.port is None else args.port, 1, 65535)
    if not args.no_migrate:
        _cmd_migrate(settings, args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if workers > 1:
        # N uvicorn processes on one socket, ONE database: the children get this process's
        # URLs (the embedded server it started, if any), and one of them the job worker.
        urls = database_runtime(settings).urls
        os.environ.update(
            DATABASE_URL=urls.owner, APP_DATABASE_URL=urls.app, SERVE_WORKERS=str(workers)
        )
        uvicorn.run(
            "llm_service.api.app:create_served_app",
            factory=True,
            workers=workers,
            host=args.host or settings.host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=20,
            log_config=None,
            access_log=False,
        )
        return 0
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=20,
        # Our JSON logs (configured in main) replace uvicorn's; its access log would print
        # raw query strings, ours logs the route template.
        log_config=None,
        access_log=False,
    )
    return 0


async def _with_owner_pool(
    settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[int]]
) -> int:
    pool = await create_pool(
        database_runtime(settings).urls.owner, application_name="llm-service-cli"
    )
    try:
        return await work(pool)
    finally:
        await pool.close()


def _cmd_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.tenants.service import create_tenant

    async def work(pool: asyncpg.Pool) -> int:
        created = await create_tenant(
            pool, args.name, monthly_cap_cents=args.monthly_cap_usd and args.monthly_cap_usd * 100
        )
        payload = {"tenant_id": str(created.tenant_id), "api_key": created.api_key}
        if args.json:
            print(json.dumps(payload))
        else:
            print(
                f"tenant_id: {payload['tenant_id']}\napi_key:   {payload['api_key']}  (shown once)"
            )
        return 0

    return asyncio.run(_with_owner_pool(settings, work))


def _cmd_tenants_set_cap(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.tenants.service import set_monthly_cap

    async def work(pool: asyncpg.Pool) -> int:
        await set_monthly_cap(pool, args.tenant, args.usd * 100)
        print(f"monthly cap of {args.tenant} set to ${args.usd}")
        return 0

    return asyncio.run(_with_owner_pool(settings, work))


def _cmd_demo_data(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.db.queries import set_statement_timeout
    from llm_service.demo_data import generate_demo_data
    from llm_service.tenants.repository import get_tenant

    async def work(pool: asyncpg.Pool) -> int:
        async with tenant_transaction(pool, args.tenant) as conn:
            if await get_tenant(conn, args.tenant) is None:
                raise ServiceError(f"no tenant {args.tenant}", code="not_found")
            # Large data sets take longer than the pool's per-statement limit.
            await set_statement_timeout(conn, 0)
            summary = await generate_demo_data(
                conn, args.tenant, events=args.events, seed=args.seed
            )
        print(
            json.dumps(
                summary.as_dict() if hasattr(summary, "as_dict") else str(summary),
                indent=2,
                default=str,
            )
        )
        return 0

    return asyncio.run(_with_owner_pool(settings, work))


def _cmd_verify(settings: Settings, _: argparse.Namespace) -> int:
    from llm_service.verify import render, run_checks

    async def work() -> int:
        urls = database_runtime(settings).urls
        owner = await asyncpg.connect(urls.owner)
        try:
            app = await asyncpg.connect(urls.app)
            try:
                checks = await run_checks(owner, app, settings.app_db_role)
            finally:
                await app.close()
        finally:
            await owner.close()
        print(render(checks))
        return 0 if all(c.ok for c in checks) else 1

    return asyncio.run(work())


def _cmd_costs_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.costs.reconcile import reconcile, render

    async def work() -> int:
        # As the application role: the sweep and the comparison are narrow definer functions.
        conn = await asyncpg.connect(database_runtime(settings).urls.app)
        try:
            async with conn.transaction():
                report = await reconcile(conn, args.month)
        finally:
            await conn.close()
        print(render(report))
        return 0 if report.ok else 1

    return asyncio.run(work())


def _cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.retention.service import render, run_retention

    async def work() -> int:
        # As the owner, an operator's command: the prompt purges cross every tenant, so the
        # application role may not run them (each batch is a definer function, SKIP LOCKED).
        conn = await asyncpg.connect(database_runtime(settings).urls.owner)
        try:
            report = await run_retention(
                conn,
                prompt_days=settings.retention_prompt_days
                if args.prompt_days is None
                else args.prompt_days,
                batch_size=settings.retention_batch_size
                if args.batch_size is None
                else args.batch_size,
            )
        finally:
            await conn.close()
        print(render(report))
        return 0

    return asyncio.run(work())


def _cmd_pii_scan(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.pii.scan import drain, render

    async def work() -> int:
        # As the application role: each batch is a narrow definer function (SKIP LOCKED).
        conn = await asyncpg.connect(database_runtime(settings).urls.app)
        try:
            report = await drain(conn, batch_size=args.batch_size, max_batches=args.max_batches)
        finally:
            await conn.close()
        print(render(report))
        return 0

    return asyncio.run(work())


def _cmd_db_stop(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.db.embedded import EmbeddedInUse, NotADataDirectory, stop_unused

    data_dir = settings.llm_service_data_dir
    try:
        report = stop_unused(data_dir, delete=args.delete)
    except (EmbeddedInUse, NotADataDirectory) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "stopped" if report.was_running else "was not running"
    print(
        f"embedded database in {data_dir}: {state}" + ("; data deleted" if report.deleted else "")
    )
    return 0


def _month(text: str) -> date:
    from llm_service.costs.service import parse_month

    try:
        return parse_month(text)
    except ServiceError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from llm_service.llm.pricing import gateway_from_settings
    from llm_service.llm.warmup import warm_up
    from llm_service.workers.pool_size import create_worker_pool
    from llm_service.workers.worker import Worker

    concurrency = _in_range(
        "--concurrency",
        settings.worker_concurrency if args.concurrency is None else args.concurrency,
        1,
        5_000,  # the bound of WORKER_CONCURRENCY (settings.py says why)
    )
    if settings.llm_model:
        warm_up(settings)  # before the first claim: no run pays for litellm or the tokenizers

    async def work() -> int:
        # One connection per run in flight (WORKER_POOL_SIZE), within the server's limit.
        pool = await create_worker_pool(
            database_runtime(settings).urls.app,
            settings,
            concurrency,
            application_name="llm-service-worker",
        )
        try:
            worker = Worker(
                pool,
                gateway_from_settings(settings, pool),
                concurrency=concurrency,
                lease_s=settings.worker_lease_s,
                shutdown_grace_s=settings.worker_shutdown_grace_s,
                # The lease keeper's own connection (heartbeats never wait for the pool).
                heartbeat_url=database_runtime(settings).urls.app,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            if args.once:
                print(await worker.run_once() or "queue empty")
            else:
                sweeper = start_sweeper(pool, settings.ledger_sweep_interval_s)
                try:
                    await worker.run_until_stopped()
                finally:
                    await sweeper.stop()
        finally:
            await pool.close()
        return 0

    from llm_service.workers import event_loop

    return event_loop.run(work())  # uvloop where installed, as `serve` runs its worker


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative amount: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="llm-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="migrate the database to the head (as the owner)").set_defaults(
        func=_cmd_migrate
    )

    serve = sub.add_parser("serve", help="migrate, then serve the API (and in-process workers)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int, help="1 to 65535 (default PORT)")
    serve.add_argument("--no-migrate", action="store_true")
    serve.add_argument(
        "--workers", type=int, help="serve processes sharing the socket (default SERVE_WORKERS)"
    )
    serve.set_defaults(func=_cmd_serve)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True
    )
    create = tenants.add_parser("create", help="create a tenant; prints its API key once")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print {tenant_id, api_key} as JSON")
    create.add_argument("--monthly-cap-usd", type=_usd)
    create.set_defaults(func=_cmd_tenants_create)
    cap = tenants.add_parser("set-cap", help="set a tenant's monthly LLM spending cap")
    cap.add_argument("tenant", type=UUID)
    cap.add_argument("usd", type=_usd)
    cap.set_defaults(func=_cmd_tenants_set_cap)

    demo = sub.add_parser(
        "demo-data", help="write realistic synthetic attribution data for a tenant"
    )
    demo.add_argument("--tenant", type=UUID, required=True)
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=_cmd_demo_data)

    sub.add_parser("verify", help="run the deployment checks").set_defaults(func=_cmd_verify)

    worker = sub.add_parser("worker", help="run queued investigations and jobs until stopped")
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--once", action="store_true", help="run one queued item, then exit")
    worker.set_defaults(func=_cmd_worker)

    costs = sub.add_parser("costs", help="LLM costs").add_subparsers(
        dest="costs_command", required=True
    )
    reconcile = costs.add_parser(
        "reconcile",
        help="recompute every monthly cost row from its calls; exit 1 on any difference",
    )
    reconcile.add_argument("--month", type=_month, help="only this month (YYYY-MM, UTC)")
    reconcile.set_defaults(func=_cmd_costs_reconcile)

    retention = sub.add_parser(
        "retention",
        help="purge prompts and responses past their age and expired cache entries, in batches",
    )
    retention.add_argument(
        "--prompt-days",
        type=int,
        help="keep prompts this many days (default RETENTION_PROMPT_DAYS)",
    )
    retention.add_argument("--batch-size", type=int, help="rows per batch (default 1000)")
    retention.set_defaults(func=_cmd_retention)

    pii_scan = sub.add_parser(
        "pii-scan",
        help="scan new and changed event, dead-event and ledger JSON for personal data, in batches",
    )
    pii_scan.add_argument("--batch-size", type=int, default=1000, help="rows per batch")
    pii_scan.add_argument("--max-batches", type=int, help="stop after this many batches")
    pii_scan.set_defaults(func=_cmd_pii_scan)

    db_stop = sub.add_parser(
        "db-stop",
        help="stop the embedded database (refuses while a process or client uses it)",
    )
    db_stop.add_argument(
        "--delete",
        action="store_true",
        help="then delete its data directory (LLM_SERVICE_DATA_DIR)",
    )
    db_stop.set_defaults(func=_cmd_db_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llm-service` console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "worker"):
        from llm_service.logging_setup import configure_logging

        configure_logging()
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: {_settings_error(exc)}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(settings, args)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
