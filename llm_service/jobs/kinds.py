"""What a job kind is: its queue table, the claim a worker hands it, and the registry of kinds.

A kind is registered with the worker by name (the `kind` the claim function returns, migration
008 `JOB_KINDS`); the worker claims only registered kinds and dispatches by the registry, never
by comparing strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class JobTable:
    """A queue table: its kind, its name, and the `llm_api_calls` column linking ledger rows
    to a run."""

    kind: str
    table: str
    ledger_column: str

    def __post_init__(self) -> None:
        """Table and column names go into SQL text: identifiers only (they come from code)."""
        if not (self.table.isidentifier() and self.ledger_column.isidentifier()):
            raise ValueError(f"not identifiers: {self.table!r}, {self.ledger_column!r}")


@dataclass(frozen=True)
class Claim:
    """A run this worker now holds the lease of; `lease_token` is the secret the claim returned
    (renewal, hand-back and the run's end present it; it never leaves the worker)."""

    kind: str
    run_id: UUID
    tenant_id: UUID
    takeover: bool
    lease_token: UUID = field(repr=False)


class ClaimLike(Protocol):
    """What a runner needs of a claim (a `Claim`, or a test's own record of one)."""

    @property
    def run_id(self) -> UUID:
        """The run's id."""

    @property
    def tenant_id(self) -> UUID:
        """The run's tenant."""

    @property
    def takeover(self) -> bool:
        """Whether the run's previous worker died holding it."""

    @property
    def lease_token(self) -> UUID:
        """The secret the claim returned (the row keeps only its hash)."""


class JobKind(Protocol):
    """One kind of job the worker runs: a name, a table, and how to take a claim to its end."""

    @property
    def name(self) -> str:
        """The kind as the claim function names it."""

    @property
    def table(self) -> JobTable:
        """Its queue table."""

    async def execute(self, claim: Claim) -> str:
        """Take the claimed run to a terminal state; return it ("lost"/"missing" otherwise)."""


class Registry:
    """The kinds one worker runs, by name."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        """A registry of `kinds` (names must be distinct)."""
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        """Add `kind`; a second kind of the same name is a defect."""
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        """The kind called `name`, if registered."""
        return self._kinds.get(name)

    @property
    def names(self) -> list[str]:
        """The registered kinds' names (what this worker claims)."""
        return list(self._kinds)

    def __iter__(self) -> Iterator[JobKind]:
        """The registered kinds."""
        return iter(self._kinds.values())
