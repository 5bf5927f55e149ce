"""The analyst evaluation: `python -m bench.eval` (also run by `make bench`).

Starts an embedded PostgreSQL, migrates it, writes `demo-data` for a new tenant, asks every
question of `bench.eval.questions` as an investigation (the real runner and tools), and scores
each answer: it must name the expected entity and state the expected figure (within a
tolerance), both computed by the evaluation's own SQL. Scored for the deterministic analyst,
and for the model named by LLM_MODEL when it is set (spend bounded: EVAL_MAX_USD in all,
EVAL_RUN_CENTS per question). Per-question results go to their section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from bench.eval.expected import Facts
from bench.eval.questions import EvalQuestion, build
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.investigations.runner import InvestigationRunner
from llm_service.jobs.kinds import Claim
from llm_service.settings import Settings
from llm_service.tenants.service import create_tenant

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Analyst evaluation (`python -m bench.eval`)"
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")


def numbers(text: str) -> list[float]:
    """Every number written in a text (thousands separators allowed)."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def score(q: EvalQuestion, answer: str) -> dict[str, Any]:
    """Whether an answer names the entity and states the figure (and says what it must)."""
    lowered = answer.lower()
    entity = not q.entities or any(e.lower() in lowered for e in q.entities)
    figure = any(abs(n - q.figure) <= q.tolerance for n in numbers(answer))
    said = not q.must_say or any(w in lowered for w in q.must_say)
    return {"entity": entity, "figure": figure, "said": said, "ok": entity and figure and said}


async def ask(
    pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    runner: InvestigationRunner,
    tenant_id: UUID,
    question: str,
    max_cost_cents: Decimal,
) -> dict[str, Any]:
    """Run one investigation to its end; its status, answer text and cost."""
    async with tenant_transaction(pool, tenant_id) as conn:
        # Created with the columns the application role may write, then claimed by this runner.
        run_id = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms,"
            " max_steps) VALUES ($1, $2, $3, 60000, 8) RETURNING id",
            tenant_id,
            question,
            max_cost_cents,
        )
    # The lease as the claim takes it: a fresh token, the row keeping its hash (which only the
    # claim, or the owner, may write).
    token = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = $2,"
            " lease_expires_at = now() + interval '1 minute',"
            " lease_token_hash = sha256(uuid_send($3::uuid)) WHERE id = $1",
            run_id,
            runner.worker,
            token,
        )
    status = await runner.run(Claim("investigation", run_id, tenant_id, False, token))
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT result, cost_cents, degraded, reason FROM investigations WHERE id = $1", run_id
        )
        tools = await conn.fetchval(
            "SELECT count(*) FROM investigation_tool_calls WHERE investigation_id = $1", run_id
        )
    result = row["result"] if isinstance(row["result"], dict) else json.loads(row["result"] or "{}")
    claims = [f["claim"] for f in result.get("findings", [])]
    return {
        "status": status,
        "degraded": row["degraded"],
        "reason": row["reason"],
        "cost_cents": str(row["cost_cents"]),
        "tool_calls": tools,
        "answer": " ".join([result.get("summary", ""), *claims]),
    }


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the data, ask every question of each analyst, score the answers."""
    data_dir = Path(tempfile.mkdtemp(prefix="eval-"))
    server = start_embedded(data_dir, cleanup="delete")
    try:
        owner = embedded_url(server)
        migrate.upgrade(owner)
        base = Settings(llm_model=None)
        urls = resolve_urls(base, owner)
        owner_pool = await create_pool(urls.owner, application_name="eval-owner", max_size=2)
        app_pool = await create_pool(urls.app, application_name="eval-app", max_size=4)
        try:
            tenant = await create_tenant(owner_pool, "eval")
            async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
                summary = await generate_demo_data(
                    conn, tenant.tenant_id, events=args.events, seed=args.seed
                )
            anomalies = {a.kind: a.as_dict() for a in summary.anomalies}
            today = datetime.now(UTC).date()
            async with owner_pool.acquire() as conn:
                questions = await build(Facts(conn, tenant.tenant_id), today, anomalies)
            analysts: list[tuple[str, InvestigationRunner, Decimal]] = [
                ("deterministic", InvestigationRunner(app_pool, None, "eval-worker"), Decimal(1))
            ]
            model = os.environ.get("LLM_MODEL")
            if model:
                from llm_service.llm.pricing import gateway_from_settings

                settings = base.model_copy(update={"llm_model": model})
                gateway = gateway_from_settings(settings, app_pool)
                cents = Decimal(os.environ.get("EVAL_RUN_CENTS", "5"))
                analysts.append(
                    (model, InvestigationRunner(app_pool, gateway, "eval-worker"), cents)
                )
            limit_usd = Decimal(os.environ.get("EVAL_MAX_USD", "1.00"))
            results: list[dict[str, Any]] = []
            spent: dict[str, Decimal] = {}
            for q in questions:
                entry: dict[str, Any] = {
                    "kind": q.kind,
                    "question": q.text,
                    "entities": list(q.entities),
                    "figure": q.figure,
                    "tolerance": q.tolerance,
                    "what": q.what,
                }
                for name, runner, cents in analysts:
                    if name != "deterministic" and spent.get(name, Decimal(0)) / 100 >= limit_usd:
                        entry[name] = {"skipped": "spend limit reached"}
                        continue
                    answer = await ask(
                        app_pool, owner_pool, runner, tenant.tenant_id, q.text, cents
                    )
                    spent[name] = spent.get(name, Decimal(0)) + Decimal(answer["cost_cents"])
                    entry[name] = {**answer, **score(q, answer["answer"])}
                results.append(entry)
        finally:
            await app_pool.close()
            await owner_pool.close()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "date": today.isoformat(),
        "events": args.events,
        "seed": args.seed,
        "analysts": [a[0] for a in analysts],
        "spent_usd": {k: str(v / 100) for k, v in spent.items()},
        "anomalies": anomalies,
        "results": results,
    }


def tally(run: dict[str, Any], analyst: str) -> dict[str, Any]:
    """Correct answers overall and per planted anomaly."""
    scored = [r for r in run["results"] if "ok" in r.get(analyst, {})]
    ok = sum(1 for r in scored if r[analyst]["ok"])
    kinds: dict[str, list[int]] = {}
    for r in scored:
        kinds.setdefault(r["kind"], [0, 0])
        kinds[r["kind"]][1] += 1
        kinds[r["kind"]][0] += int(r[analyst]["ok"])
    degraded = sum(1 for r in scored if r[analyst].get("degraded"))
    return {"ok": ok, "asked": len(scored), "kinds": kinds, "degraded": degraded}


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    if "skipped" in result:
        return "skipped"
    mark = "pass" if result["ok"] else "FAIL"
    missing = [k for k in ("entity", "figure", "said") if not result[k]]
    mark += f" (no {', '.join(missing)})" if missing else ""
    # A model run the deterministic analyst had to finish is not the model's answer.
    return mark + (" degraded" if result.get("degraded") and result["cost_cents"] != "0" else "")


def markdown(run: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """bench/RESULTS.md: scores, then one row per question."""
    lines = [
        SECTION,
        "",
        "`python -m bench.eval` (also in `make bench`): questions about the planted anomalies and "
        "ordinary facts of `demo-data`; an answer is correct when it names the expected entity "
        "and states the expected figure (within the tolerance), both computed by the "
        "evaluation's own SQL (bench/eval/expected.py).",
        "",
        f"Run on {run['date']}: {run['events']:,} demo events, seed {run['seed']}.",
        "",
        "### Scores",
        "",
        "| analyst | correct | per anomaly (correct / asked) | runs degraded |",
        "|---|---|---|---|",
    ]
    rows = [("before (deterministic)", baseline, "deterministic")] if baseline else []
    rows += [(a, run, a) for a in run["analysts"]]
    for label, data, analyst in rows:
        assert data is not None
        t = tally(data, analyst)
        kinds = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in t["kinds"].items())
        pct = 100 * t["ok"] / t["asked"] if t["asked"] else 0
        lines.append(
            f"| {label} | {t['ok']}/{t['asked']} ({pct:.0f}%) | {kinds} | {t['degraded']} |"
        )
    if baseline and baseline.get("note"):
        lines += ["", f"Before: {baseline['note']}."]
    spend = {k: v for k, v in run["spent_usd"].items() if k != "deterministic"}
    if spend:
        lines += ["", "Model spend: " + ", ".join(f"{k} ${v}" for k, v in spend.items())]
    else:
        lines += ["", "No model scored: LLM_MODEL was not set for this run."]
    lines += [
        "",
        "Other sizes and seeds: `python -m bench.eval --events 1000 --seed 3 --out /tmp/r.md`.",
    ]
    lines += ["", "### Per question", ""]
    header = "| # | kind | question | expected | " + " | ".join(run["analysts"])
    if baseline:
        header += " | before"
    lines += [header + " |", "|" + "---|" * (4 + len(run["analysts"]) + bool(baseline))]
    before = {r["question"]: r for r in (baseline or {}).get("results", [])}
    for i, r in enumerate(run["results"], 1):
        expected = f"{'/'.join(r['entities']) or '-'}: {r['figure']:,} ({r['what']})"
        cells = [_cell(r.get(a)) for a in run["analysts"]]
        if baseline:
            cells.append(_cell(before.get(r["question"], {}).get("deterministic")))
        text = r["question"].replace("|", "/")
        lines.append(f"| {i} | {r['kind']} | {text} | {expected} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_section(document: str, section: str) -> str:
    """`document` with its analyst-evaluation section replaced by `section` (or appended)."""
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(SECTION)), None)
    if start is None:
        return document.rstrip("\n") + "\n\n" + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "\n".join(lines[end:])
    return "\n".join(lines[:start]) + "\n" + section + ("\n" + rest + "\n" if rest else "")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the evaluation and write its results."""
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--baseline", type=Path, default=ROOT / "bench" / "eval" / "before.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run = asyncio.run(evaluate(args))
    baseline = json.loads(args.baseline.read_text()) if args.baseline.exists() else None
    if args.json:
        args.json.write_text(json.dumps(run, indent=1, default=str))
    existing = args.out.read_text() if args.out.exists() else "# Benchmark results\n"
    args.out.write_text(replace_section(existing, markdown(run, baseline)))
    for analyst in run["analysts"]:
        t = tally(run, analyst)
        print(
            f"{analyst}: {t['ok']}/{t['asked']} correct ({t['degraded']} runs degraded); "
            f"per anomaly {t['kinds']}"
        )
    print(f"written {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
