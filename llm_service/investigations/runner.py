"""Run one claimed investigation to a terminal state: lease heartbeat, cancel, limits, findings."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from budgets.ceiling import RunCeiling
from budgets.money import cents_to_usd, plain_usd
from llm_service.costs.ledger_repository import MonthlyCapExceeded, cap_status
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.db.retry import OUTAGE_WAIT_S, retry_through_outage
from llm_service.investigations import repository
from llm_service.investigations.agent import AgentLoop
from llm_service.investigations.analyst import run_degraded
from llm_service.investigations.events import EventSink
from llm_service.investigations.evidence import EvidenceLog
from llm_service.investigations.outcome import RunLimits, RunOutcome
from llm_service.investigations.report import Report
from llm_service.investigations.templates import report_from_evidence
from llm_service.investigations.understanding import ChannelInfo
from llm_service.jobs.kinds import Claim, JobTable
from llm_service.jobs.runtime import LEASE_SECONDS, JobRuntime, Supervised
from llm_service.llm.gateway import LlmGateway
from llm_service.metrics import RUN_OUTCOMES

_log = logging.getLogger(__name__)

# The one asyncio.timeout over a run allows this much beyond its limit for settling records.
TIMEOUT_GRACE_S = 1.0


class InvestigationRunner:
    """Runs claimed investigations for one worker process (the job kind "investigation")."""

    name = "investigation"
    table: JobTable = repository.TABLE

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: LlmGateway | None,
        worker: str,
        *,
        lease_s: float = LEASE_SECONDS,
        runtime: JobRuntime | None = None,
    ) -> None:
        """A runner recording through `pool`; `gateway` None means degraded runs only;
        `runtime` is the worker's (shared lease keeper), else one of its own."""
        self.runtime = runtime or JobRuntime(pool, worker, lease_s=lease_s)
        self.lease_s = self.runtime.lease_s
        self.pool = pool
        self.gateway = gateway
        self.worker = worker

    async def execute(self, claim: Claim) -> str:
        """The job kind's entry: take a claim to its end."""
        return await self.run(claim)

    async def run(self, claim: Claim) -> str:
        """Take the claimed run to a terminal state; returns that state."""
        with presenting_run_token(claim.lease_token):
            return await self._run(claim)

    async def _run(self, claim: Claim) -> str:
        run_id, tenant_id = claim.run_id, claim.tenant_id
        events = EventSink(self.pool, tenant_id, run_id)
        degraded: str | None = None
        # One transaction starts a run: its row, then (for a run it executes) whether it must
        # run degraded and its "started" event (one pooled connection, not three).
        async with tenant_transaction(self.pool, tenant_id) as conn:
            row = await repository.get(conn, run_id)
            starts = row is not None and not claim.takeover and not row["cancel_requested"]
            if row is not None and starts:
                degraded = await self._degraded_reason(conn, tenant_id)
                await events.write(conn, [("started", self._started(row))])
        if row is None:
            return "missing"
        if claim.takeover:
            return await self._end_abandoned(claim, events)
        if row["cancel_requested"]:
            await self._finish(
                claim,
                events,
                RunOutcome(
                    "cancelled", "cancelled before it started", Report(summary="Cancelled.")
                ),
                0,
            )
            return "cancelled"
        return await self._execute(row, claim, events, degraded)

    def _started(self, row: dict[str, Any]) -> dict[str, Any]:
        """The "started" event's data."""
        limits = _limits(row)
        return {
            "worker": self.worker,
            "limits": {
                "max_cost_usd": plain_usd(limits.max_cost_usd),
                "timeout_s": limits.timeout_s,
                "max_steps": limits.max_steps,
            },
        }

    async def _execute(
        self, row: dict[str, Any], claim: Claim, events: EventSink, degraded: str | None
    ) -> str:
        run_id, tenant_id = claim.run_id, claim.tenant_id
        started = time.monotonic()
        limits = _limits(row)
        ceiling = RunCeiling(limits.max_cost_usd)
        evidence = EvidenceLog(self.pool, tenant_id, run_id)
        supervised = await self.runtime.supervise(
            claim,
            self._investigate(row, tenant_id, limits, ceiling, evidence, events, started, degraded),
            limits.timeout_s + TIMEOUT_GRACE_S,
        )
        if supervised.ended == "lost":
            return "lost"
        outcome = _outcome(supervised, limits, evidence, run_id)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        await self.runtime.record_end(self._finish(claim, events, outcome, elapsed_ms))
        return outcome.status

    async def _investigate(
        self,
        row: dict[str, Any],
        tenant_id: UUID,
        limits: RunLimits,
        ceiling: RunCeiling,
        evidence: EvidenceLog,
        events: EventSink,
        started: float,
        reason: str | None,
    ) -> RunOutcome:
        today = datetime.now(UTC).date()
        if reason is not None or self.gateway is None:
            channels = await self._channels(tenant_id)
            return await run_degraded(
                evidence, row["question"], today, channels, reason or "no LLM model is configured"
            )

        async def fallback(why: str, step: int) -> RunOutcome:
            channels = await self._channels(tenant_id)
            return await run_degraded(evidence, row["question"], today, channels, why, step=step)

        loop = AgentLoop(
            self.gateway,
            evidence,
            events,
            limits,
            ceiling,
            started=started,
            today=today.isoformat(),
            fallback=fallback,
        )
        return await loop.run(row["question"])

    async def _degraded_reason(self, conn: asyncpg.Connection, tenant_id: UUID) -> str | None:
        """Why the run must run degraded (no model, the tenant's cap spent), or None."""
        if self.gateway is None:
            return "no LLM model is configured"
        status = await cap_status(conn, tenant_id)
        if status.available_cents <= 0:
            return "the tenant's monthly LLM cap is spent"
        return None

    async def _channels(self, tenant_id: UUID) -> list[ChannelInfo]:
        async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
            rows = await repository.active_channels(conn)
        return [ChannelInfo(r["code"], r["display_name"], r["family"], r["is_paid"]) for r in rows]

    async def _end_abandoned(self, claim: Claim, events: EventSink) -> str:
        """A run whose worker died, or could not record its end through a database outage (the
        same worker may then take it over): end it, never leave it running."""
        reason = (
            "the run was interrupted (its worker stopped or lost the database); "
            "ended after its lease expired"
        )
        await events.emit("note", {"message": f"{reason} (by {self.worker})"})
        outcome = RunOutcome(
            "failed",
            reason,
            Report(
                summary="The run was interrupted; see the tool calls recorded before it stopped."
            ),
        )
        await self._finish(claim, events, outcome, None)
        return "failed"

    async def _finish(
        self,
        claim: Claim,
        events: EventSink,
        outcome: RunOutcome,
        elapsed_ms: int | None,
    ) -> None:
        """Record the terminal state, waiting out a database outage of up to OUTAGE_WAIT_S."""
        done = await retry_through_outage(
            lambda: self._record_finish(claim, events, outcome, elapsed_ms),
            within_s=max(OUTAGE_WAIT_S, self.lease_s),
            what="finish investigation",
        )
        if done:
            RUN_OUTCOMES.labels("investigation", outcome.status).inc()
        else:
            _log.warning(
                "run already ended elsewhere", extra={"investigation_id": str(claim.run_id)}
            )

    async def _record_finish(
        self, claim: Claim, events: EventSink, outcome: RunOutcome, elapsed_ms: int | None
    ) -> bool:
        """Record the end (with the run's deferred events first, in the same transaction)."""
        if not events.pending:
            return await self._record_end(claim, None, outcome, elapsed_ms)
        try:
            return await self._record_end(claim, events, outcome, elapsed_ms)
        except asyncpg.InsufficientPrivilegeError:
            # The run's guard refused the deferred events: the run is no longer this claim's
            # (a finished run takes no event but its `final`). Its end is then recorded or, as
            # `finish` finds, already recorded elsewhere: without them.
            return await self._record_end(claim, None, outcome, elapsed_ms)

    async def _record_end(
        self,
        claim: Claim,
        deferred: EventSink | None,
        outcome: RunOutcome,
        elapsed_ms: int | None,
    ) -> bool:
        run_id, tenant_id = claim.run_id, claim.tenant_id
        async with tenant_transaction(self.pool, tenant_id) as conn:
            if deferred is not None:
                # Events are written while the run is running: before `finish`.
                await deferred.write(conn, [])
            if elapsed_ms is None:  # an abandoned run: timed from its recorded start
                row = await repository.get(conn, run_id)
                assert row is not None
                started = row["started_at"] or row["queued_at"]
                elapsed_ms = int((datetime.now(UTC) - started).total_seconds() * 1000)
            result = {
                "summary": outcome.report.summary,
                "findings": [f.model_dump() for f in outcome.report.findings],
            }
            recorded = await repository.finish(
                conn,
                run_id,
                self.worker,
                claim.lease_token,
                status=outcome.status,
                reason=outcome.reason,
                elapsed_ms=elapsed_ms,
                result=result,
                degraded=outcome.degraded,
            )
            if recorded is not None:
                await repository.add_event(
                    conn,
                    tenant_id,
                    run_id,
                    "final",
                    {
                        "status": outcome.status,
                        "reason": outcome.reason,
                        "cost_usd": plain_usd(cents_to_usd(recorded)),
                        "elapsed_s": elapsed_ms / 1000,
                        "degraded": outcome.degraded,
                        "findings": len(outcome.report.findings),
                    },
                )
        return recorded is not None


def _limits(row: dict[str, Any]) -> RunLimits:
    """A run's limits, from its row."""
    return RunLimits(
        max_cost_usd=cents_to_usd(row["max_cost_cents"]),
        timeout_s=row["timeout_ms"] / 1000,
        max_steps=row["max_steps"],
    )


def _outcome(
    supervised: Supervised[RunOutcome], limits: RunLimits, evidence: EvidenceLog, run_id: UUID
) -> RunOutcome:
    """The terminal state of supervised work (findings so far when it was cut short)."""
    if supervised.ended == "done":
        assert supervised.result is not None
        return supervised.result
    if supervised.ended == "timed_out":
        return RunOutcome(
            "timed_out",
            f"the run reached its {limits.timeout_s:g} s limit",
            report_from_evidence(evidence.items, "time limit reached"),
        )
    if supervised.ended == "cancel":
        return RunOutcome(
            "cancelled",
            "cancelled by the analyst",
            report_from_evidence(evidence.items, "cancelled"),
        )
    exc = supervised.error
    if isinstance(exc, MonthlyCapExceeded):
        return RunOutcome(
            "budget_exhausted",
            str(exc),
            report_from_evidence(evidence.items, "monthly cap reached"),
        )
    # A defect or an outage: end the run, never leave it running.
    _log.error(
        "investigation failed",
        exc_info=exc,
        extra={"investigation_id": str(run_id)},
    )
    return RunOutcome(
        "failed",
        f"the run failed: {type(exc).__name__}",
        report_from_evidence(evidence.items, "run failed"),
    )
