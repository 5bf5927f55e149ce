"""Question embeddings for the explanation cache: the provider adapter and an in-process LRU.

`EMBEDDING_MODEL=local` (the default) is `cache.embedding_local` (loaded once at start-up, run in
a worker thread). Any other value is a litellm embedding model called through the gateway
(`LlmGateway.embed`, priced and recorded per tenant): `GatewayEmbedder` adapts it to
`cache.embedder.Embedder`, one instance per tenant, since every call is billed to one.

`QuestionVectors` keeps recent vectors of normalised questions so a repeated question is never
embedded twice: bounded (LRU), keyed by tenant, model and text. Keyed by tenant although the
vector of a text does not depend on who asks: a shared entry would let one tenant time whether
another asked the same question lately, and would bill one tenant for another's embeddings.
Concurrent requests for the same missing key share one embedding call.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from cache.embedder import Embedder
from llm_service.llm.gateway import LlmGateway
from llm_service.llm.litellm_setup import load_litellm

#: How long one provider embedding call (with its retries) may take.
EMBED_TIMEOUT_S = 10.0
_ZERO = Decimal(0)


def provider_dimension(model: str) -> int | None:
    """The vector size litellm's price map gives for an embedding model, if any."""
    costs = load_litellm().model_cost
    for name in (model, model.split("/", 1)[-1]):
        size = costs.get(name, {}).get("output_vector_size")
        if isinstance(size, int) and size > 0:
            return size
    return None


def _unit(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to length 1 (providers mostly send unit vectors already)."""
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        raise ValueError("the provider returned a zero embedding")
    return [x / norm for x in vector]


class GatewayEmbedder(Embedder):
    """A litellm embedding model through the gateway, billed to one tenant."""

    def __init__(self, gateway: LlmGateway, tenant_id: UUID, *, dimension: int | None) -> None:
        """An embedder for `tenant_id`; `dimension` is learned from the first answer if None."""
        self._gateway = gateway
        self._tenant_id = tenant_id
        self._dimension = dimension
        self.spent_usd = _ZERO

    @property
    def model_id(self) -> str:
        """The configured embedding model (stored with every vector)."""
        return self._gateway.settings.embedding_model

    @property
    def dimension(self) -> int:
        """The vector length (known from the price map, else after the first call)."""
        if self._dimension is None:
            raise RuntimeError("the dimension is known after the first embedding")
        return self._dimension

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed `texts` with the provider: priced, recorded, unit vectors."""
        vectors, _ = await self.embed_with_cost(texts)
        return vectors

    async def embed_with_cost(self, texts: Sequence[str]) -> tuple[list[list[float]], Decimal]:
        """Embed `texts` and say what it cost, USD."""
        deadline = time.monotonic() + EMBED_TIMEOUT_S
        raw, cost = await self._gateway.embed(self._tenant_id, list(texts), deadline=deadline)
        self.spent_usd += cost
        vectors = [_unit(v) for v in raw]
        if len(vectors) != len(texts):
            raise ValueError("the provider returned a different number of embeddings")
        for vector in vectors:
            if self._dimension is None:
                self._dimension = len(vector)
            elif len(vector) != self._dimension:
                raise ValueError(
                    f"the provider returned {len(vector)} dimensions, not {self._dimension}"
                )
        return vectors, cost


class QuestionVectors:
    """An LRU of question embeddings (float32) by (tenant, model, normalised text)."""

    def __init__(self, max_entries: int) -> None:
        """An empty cache holding at most `max_entries` vectors."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[tuple[UUID, str, str], array[float]] = OrderedDict()
        self._pending: dict[tuple[UUID, str, str], asyncio.Future[array[float]]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Vectors held."""
        return len(self._entries)

    def peek(self, tenant_id: UUID, model_id: str, text: str) -> array[float] | None:
        """The vector of `text` if held now (counted as a hit), else None; never embeds."""
        key = (tenant_id, model_id, text)
        vector = self._entries.get(key)
        if vector is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return vector

    async def get(
        self, tenant_id: UUID, embedder: Embedder, text: str
    ) -> tuple[array[float], Decimal]:
        """The vector of `text` (normalised already) and what embedding it cost now (USD)."""
        key = (tenant_id, embedder.model_id, text)
        vector = self._entries.get(key)
        if vector is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return vector, _ZERO
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            try:
                return await asyncio.shield(pending), _ZERO
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The embedding we waited for was cancelled with its own request: do it here.
                return await self.get(tenant_id, embedder, text)
        self.misses += 1
        future: asyncio.Future[array[float]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            if isinstance(embedder, GatewayEmbedder):
                vectors, cost = await embedder.embed_with_cost([text])
            else:
                vectors, cost = await embedder.aembed([text]), _ZERO
            vector = array("f", vectors[0])
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[key]
        future.set_result(vector)
        self._entries[key] = vector
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return vector, cost
