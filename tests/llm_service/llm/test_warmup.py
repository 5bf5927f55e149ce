"""After start-up the first call loads nothing: no tokenizer encoding, no litellm import.

Each check runs in a fresh interpreter: in this test process another test may already have
loaded the encodings, which would make the check pass for the wrong reason. The probe counts
tiktoken's BPE loads (observed, not timed) during what a first request does: count its tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from llm_service.db.urls import DatabaseUrls

_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    import asyncpg
    import tiktoken.load, tiktoken_ext.openai_public as public

    mode, app_url = sys.argv[1], sys.argv[2]
    loads = []
    real = tiktoken.load.load_tiktoken_bpe

    def counting(*args, **kwargs):
        loads.append(str(args[0] if args else kwargs))
        return real(*args, **kwargs)

    tiktoken.load.load_tiktoken_bpe = counting
    public.load_tiktoken_bpe = counting

    from llm_service.settings import Settings

    settings = Settings(
        llm_model="openai/gpt-4o-mini",
        embedding_model="text-embedding-3-small",
        app_database_url=app_url,
    )
    first = [{"role": "user", "content": "first request"}]

    async def main():
        pool = await asyncpg.create_pool(app_url, min_size=1, max_size=2)
        try:
            if mode == "lifespan":  # the service's start, as `serve` runs it
                from llm_service.api.app import create_app

                app = create_app(settings, pool=pool, run_workers=False)
                async with app.router.lifespan_context(app):
                    at_start, imported = len(loads), "litellm" in sys.modules
                    app.state.gateway.count_tokens(first, None)
                    app.state.gateway._litellm.token_counter(
                        model=settings.embedding_model, text="an embedded question"
                    )
            elif mode == "warm_up":
                from llm_service.llm.warmup import warm_up
                from llm_service.llm.pricing import gateway_from_settings

                warm_up(settings)
                at_start, imported = len(loads), "litellm" in sys.modules
                gateway_from_settings(settings, pool).count_tokens(first, None)
            else:  # the factory alone: the gateway, built, has loaded no encoding yet
                from llm_service.llm.pricing import gateway_from_settings

                gateway = gateway_from_settings(settings, pool)
                at_start, imported = len(loads), "litellm" in sys.modules
                gateway.count_tokens(first, None)
        finally:
            await pool.close()
        print(json.dumps({"at_start": at_start, "imported": imported, "first": loads[at_start:]}))

    asyncio.run(main())
    """
)


def _probe(mode: str, urls: DatabaseUrls) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, urls.app],
        capture_output=True,
        text=True,
        check=True,
        timeout=110,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_gateway_factory_alone_leaves_the_encodings_to_the_first_call(
    database_urls: DatabaseUrls,
) -> None:
    probe = _probe("factory", database_urls)
    assert probe["first"]  # the probe can see a load on a first call


def test_after_warm_up_the_first_call_loads_no_encoding(database_urls: DatabaseUrls) -> None:
    probe = _probe("warm_up", database_urls)
    assert probe["at_start"] and probe["imported"]
    assert probe["first"] == []


def test_after_the_app_started_the_first_request_loads_nothing(
    database_urls: DatabaseUrls,
) -> None:
    probe = _probe("lifespan", database_urls)
    assert probe["imported"]  # litellm and its price map were loaded by the start
    assert probe["at_start"]  # ... and the encodings
    assert probe["first"] == []
