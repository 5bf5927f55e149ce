"""Question matching: wrong hits and paraphrase recall of the cache's matcher, beside similarity.

Run from the repository root: `python -m bench.bench_question_match [--qqp-sample N]`.

Two labelled sets, each pair scored as if in a scope of its own (the first question stored, the
second asked, so the stored one is the only candidate):
1. the project's pairs, tests/cache/data/question_pairs.jsonl (by split and class);
2. Quora Question Pairs from GPTCache's benchmark, read from ../shared/data/gptcache-benchmark/
   beside the repository (skipped with a message where absent). Some QQP "non-duplicates" are
   the same question: the ids found so far are listed below and kept out of the wrong-hit count
   (both figures are printed).
Beside `cache.question_match.match`: the similarity-only matcher as GPTCache sets it (cosine
>= 0.90 on the same local embeddings); on QQP over a deterministic sample (--qqp-sample, 0 for
all 80,854 pairs: about 160,000 embeddings). Also the decision's cost per question.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cache.question_match import match
from cache.question_signature import analyse
from cache.scope import normalise_question

ROOT = Path(__file__).resolve().parents[1]
PAIRS_FILE = ROOT / "tests/cache/data/question_pairs.jsonl"
QQP_FILE = ROOT.parent / "shared/data/gptcache-benchmark/similiar_qqp_full.json.gz"
GPTCACHE_COSINE = 0.90
# QQP pairs labelled 0 (not duplicates) that are the same question on reading (case, spacing,
# singular/plural, "who's"/"who is", "0"/"zero", a/the): excluded from the wrong-hit count.
QQP_SAME_QUESTION_IDS = frozenset(
    {
        1790, 5375, 5696, 6418, 9407, 11279, 12080, 14026, 15711, 17068, 21747, 24071, 27596,
        29228, 36546, 36628, 37328, 41058, 41931, 44317, 51837, 55019, 56011, 56982, 61713,
        64823, 65070, 66849, 67216, 69283, 69824, 72284, 72829, 74573, 78096, 79891, 80066,
        80666,
    }
)  # fmt: skip


def _pairs() -> list[dict[str, Any]]:
    """The project's labelled pairs."""
    lines = PAIRS_FILE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _qqp() -> list[dict[str, Any]] | None:
    """GPTCache's QQP pairs (a tar.gz holding one JSON list), or None where absent."""
    if not QQP_FILE.exists():
        return None
    with tarfile.open(QQP_FILE) as archive:
        member = next(m for m in archive.getmembers() if m.isfile())
        handle = archive.extractfile(member)
        assert handle is not None
        data: list[dict[str, Any]] = json.load(handle)
    return data


def _cosines(texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray[Any, Any]:
    """Cosine similarity of each pair's normalised questions with the local model."""
    from cache.embedding_local import get_local_embedder

    embedder = get_local_embedder()
    a = np.asarray(embedder.embed([normalise_question(t) for t in texts_a]), dtype=np.float32)
    b = np.asarray(embedder.embed([normalise_question(t) for t in texts_b]), dtype=np.float32)
    result: np.ndarray[Any, Any] = np.sum(a * b, axis=1)
    return result


def _rate(hits: int, total: int) -> str:
    """ "h / n (p%)"."""
    return f"{hits:,} / {total:,} ({100.0 * hits / total:.2f}%)" if total else "0 / 0"


def _own_set() -> None:
    """Wrong hits and recall on the project's pairs, by split and class, beside cosine >= 0.90."""
    pairs = _pairs()
    decisions = [match(p["b"], p["a"]) for p in pairs]
    cos = _cosines([p["a"] for p in pairs], [p["b"] for p in pairs])
    same = [i for i, p in enumerate(pairs) if p["same"]]
    diff = [i for i, p in enumerate(pairs) if not p["same"]]
    print(f"project pairs: {len(pairs)} ({len(same)} paraphrases, {len(diff)} near misses)")
    print(
        f"  matcher:      wrong hits {_rate(sum(decisions[i].hit for i in diff), len(diff))}, "
        f"paraphrase recall {_rate(sum(decisions[i].hit for i in same), len(same))}"
    )
    c_wrong = sum(cos[i] >= GPTCACHE_COSINE for i in diff)
    c_right = sum(cos[i] >= GPTCACHE_COSINE for i in same)
    print(f"  cosine>=0.90: wrong hits {_rate(c_wrong, len(diff))}, "
          f"paraphrase recall {_rate(c_right, len(same))}")  # fmt: skip
    by_split: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_split[p["split"]].append(i)
    for split, ids in sorted(by_split.items()):
        s = [i for i in ids if pairs[i]["same"]]
        d = [i for i in ids if not pairs[i]["same"]]
        print(f"  split {split:16s} matcher wrong {sum(decisions[i].hit for i in d)}/{len(d)}, "
              f"recall {sum(decisions[i].hit for i in s)}/{len(s)}; cosine wrong "
              f"{sum(cos[i] >= GPTCACHE_COSINE for i in d)}/{len(d)}, recall "
              f"{sum(cos[i] >= GPTCACHE_COSINE for i in s)}/{len(s)}")  # fmt: skip
    print(
        "  by class (near misses: matcher wrong / cosine wrong; paraphrases: matcher / cosine hits)"
    )
    classes: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        classes[(p["class"], p["same"])].append(i)
    for (cls, is_same), ids in sorted(classes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        kind = "paraphrase" if is_same else "near miss "
        m_hits = sum(decisions[i].hit for i in ids)
        c_hits = sum(cos[i] >= GPTCACHE_COSINE for i in ids)
        print(f"    {kind} {cls:16s} n={len(ids):3d}  matcher {m_hits:3d}  cosine {c_hits:3d}")
    reasons = Counter(decisions[i].reason for i in same if not decisions[i].hit)
    print(f"  why paraphrases missed: {dict(reasons.most_common())}")


def _qqp_set(sample: int) -> None:
    """Wrong hits and recall on QQP (matcher on all pairs, cosine on a sample)."""
    data = _qqp()
    if data is None:
        print(f"QQP: skipped, {QQP_FILE} is absent (see the shared folder's README)")
        return
    started = time.perf_counter()
    hits = [match(d["text_b"], d["text_a"]).hit for d in data]
    elapsed = time.perf_counter() - started
    dup = [i for i, d in enumerate(data) if d["label"] == 1]
    non = [i for i, d in enumerate(data) if d["label"] == 0]
    counted = [i for i in non if i not in QQP_SAME_QUESTION_IDS]
    wrong = [i for i in non if hits[i]]
    print(f"QQP: {len(data):,} pairs ({len(dup):,} duplicates, {len(non):,} not)")
    print(
        f"  matcher: duplicates hit {_rate(sum(hits[i] for i in dup), len(dup))}; "
        f"non-duplicates hit {_rate(len(wrong), len(non))} as labelled, "
        f"{_rate(sum(hits[i] for i in counted), len(counted))} without the "
        f"{len(QQP_SAME_QUESTION_IDS)} listed same-question pairs"
    )
    unlisted = [i for i in wrong if i not in QQP_SAME_QUESTION_IDS]
    print(f"  non-duplicates hit and not in the list: {unlisted[:50]}")
    print(
        f"  matcher over all pairs: {elapsed:.1f} s ({1e6 * elapsed / len(data):.0f} us a pair,"
        " both questions analysed)"
    )
    ids = list(range(len(data)))
    if 0 < sample < len(data):
        ids = sorted(random.Random(11).sample(ids, sample))
    cos = _cosines([data[i]["text_a"] for i in ids], [data[i]["text_b"] for i in ids])
    sdup = [k for k, i in enumerate(ids) if data[i]["label"] == 1]
    snon = [k for k, i in enumerate(ids) if data[i]["label"] == 0]
    print(f"  sample of {len(ids):,} (seed 11): cosine>=0.90 duplicates hit "
          f"{_rate(sum(cos[k] >= GPTCACHE_COSINE for k in sdup), len(sdup))}, non-duplicates hit "
          f"{_rate(sum(cos[k] >= GPTCACHE_COSINE for k in snon), len(snon))}; matcher on the same "
          f"sample: {_rate(sum(hits[ids[k]] for k in sdup), len(sdup))} and "
          f"{_rate(sum(hits[ids[k]] for k in snon), len(snon))}")  # fmt: skip


def _cost() -> None:
    """What one decision costs: analysing a new question (uncached) and a match of two."""
    texts = sorted({t for p in _pairs() for t in (p["a"], p["b"])})
    analyse.cache_clear()
    timings = []
    for text in texts:
        t0 = time.perf_counter()
        analyse(text)
        timings.append(time.perf_counter() - t0)
    pairs = _pairs()
    t0 = time.perf_counter()
    for _ in range(5):
        for p in pairs:
            match(p["b"], p["a"])
    cached = (time.perf_counter() - t0) / (5 * len(pairs))
    p95 = statistics.quantiles(timings, n=100)[94]
    print(f"decision cost: analysing a question (first time) median "
          f"{1e6 * statistics.median(timings):.0f} us, p95 {1e6 * p95:.0f} us over {len(texts)} "
          f"questions; a match of two analysed questions {1e6 * cached:.1f} us")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Print the figures (no pass/fail: the tests hold the zero-wrong-hit rule)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--qqp-sample", type=int, default=4000, help="QQP pairs embedded (0=all)")
    args = parser.parse_args(argv if argv is not None else [])
    _own_set()
    _qqp_set(args.qqp_sample)
    _cost()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
