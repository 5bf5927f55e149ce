"""The interface every embedding model of the explanation cache implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors; vectors of different `model_id`s are never compared."""

    @property
    def model_id(self) -> str:
        """The id stored with every vector (vectors of other models are never compared)."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every vector this embedder returns."""
        ...

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed `texts`, one L2-normalised vector per text, in order."""
        ...
