"""A second OS process for the cross-process single-flight test (run by test_explanation_flight.py).

explanation_flight_process.py APP_URL API_KEY BODY_JSON REQUESTS DELAY_S
    Builds the real application on its own pool, with OpenAI mocked by respx (DELAY_S seconds a
    call), prints "ready", waits for a line on stdin, then sends REQUESTS concurrent identical
    requests and prints their statuses, cache results, summaries and latencies, and the number
    of provider calls, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx
import respx
from explanation_helpers import OPENAI_URL, FakeModel, model_settings, serve

from llm_service.db.pool import create_pool
from llm_service.settings import Settings


async def _main(
    url: str, api_key: str, body: dict[str, object], requests: int, delay: float
) -> None:
    os.environ["OPENAI_API_KEY"] = "sk-test"
    settings = model_settings(Settings(llm_model=None, app_database_url=url))
    pool = await create_pool(url, application_name="explanation-flight-process", max_size=8)
    fake = FakeModel(delay)
    try:
        with respx.mock(assert_all_called=False) as mock:
            mock.post(OPENAI_URL).mock(side_effect=fake)
            async with serve(settings, pool) as (_, client):
                print("ready", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
                headers = {"Authorization": f"Bearer {api_key}"}
                responses: list[httpx.Response] = await asyncio.gather(
                    *(
                        client.post("/v1/explanations", json=body, headers=headers, timeout=60)
                        for _ in range(requests)
                    )
                )
    finally:
        await pool.close()
    print(
        json.dumps(
            {
                "status": [r.status_code for r in responses],
                "cache": [r.json().get("cache") for r in responses],
                "summary": [r.json().get("explanation", {}).get("summary") for r in responses],
                "latency_ms": [r.json().get("latency_ms") for r in responses],
                "calls": fake.calls,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(
        _main(
            sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        )
    )
