"""Explanations for dashboards: the cache-first hit path, single-flight misses, degraded answers.

The hit path (what a repeated dashboard request costs):
1. without a question or with the stored one: ONE statement outside a transaction block
   (`hit_repository`: the key's tenant set, the fingerprint, the lookup; see there why that
   is safe); an unknown or revoked key is 401. A paraphrase whose vector is held in-process
   takes a second such statement (the nearest rows). A miss there keeps its fingerprint:
2. ONE READ ONLY transaction whose first statement resolves the key and sets the tenant
   (`db.pool.key_transaction`), the request resolved (`resolve`; channel codes are checked
   once, then known in-process), `data_fingerprint` and `cache.store.lookup` without a vector;
3. only if that misses and the question is one the analyser reads (`cache.question_match`),
   it is embedded (or found in the in-process LRU, `QuestionVectors`) and the nearest stored
   questions are read: the matcher serves one only on positive evidence (in the response's
   `cache_match`); a question in another language is never embedded for a lookup;
4. a hit is counted in memory (`HitCounter`, flushed in the background) and returned.
Nothing touches the model, the analytics queries or the budget before the lookup misses.

A miss goes through `SingleFlight.get_or_compute`, keyed by `CacheScope.flight_key(fingerprint)`:
one caller per scope and data computes (in this process, and across processes through a
PostgreSQL advisory lock); the others wait up to `explanation_flight_wait_s` and look again.
The advisory lock's connection is held during the model call, so it comes from a SEPARATE small
pool (`explanation_flight_pool_size` connections): compute draws from the main pool only, so a
burst of distinct misses can never starve the queries its own leaders need. The answer is
stored under the fingerprint the flight was keyed by, so every waiter finds it.

Degraded answers (no model, the tenant's cap spent, the provider down, output invalid after
the repair, a call over the per-call ceiling, or a flight that took too long) are written from
the data by `deterministic.summarise`, marked `degraded`, and never stored in the cache. While a
flight's waiters wake up, they share its leader's degraded answer (in memory, for requests that
were already waiting), so a provider outage costs one failed call per flight, not one per waiter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import asyncpg

from budgets.ceiling import RunCeiling
from budgets.money import usd_to_cents
from cache.embedder import Embedder
from cache.embedding_local import MODEL_ID as LOCAL_MODEL_ID
from cache.embedding_local import get_local_embedder
from cache.hits import HitCounter
from cache.question_match import analysable
from cache.scope import CacheScope, normalise_question
from cache.single_flight import SingleFlight, SingleFlightTimeout
from llm_service.costs.ledger_repository import cap_status
from llm_service.db.pool import create_pool, key_transaction, tenant_transaction
from llm_service.errors import InvalidRequest, Unauthorized
from llm_service.explanations import cache_repository as store
from llm_service.explanations.cache_repository import CacheTransactions
from llm_service.explanations.data import (
    ExplanationQuery,
    SubjectData,
    fingerprint,
    fingerprint_args,
    gather,
    today_utc,
)
from llm_service.explanations.deterministic import degraded_reason, summarise
from llm_service.explanations.embeddings import GatewayEmbedder, QuestionVectors, provider_dimension
from llm_service.explanations.flight_lock_repository import PgFlightLocks
from llm_service.explanations.hit_repository import (
    hit_in_one_statement,
    nearest_in_one_statement,
)
from llm_service.explanations.prompt import PROMPT_VERSION, ModelExplanation, messages
from llm_service.explanations.resolve import ChannelCodes, resolve
from llm_service.explanations.schemas import (
    CacheMatch,
    Explanation,
    ExplanationRequest,
    ExplanationResponse,
    PeriodOut,
)
from llm_service.llm.gateway import LlmGateway, LlmRequest, NoModelConfigured, ProviderUnavailable
from llm_service.llm.structured import complete_structured
from llm_service.logging_setup import TENANT_ID
from llm_service.metrics import CACHE_LOOKUPS
from llm_service.settings import Settings
from llm_service.tenants.service import UNKNOWN_KEY_MESSAGE

_log = logging.getLogger(__name__)
ENDPOINT = "explanations"
_ZERO = Decimal(0)
# A leader's degraded answer is shared with its waiters for this long at most.
_SHARED_DEGRADED_S = 60.0
_NO_TENANT = UUID(int=0)


@dataclass
class Timings:
    """Where a request's time went, in milliseconds by phase (for Server-Timing and the bench)."""

    phases: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to phase `name`."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds * 1000.0

    def header(self) -> str:
        """The phases as a Server-Timing header value."""
        return ", ".join(f"{name};dur={ms:.2f}" for name, ms in self.phases.items())


@dataclass(frozen=True)
class _Outcome:
    """An explanation as served: where it came from, what it cost and what it rests on."""

    explanation: dict[str, Any]
    citations: list[Any]
    cache: Literal["hit", "miss"]
    fingerprint: str
    model: str | None
    cost_usd: Decimal = _ZERO
    degraded_reason: str | None = None
    matched: CacheMatch | None = None


@dataclass(frozen=True)
class _OneStatement:
    """What the one-statement hit found: the resolved query and the hit, or its fingerprint."""

    query: ExplanationQuery
    outcome: _Outcome | None
    fingerprint: str


def _usd_text(amount: Decimal) -> str:
    """An exact USD amount as a plain decimal string ("0", "0.00012")."""
    if amount == 0:
        return "0"
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class ExplanationService:
    """One per process: embedder, question-vector LRU, hit counter, flights and lock pool."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        gateway: LlmGateway | None,
        *,
        flight_pool: asyncpg.Pool | None = None,
        owns_flight_pool: bool = False,
        local_embedder: Embedder | None = None,
    ) -> None:
        """A service over `pool` (the application role); `flight_pool` holds the flight locks."""
        self.settings = settings
        self.pool = pool
        self.gateway = gateway
        self.flight_pool = flight_pool or pool
        self._owns_flight_pool = owns_flight_pool
        self._local_embedder = local_embedder
        self._provider_dimension: int | None = None
        self.vectors = QuestionVectors(settings.explanation_embedding_cache_size)
        self.hit_counter = HitCounter()
        self.flights = SingleFlight()
        self.channels = ChannelCodes()
        self._shared: dict[tuple[UUID, str], tuple[float, _Outcome]] = {}

    @classmethod
    async def start(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        gateway: LlmGateway | None,
        *,
        app_database_url: str | None,
    ) -> ExplanationService:
        """Load the embedder, open the flight-lock pool and start flushing hit counts."""
        local: Embedder | None = None
        if settings.embedding_model == "local":
            embedder = await asyncio.to_thread(get_local_embedder)
            await embedder.aembed(["warm up"])  # the first run allocates; do it before serving
            local = embedder
        flight_pool = None
        if app_database_url:
            flight_pool = await create_pool(
                app_database_url,
                application_name="llm-service-flights",
                min_size=1,
                max_size=settings.explanation_flight_pool_size,
                statement_timeout_ms=settings.db_statement_timeout_ms,
            )
        service = cls(
            settings,
            pool,
            gateway,
            flight_pool=flight_pool,
            owns_flight_pool=flight_pool is not None,
            local_embedder=local,
        )
        service.hit_counter.start(
            CacheTransactions(pool), interval_s=settings.explanation_hit_flush_interval_s
        )
        return service

    async def aclose(self) -> None:
        """Write the buffered hit counts and close the flight-lock pool."""
        try:
            await self.hit_counter.aclose(CacheTransactions(self.pool))
        finally:
            if self._owns_flight_pool:
                await self.flight_pool.close()

    # -- the request ------------------------------------------------------------------------

    async def explain(
        self, api_key_hash: str, body: ExplanationRequest, timings: Timings | None = None
    ) -> ExplanationResponse:
        """Explain the request's numbers for the key's tenant: cached, computed or degraded.

        A hit without a question or with the stored one is ONE statement (`hit_repository`);
        otherwise the key is resolved in the request's one transaction (`key_transaction`).
        Either way an unknown or revoked key is refused (401) before anything else is read.
        """
        started = time.perf_counter()
        timings = timings if timings is not None else Timings()
        fast = await self._hit_in_one_statement(api_key_hash, body, timings)
        if fast is not None and fast.outcome is not None:
            CACHE_LOOKUPS.labels("hit").inc()
            return self._response(fast.query, fast.outcome, started)
        known_fp = fast.fingerprint if fast is not None else None  # its exact lookup missed
        model = self.gateway.model if self.gateway is not None else None
        reason: str | None = None if model else "no_model"
        vector: Sequence[float] | None = None
        embed_cost = _ZERO
        hit: store.CacheHit | None = None
        data: SubjectData | None = None
        scope: CacheScope | None = None
        t = time.perf_counter()
        async with key_transaction(self.pool, api_key_hash, readonly=True) as (conn, tenant_id):
            timings.add("auth", time.perf_counter() - t)  # pool wait, BEGIN, key -> tenant
            if tenant_id is None:
                raise Unauthorized(UNKNOWN_KEY_MESSAGE)
            TENANT_ID.set(str(tenant_id))  # for the request's log lines
            t = time.perf_counter()
            query = resolve(body, today_utc())
            if query.channel is not None:
                await self.channels.check(conn, query.channel)
            if model:
                scope = CacheScope(
                    tenant_id=tenant_id,
                    subject=query.subject,
                    params=query.scope_params(),
                    model=model,
                    prompt_version=PROMPT_VERSION,
                )
            normalised = normalise_question(query.question)
            timings.add("prepare", time.perf_counter() - t)
            t = time.perf_counter()
            fp = known_fp
            if fp is None:
                fp = await fingerprint(conn, query)
                timings.add("fingerprint", time.perf_counter() - t)
            t = time.perf_counter()
            if scope is not None and reason is None:
                # The exact question (or no question) first: no embedding at all.
                if known_fp is None:
                    hit = await store.lookup(
                        conn,
                        scope,
                        fingerprint=fp,
                        question=query.question,
                        question_embedding=None,
                        embedding_model=self._embedding_model_id(),
                    )
                    timings.add("lookup", time.perf_counter() - t)
                t = time.perf_counter()
                if hit is None and normalised and analysable(query.question or ""):
                    # An analysable question: the nearest rows, then the matcher.
                    try:
                        vector, embed_cost = await self.vectors.get(
                            tenant_id, await self._embedder(tenant_id), normalised
                        )
                    except Exception as exc:
                        reason = degraded_reason(exc)
                    timings.add("embed", time.perf_counter() - t)
                    t = time.perf_counter()
                    if vector is not None:
                        hit = await store.lookup(
                            conn,
                            scope,
                            fingerprint=fp,
                            question=query.question,
                            question_embedding=vector,
                            embedding_model=self._embedding_model_id(),
                            same_question_read=True,  # above, or by the one statement
                        )
                        timings.add("lookup", time.perf_counter() - t)
                    else:
                        data = await gather(conn, query)
            else:
                data = await gather(conn, query)
                timings.add("data", time.perf_counter() - t)
            t = time.perf_counter()
        timings.add("commit", time.perf_counter() - t)  # COMMIT, release
        t = time.perf_counter()

        if hit is not None:
            outcome = self._served(hit, fp)
        elif data is not None:
            outcome = self._degraded(query, data, fp, reason or "no_model")
        else:
            assert scope is not None
            outcome = await self._miss(tenant_id, query, scope, fp, vector, timings)
            timings.add("miss", time.perf_counter() - t)
        outcome = dataclasses.replace(outcome, cost_usd=outcome.cost_usd + embed_cost)
        CACHE_LOOKUPS.labels("degraded" if outcome.degraded_reason else outcome.cache).inc()
        return self._response(query, outcome, started)

    # -- pieces of the request --------------------------------------------------------------

    async def _hit_in_one_statement(
        self, api_key_hash: str, body: ExplanationRequest, timings: Timings
    ) -> _OneStatement | None:
        """The common hit in one round trip, or its miss; None when the transactional path must
        do it all: no model, an invalid request (an unknown key's 401 comes before the 422), a
        channel code not known in-process yet, or a statement that did not see its tenant."""
        model = self.gateway.model if self.gateway is not None else None
        if not model:
            return None
        t = time.perf_counter()
        try:
            query = resolve(body, today_utc())
        except InvalidRequest:
            return None
        if query.channel is not None and not self.channels.known(query.channel):
            return None
        scope_key = CacheScope(
            tenant_id=_NO_TENANT,  # the key does not depend on the tenant (cache.scope)
            subject=query.subject,
            params=query.scope_params(),
            model=model,
            prompt_version=PROMPT_VERSION,
        ).scope_key()
        timings.add("prepare", time.perf_counter() - t)
        t = time.perf_counter()
        async with self.pool.acquire() as conn:
            found = await hit_in_one_statement(
                conn, api_key_hash, fingerprint_args(query), scope_key, query.question
            )
            timings.add("hit", time.perf_counter() - t)  # pool wait, key, tenant, fp, lookup
            if not found.tenant:
                raise Unauthorized(UNKNOWN_KEY_MESSAGE)
            if not found.seen_tenant:
                _log.warning("the one-statement hit did not see its tenant; taking the slow path")
                return None
            TENANT_ID.set(found.tenant)
            hit = found.hit
            vector = None if hit is not None else self._held_vector(found.tenant, query.question)
            if vector is not None:
                assert query.question is not None  # a vector is held for a question only
                t = time.perf_counter()
                model_id = self._embedding_model_id()
                tenant, hit = await nearest_in_one_statement(
                    conn, api_key_hash, found, scope_key, model_id, vector, query.question
                )
                timings.add("nearest", time.perf_counter() - t)
                if not tenant:  # revoked between the two statements
                    raise Unauthorized(UNKNOWN_KEY_MESSAGE)
        if hit is None or str(hit.tenant_id) != found.tenant:
            return _OneStatement(query, None, found.fingerprint)
        return _OneStatement(query, self._served(hit, found.fingerprint), found.fingerprint)

    def _held_vector(self, tenant: str, question: str | None) -> Sequence[float] | None:
        """The vector of a question the matcher reads, if held in-process for the tenant."""
        normalised = normalise_question(question)
        if not normalised or not analysable(question or ""):
            return None
        return self.vectors.peek(UUID(tenant), self._embedding_model_id(), normalised)

    async def _embedder(self, tenant_id: UUID) -> Embedder:
        """The embedder of this request: the local model, or the provider's billed to the tenant."""
        if self.settings.embedding_model == "local":
            if self._local_embedder is None:
                self._local_embedder = await asyncio.to_thread(get_local_embedder)
            return self._local_embedder
        if self.gateway is None:
            raise NoModelConfigured("no LLM model is configured (LLM_MODEL)")
        if self._provider_dimension is None:
            self._provider_dimension = provider_dimension(self.settings.embedding_model)
        return GatewayEmbedder(self.gateway, tenant_id, dimension=self._provider_dimension)

    def _embedding_model_id(self) -> str:
        """The id stored with every question vector."""
        model = self.settings.embedding_model
        return LOCAL_MODEL_ID if model == "local" else model

    def _served(self, hit: store.CacheHit, fp: str) -> _Outcome:
        """A cache hit as an outcome (counted, buffered, written in the background)."""
        self.hit_counter.record_hit(hit)
        return _Outcome(
            explanation=hit.explanation,
            citations=hit.citations,
            cache="hit",
            fingerprint=fp,
            model=hit.model,
            matched=CacheMatch(
                question=hit.question or None,
                relation=hit.match_relation,
                agreement=dict(hit.agreement or {}),
            ),
        )

    def _degraded(
        self,
        query: ExplanationQuery,
        data: SubjectData,
        fp: str,
        reason: str,
        cost: Decimal = _ZERO,
    ) -> _Outcome:
        """A deterministic answer from the data (never cached)."""
        return _Outcome(
            explanation=summarise(query, data, reason),
            citations=data.citations,
            cache="miss",
            fingerprint=fp,
            model=None,
            cost_usd=cost,
            degraded_reason=reason,
        )

    async def _miss(
        self,
        tenant_id: UUID,
        query: ExplanationQuery,
        scope: CacheScope,
        fp: str,
        vector: Sequence[float] | None,
        timings: Timings,
    ) -> _Outcome:
        """One computation per scope and data, shared with concurrent identical requests."""
        key = scope.flight_key(fp)
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        looked = False

        async def look_again() -> _Outcome | None:
            """The lookup for waiters (the first call is skipped: we have just missed)."""
            nonlocal looked
            if not looked:
                looked = True
                return None
            shared = self._shared.get((tenant_id, key))
            if shared is not None and shared[0] >= arrived:
                return dataclasses.replace(shared[1], cost_usd=_ZERO)
            async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
                hit = await store.lookup(
                    conn,
                    scope,
                    fingerprint=fp,
                    question=query.question,
                    question_embedding=vector,
                    embedding_model=self._embedding_model_id(),
                )
            return self._served(hit, fp) if hit is not None else None

        async def compute() -> _Outcome:
            """Gather the data, call the model, store the answer (or degrade)."""
            outcome = await self._compute(tenant_id, query, scope, fp, vector, timings)
            if outcome.degraded_reason is not None:
                self._share(tenant_id, key, outcome, loop.time())
            return outcome

        try:
            outcome, _ = await self.flights.get_or_compute(
                PgFlightLocks(self.flight_pool),
                tenant_id,
                key,
                look_again,
                compute,
                wait_timeout_s=self.settings.explanation_flight_wait_s,
            )
        except SingleFlightTimeout:
            async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
                data = await gather(conn, query)
            return self._degraded(query, data, fp, "busy")
        return outcome

    def _share(self, tenant_id: UUID, key: str, outcome: _Outcome, at: float) -> None:
        """Let the waiters of this flight take its degraded answer (and forget old ones)."""
        for stale in [k for k, (when, _) in self._shared.items() if at - when > _SHARED_DEGRADED_S]:
            del self._shared[stale]
        self._shared[(tenant_id, key)] = (at, outcome)

    async def _compute(
        self,
        tenant_id: UUID,
        query: ExplanationQuery,
        scope: CacheScope,
        fp: str,
        vector: Sequence[float] | None,
        timings: Timings,
    ) -> _Outcome:
        """The miss proper: data, budget check, the model, validation, store."""
        t = time.perf_counter()
        async with tenant_transaction(self.pool, tenant_id, readonly=True) as conn:
            data = await gather(conn, query)
            cap = await cap_status(conn, tenant_id)
        timings.add("miss.data", time.perf_counter() - t)
        t = time.perf_counter()
        if cap.available_cents <= 0:
            return self._degraded(query, data, fp, "monthly_cap_spent")
        if self.gateway is None:  # pragma: no cover - a scope implies a model
            return self._degraded(query, data, fp, "no_model")
        ceiling = RunCeiling(self.settings.llm_call_max_cost_usd)
        request = LlmRequest(
            tenant_id=tenant_id,
            endpoint=ENDPOINT,
            messages=messages(query, data),
            max_tokens=self.settings.explanation_max_tokens,
        )
        deadline = time.monotonic() + self.settings.explanation_llm_timeout_s
        try:
            answer, results = await complete_structured(
                self.gateway, request, ModelExplanation, ceiling=ceiling, deadline=deadline
            )
        except Exception as exc:
            reason = degraded_reason(exc)
            return self._degraded(query, data, fp, reason, cost=ceiling.spent)
        timings.add("miss.model", time.perf_counter() - t)
        t = time.perf_counter()
        explanation = answer.model_dump(mode="json")
        if data.caveats or data.empty:  # figures unknown (no data): low, whatever it says
            explanation["confidence"] = "low"
        cost = ceiling.spent
        normalised = normalise_question(query.question)
        try:
            if vector is None and normalised:
                # Not embedded for the lookup (an exact-only question): the row needs its vector.
                vector, embed_cost = await self.vectors.get(
                    tenant_id, await self._embedder(tenant_id), normalised
                )
                cost += embed_cost
            async with tenant_transaction(self.pool, tenant_id) as conn:
                await store.store(
                    conn,
                    scope,
                    question=query.question,
                    question_embedding=vector,
                    embedding_model=self._embedding_model_id(),
                    fingerprint=fp,
                    explanation=explanation,
                    citations=data.citations,
                    cost_cents=usd_to_cents(cost),
                    ttl_seconds=self.settings.explanation_cache_ttl_s,
                )
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            # Paid for: answer anyway; the next request computes again.
            _log.exception("storing an explanation in the cache failed")
        except (NoModelConfigured, ProviderUnavailable, TimeoutError, ValueError):
            _log.warning("embedding the question for storage failed; the answer is not cached")
        timings.add("miss.store", time.perf_counter() - t)
        return _Outcome(
            explanation=explanation,
            citations=data.citations,
            cache="miss",
            fingerprint=fp,
            model=results[-1].model,
            cost_usd=cost,
        )

    def _response(
        self, query: ExplanationQuery, outcome: _Outcome, started: float
    ) -> ExplanationResponse:
        """The API response of an outcome."""
        body = dict(outcome.explanation)
        body["citations"] = outcome.citations
        comparison = query.comparison
        return ExplanationResponse(
            subject=query.subject,
            explanation=Explanation.model_validate(body),
            cache=outcome.cache,
            degraded=outcome.degraded_reason is not None,
            degraded_reason=outcome.degraded_reason,
            cost_usd=_usd_text(outcome.cost_usd),
            model=outcome.model,
            latency_ms=round((time.perf_counter() - started) * 1000.0, 2),
            period=PeriodOut(start=query.period.start, end=query.period.end),
            comparison=(
                PeriodOut(start=comparison.start, end=comparison.end) if comparison else None
            ),
            fingerprint=outcome.fingerprint,
            cache_match=outcome.matched,
        )
