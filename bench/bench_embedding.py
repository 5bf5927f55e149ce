"""Load time and per-query latency of the offline embedding model (figures only, no pass/fail).

Run from the repository root: `python -m bench.bench_embedding`.
"""

from __future__ import annotations

import statistics
import time

CALLS = 200
WARMUP = 10
QUESTIONS = (
    "Why did paid social revenue drop last week?",
    "Which campaigns drove the most conversions in October?",
    "How did the email channel perform compared with last month?",
    "What is the average order value for returning customers on mobile?",
    "how many dead events are pending",
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    """Print import and load time, then median/p95 latency of `embed_one` over 200 calls."""
    start = time.perf_counter()
    from cache.embedding_local import LocalEmbedder

    imported = time.perf_counter()
    embedder = LocalEmbedder()
    loaded = time.perf_counter()
    embedder.embed_one(QUESTIONS[0])
    first = time.perf_counter() - loaded

    for i in range(WARMUP):
        embedder.embed_one(QUESTIONS[i % len(QUESTIONS)])
    timings = []
    for i in range(CALLS):
        t0 = time.perf_counter()
        embedder.embed_one(QUESTIONS[i % len(QUESTIONS)])
        timings.append(time.perf_counter() - t0)
    batch = [QUESTIONS[i % len(QUESTIONS)] for i in range(32)]
    t0 = time.perf_counter()
    embedder.embed(batch)
    batch_time = time.perf_counter() - t0

    p95 = statistics.quantiles(timings, n=100)[94]
    print(f"model: {embedder.model_id} (dimension {embedder.dimension})")
    print(f"import (numpy, onnxruntime, tokenizers): {_ms(imported - start)}")
    print(f"load (read + sha256 + tokenizer + onnxruntime session): {_ms(loaded - imported)}")
    print(f"first embed_one: {_ms(first)}")
    print(
        f"embed_one over {CALLS} calls: median {_ms(statistics.median(timings))}, "
        f"p95 {_ms(p95)}, max {_ms(max(timings))}"
    )
    print(f"embed of 32 texts in one batch: {_ms(batch_time)}")


if __name__ == "__main__":
    main()
