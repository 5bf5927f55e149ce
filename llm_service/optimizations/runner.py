"""Run one claimed budget optimisation job to a terminal state: figures, proposal, rationale.

The figures and the proposal are deterministic (SQL sums in a READ ONLY transaction under the
job's tenant, then `allocate`); only the rationale comes from the model, within a ceiling of
min(the job's max cost, $0.30) and a deadline of at most 60 s. With no model, or the tenant's
monthly cap spent, or the model failing, the rationale is written by a template (`degraded`).
A job taken over from a dead worker is simply run again (it is cheap and idempotent: recomputed
and overwritten); what its earlier attempts spent counts against its ceiling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.ceiling import CeilingReached, RunCeiling
from budgets.money import cents_to_usd
from llm_service.costs.ledger_repository import MonthlyCapExceeded, cap_status
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.db.queries import set_statement_timeout
from llm_service.db.retry import OUTAGE_WAIT_S, retry_through_outage
from llm_service.jobs.kinds import Claim, ClaimLike, JobTable
from llm_service.jobs.runtime import LEASE_SECONDS, JobRuntime, Supervised
from llm_service.llm.gateway import LlmGateway, LlmRequest, NoModelConfigured, ProviderUnavailable
from llm_service.llm.structured import InvalidModelOutput, complete_structured
from llm_service.optimizations import rationale, repository
from llm_service.optimizations.figures import build_proposal
from llm_service.optimizations.schemas import MAX_COST_USD, RationaleOutput

_log = logging.getLogger(__name__)

TIMEOUT_S = 60.0
# The one asyncio.timeout over a job allows this much beyond its limit for settling records.
TIMEOUT_GRACE_S = 1.0
# A job whose worker died this many times is ended instead of run again (a poison pill).
MAX_ATTEMPTS = 3
FIGURES_STATEMENT_TIMEOUT_MS = 20_000


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its state, why, the deterministic proposal and the rationale."""

    status: str
    reason: str | None
    degraded: bool
    recommendations: dict[str, Any] | None
    rationale: RationaleOutput | None


class _Progress:
    """What the work has produced so far (kept when it is cut short)."""

    recommendations: dict[str, Any] | None = None


def _templated(status: str, reason: str, recommendations: dict[str, Any] | None) -> Outcome:
    """An outcome whose rationale (if there is a proposal) is written by the template."""
    text = rationale.templated(recommendations) if recommendations is not None else None
    return Outcome(status, reason, True, recommendations, text)


async def run_budget_optimization(
    pool: asyncpg.Pool, gateway: LlmGateway | None, worker: str, claim: ClaimLike
) -> str:
    """Take a claimed job to a terminal state; returns that state ("lost"/"missing" otherwise)."""
    runner = OptimizationRunner(pool, gateway, worker)
    try:
        return await runner.run(claim)
    finally:
        await runner.runtime.aclose()


class OptimizationRunner:
    """Runs claimed budget optimisation jobs for one worker process (the kind
    "budget_optimization")."""

    name = "budget_optimization"
    table: JobTable = repository.TABLE

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: LlmGateway | None,
        worker: str,
        *,
        runtime: JobRuntime | None = None,
    ) -> None:
        """A runner recording through `pool`; `gateway` None means templated rationales only;
        `runtime` is the worker's (shared lease keeper), else one of its own."""
        self.runtime = runtime or JobRuntime(pool, worker, lease_s=LEASE_SECONDS)
        self.pool = pool
        self.gateway = gateway
        self.worker = worker

    async def execute(self, claim: Claim) -> str:
        """The job kind's entry: take a claim to its end (a takeover is simply run again)."""
        return await self.run(claim)

    @property
    def timeout_s(self) -> float:
        """The job's wall-clock limit: 60 s, or less if the settings say so."""
        if self.gateway is None:
            return TIMEOUT_S
        return min(TIMEOUT_S, self.gateway.settings.investigation_timeout_s)

    async def run(self, claim: ClaimLike) -> str:
        """Run the job this worker holds the lease of (a takeover is simply run again)."""
        with presenting_run_token(claim.lease_token):
            return await self._run(claim)

    async def _run(self, claim: ClaimLike) -> str:
        job_id, tenant_id = claim.run_id, claim.tenant_id
        async with tenant_transaction(self.pool, tenant_id) as conn:
            row = await repository.get(conn, job_id)
            prior = await repository.spent_cents(conn, job_id)
            held = await repository.holds_lease(conn, job_id, self.worker, claim.lease_token)
        if row is None:
            return "missing"
        if not held:
            return "lost"
        if row["attempts"] > MAX_ATTEMPTS:
            ended = Outcome(
                "failed",
                f"the job was interrupted {row['attempts'] - 1} times; not run again",
                False,
                None,
                None,
            )
            await self.runtime.record_end(self._finish(claim, ended))
            return ended.status
        started = time.monotonic()
        progress = _Progress()
        supervised = await self.runtime.supervise(
            claim,
            self._work(row, tenant_id, prior, progress, started + self.timeout_s),
            self.timeout_s + TIMEOUT_GRACE_S,
        )
        if supervised.ended in ("lost", "cancel"):  # the jobs table has no cancel request
            return "lost"
        outcome = self._outcome(supervised, progress, job_id)
        await self.runtime.record_end(self._finish(claim, outcome))
        return outcome.status

    def _outcome(
        self, supervised: Supervised[Outcome], progress: _Progress, job_id: UUID
    ) -> Outcome:
        """The terminal state of the supervised work (the proposal so far when cut short)."""
        if supervised.ended == "done":
            assert supervised.result is not None
            return supervised.result
        if supervised.ended == "timed_out":
            return _templated(
                "timed_out",
                f"the job reached its {self.timeout_s:g} s limit",
                progress.recommendations,
            )
        # A defect or an outage: end the job, never leave it running.
        exc = supervised.error
        _log.error("budget optimisation failed", exc_info=exc, extra={"job_id": str(job_id)})
        return Outcome(
            "failed",
            f"the job failed: {type(exc).__name__}",
            False,
            progress.recommendations,
            None,
        )

    async def _work(
        self,
        row: dict[str, Any],
        tenant_id: UUID,
        prior_cents: Decimal,
        progress: _Progress,
        deadline: float,
    ) -> Outcome:
        """Figures, proposal, then the rationale (model or template)."""
        params: dict[str, Any] = row["params"]
        recommendations = await self._propose(tenant_id, params)
        progress.recommendations = recommendations
        reason = await self._degraded_reason(tenant_id)
        if reason is not None or self.gateway is None:
            return _templated("succeeded", reason or "no LLM model is configured", recommendations)
        limit = min(cents_to_usd(row["max_cost_cents"]), MAX_COST_USD)
        left = limit - cents_to_usd(prior_cents)
        if left <= 0:
            return _templated(
                "budget_exhausted",
                f"earlier attempts of this job already spent its ${limit} ceiling",
                recommendations,
            )
        request = LlmRequest(
            tenant_id=tenant_id,
            endpoint="budget_optimizations",
            messages=rationale.messages(recommendations),
            max_tokens=rationale.MAX_TOKENS,
            budget_optimization_job_id=row["id"],
            min_output_tokens=rationale.MIN_OUTPUT_TOKENS,
        )
        try:
            output, _ = await complete_structured(
                self.gateway, request, RationaleOutput, ceiling=RunCeiling(left), deadline=deadline
            )
        except CeilingReached as exc:
            return _templated(
                "budget_exhausted", f"the job's ceiling was reached: {exc.reason}", recommendations
            )
        except TimeoutError:
            return _templated(
                "timed_out", "no time was left for the model's rationale", recommendations
            )
        except MonthlyCapExceeded as exc:
            return _templated("succeeded", str(exc), recommendations)
        except (ProviderUnavailable, InvalidModelOutput, NoModelConfigured) as exc:
            return _templated("succeeded", f"the rationale is templated: {exc}", recommendations)
        except Exception as exc:  # a provider's non-transient error: the figures still stand
            _log.warning("budget optimisation rationale failed: %s", type(exc).__name__)
            return _templated(
                "succeeded",
                f"the model call failed ({type(exc).__name__}); the rationale is templated",
                recommendations,
            )
        return Outcome("succeeded", None, False, recommendations, output)

    async def _propose(self, tenant_id: UUID, params: dict[str, Any]) -> dict[str, Any]:
        """The deterministic proposal, from sums read in one READ ONLY transaction."""
        period = params["period"]
        start = datetime.fromisoformat(period["start"]).replace(tzinfo=UTC)
        end = datetime.fromisoformat(period["end"]).replace(tzinfo=UTC)
        async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
            await set_statement_timeout(conn, FIGURES_STATEMENT_TIMEOUT_MS)
            sums = await repository.channel_sums(conn, params["model_type"], start, end)
            codes = sorted({s.channel for s in sums} | set(params.get("bounds") or {}))
            names = await repository.display_names(conn, codes)
            paid = await repository.paid_channels(conn, codes)
        recommendations, _ = build_proposal(params, sums, names, paid=paid)
        return recommendations

    async def _degraded_reason(self, tenant_id: UUID) -> str | None:
        """Why the rationale must be templated before trying the model, if it must."""
        if self.gateway is None or not self.gateway.model:
            return "no LLM model is configured; the rationale is templated"
        async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
            status = await cap_status(conn, tenant_id)
        if status.available_cents <= 0:
            return "the tenant's monthly LLM cap is spent; the rationale is templated"
        return None

    async def _finish(self, claim: ClaimLike, outcome: Outcome) -> None:
        """Record the terminal state (the ledger keeps the job's spend: the sum of its calls)."""
        await retry_through_outage(
            lambda: self._record_finish(claim, outcome),
            within_s=OUTAGE_WAIT_S,
            what="finish budget optimisation",
        )

    async def _record_finish(self, claim: ClaimLike, outcome: Outcome) -> None:
        job_id, tenant_id = claim.run_id, claim.tenant_id
        async with tenant_transaction(self.pool, tenant_id) as conn:
            row = await repository.get(conn, job_id)
            if row is None:
                return
            recommendations = dict(outcome.recommendations) if outcome.recommendations else None
            if recommendations is not None:
                recommendations["risks"] = outcome.rationale.risks if outcome.rationale else []
            done = await repository.finish(
                conn,
                job_id,
                self.worker,
                claim.lease_token,
                status=outcome.status,
                reason=outcome.reason,
                recommendations=recommendations,
                rationale=outcome.rationale.rationale if outcome.rationale else None,
                degraded=outcome.degraded,
            )
        if not done:
            _log.warning("budget optimisation %s ended after its lease was lost", job_id)
