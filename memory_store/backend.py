"""The backend protocol: what the store core asks of an engine (embedded SQLite + a vector index, or Postgres).

Every SQL statement lives behind it. Writes go through a transaction (``with backend.transaction() as tx:
tx.insert_memories(...)``): all or nothing, and the engine keeps its vector index in step with the rows it wrote
(SQLite: a durable outbox applied after the commit; Postgres: the vector is a column of the row). Reads are
methods of the backend; each one is scoped by the user it names, except the admin ones said so.

The core passes and receives Python values (models, datetimes, numpy vectors); encoding them is the engine's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import numpy as np

from memory_store.models import CheckReport, Feedback, HistoryEvent, Memory, MemoryKind, MemoryStatus, Turn
from memory_store.validation import user_key


@dataclass(frozen=True)
class MemoryFilter:
    """Which of a user's memories a read wants. ``ids=None``: any id; ``ids=()``: none."""

    statuses: tuple[str, ...]
    kinds: tuple[str, ...] = ()
    session_id: str | None = None
    agent_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[str, ...] | None = None

    def with_ids(self, ids: Sequence[str]) -> MemoryFilter:
        return replace(self, ids=tuple(ids))

    def admits(self, m: Memory | Candidate) -> bool:
        """The filter applied to a memory already read (what the engines' WHERE clauses compute)."""
        return (
            m.status.value in self.statuses
            and (not self.kinds or m.kind.value in self.kinds)
            and (self.session_id is None or m.session_id == self.session_id)
            and (self.agent_id is None or m.agent_id == self.agent_id)
            and (self.since is None or m.created_at >= self.since)
            and (self.until is None or m.created_at <= self.until)
            and (self.ids is None or m.id in self.ids)
        )


class Candidate:
    """A memory read for ranking: what the filter and the score look at, decoded from the row; the whole `Memory`
    is decoded (`memory()`) only for the hits a search returns, which saves most of a search's Python time."""

    __slots__ = (
        "_decode",
        "_memory",
        "_row",
        "agent_id",
        "confirm_count",
        "created_at",
        "id",
        "kind",
        "last_confirmed_at",
        "last_recalled_at",
        "recall_count",
        "session_id",
        "status",
        "trust",
    )

    def __init__(
        self,
        row: Any,
        decode: Callable[[Any], Memory],
        *,
        id: str,
        kind: MemoryKind,
        status: MemoryStatus,
        session_id: str | None,
        agent_id: str | None,
        created_at: datetime,
        last_confirmed_at: datetime | None,
        last_recalled_at: datetime | None,
        confirm_count: int,
        recall_count: int,
        trust: float,
    ) -> None:
        self._row, self._decode, self._memory = row, decode, None
        self.id, self.kind, self.status = id, kind, status
        self.session_id, self.agent_id = session_id, agent_id
        self.created_at, self.last_confirmed_at, self.last_recalled_at = created_at, last_confirmed_at, last_recalled_at
        self.confirm_count, self.recall_count, self.trust = confirm_count, recall_count, trust

    def memory(self) -> Memory:
        if self._memory is None:
            self._memory = self._decode(self._row)
        return self._memory


@dataclass
class VectorState:
    """What the engine knows of its vectors, for `check`: the core turns it into a report."""

    expected: int  # vectors the rows call for (notes and turns with an embedding)
    vectors: int  # vectors the index holds
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    pending: int = 0  # writes not applied to the index yet
    set_aside: int = 0  # writes the index refused
    set_aside_error: str = ""
    keyword_ok: bool = True


class Transaction(Protocol):
    """One write transaction. Every method writes; nothing is visible to others before the commit."""

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None:
        """A read inside the transaction (the row is locked for update where the engine can)."""
        ...

    def insert_memories(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> None: ...

    def update_memory(self, user_id: str, memory_id: str, changes: Mapping[str, Any]) -> None:
        """Set columns of one memory: text, embedding (a vector), embedding_model, trust, metadata (a dict),
        status, valid_until, superseded_by, updated_at (datetimes). A new embedding re-indexes the memory."""
        ...

    def confirm_memory(self, user_id: str, memory_id: str, trust: float, now: datetime) -> None: ...

    def mark_recalled(self, user_id: str, memory_ids: Sequence[str], now: datetime) -> None: ...

    def delete_memory(self, user_id: str, memory_id: str) -> None: ...

    def set_memory_embedding(self, key: str, memory_id: str, vector: np.ndarray, model: str) -> None:
        """A memory embedded again (``key``: its user key); the index is refilled by the caller."""
        ...

    def add_history(self, events: Iterable[HistoryEvent]) -> None:
        """Store these events, read once (a bulk add passes a generator: each event is made as its row is written)."""
        ...

    def delete_history(self, events: Sequence[HistoryEvent]) -> None:
        """Remove stored events with these events' ids (an import that replaces them)."""
        ...

    def rewrite_history(self, user_id: str, event_id: str, fields: Mapping[str, Any]) -> None: ...

    def add_turns(self, turns: Sequence[Turn], vectors: np.ndarray | None, model: str | None) -> None: ...

    def delete_turns(self, turns: Sequence[Turn]) -> None:
        """Remove stored turns with these turns' ids (an import that replaces them)."""
        ...

    def mark_turns_outdated(self, user_id: str, turn_ids: Sequence[str], note_id: str) -> None: ...

    def set_turns_status(self, turn_ids: Sequence[str], status: str, error: str | None, bump: bool) -> None: ...

    def rewrite_turn(
        self, user_id: str, turn_id: str, content: str, last_error: str | None, vector: np.ndarray
    ) -> None: ...

    def set_turn_embedding(self, key: str, turn_id: str, vector: np.ndarray, model: str) -> None: ...

    def add_feedback(self, fb: Feedback) -> None: ...

    def delete_feedback(self, fb: Feedback) -> None: ...

    def redact_feedback(self, user_id: str, feedback_id: str, comment: str) -> None: ...

    def add_forgotten(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def purge_user(self, user_id: str) -> dict[str, int]:
        """Delete every row of the user; returns counts per table (memories, turns, history, feedback, ...)."""
        ...


class Backend(Protocol):
    """An engine: rows, keyword index and vectors of every user, behind one protocol."""

    #: "sqlite" or "postgres": said in reports and benchmarks.
    engine: str
    #: Opened for reading only (every write raises StoreError).
    read_only: bool

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self, reconcile: Callable[[], CheckReport]) -> None:
        """Called once the store is built: an engine that finds an unclean shutdown calls ``reconcile``."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]: ...

    def close(self) -> None: ...

    # -- memories ----------------------------------------------------------------------------------------

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None: ...

    def resolve_short_id(self, short: str, user_id: str) -> list[str]:
        """Ids in the user's scope that end or start with ``short`` (at most 3: one means it is unambiguous)."""
        ...

    def candidates_by_ids(
        self, ids: Sequence[str], user_id: str, query: np.ndarray | None = None
    ) -> dict[str, tuple[Candidate, float | None]]:
        """The user's memories among ``ids`` (any other id is left out: the scope guard of a search), each with its
        cosine similarity to ``query`` (None without a query or a usable vector). The similarity, not the vector:
        a database computes it where the vectors are instead of sending them."""
        ...

    def filtered_vectors(self, user_id: str, flt: MemoryFilter) -> list[tuple[str, np.ndarray | None]]: ...

    def count_memories(self, user_id: str, flt: MemoryFilter) -> int: ...

    def list_memories(self, user_id: str, flt: MemoryFilter, limit: int, offset: int) -> tuple[list[Memory], int]: ...

    def keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        """Keyword search in one user's notes (``key``: the user key): (id, score) best first."""
        ...

    def nearest(self, key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest vectors under a vector key (a user's notes or episodes): (id, cosine) best first."""
        ...

    def hybrid_candidates(self, user_id: str, vector: np.ndarray, k: int, text: str, limit: int) -> HybridRead:
        """`nearest`, `keyword_search` and `candidates_by_ids` of one user's notes together, in one read where the
        engine can (see `HybridRead`)."""
        ...

    def vector_count(self, key: str) -> int: ...

    def history(self, user_id: str, memory_id: str | None, limit: int, offset: int) -> list[HistoryEvent]: ...

    def history_rows(self, user_id: str) -> list[Mapping[str, Any]]: ...

    def export_memories(self, user_id: str) -> Iterator[tuple[Memory, bytes | None]]:
        """The user's memories oldest first, each with its stored embedding as float32 bytes."""
        ...

    def memory_owners(self, ids: Sequence[str]) -> dict[str, str]:
        """Admin: id -> user id of the stored memories among ``ids`` (any user)."""
        ...

    def missing_embeddings(self, dim: int) -> list[tuple[str, str, str]]:
        """Admin: (id, user key, text) of memories without a usable embedding (none, or not ``dim`` floats)."""
        ...

    def has_memories(self) -> bool: ...

    def users(self) -> list[str]: ...

    # -- turns, feedback, forgetting --------------------------------------------------------------------

    def turns(
        self,
        user_id: str,
        session_id: str | None,
        status: str | None,
        limit: int,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Turn]: ...

    def turns_by_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[Turn, np.ndarray | None]]: ...

    def episode_keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]: ...

    def session_window(self, user_id: str, session_id: str | None, seq: int, before: int, after: int) -> list[Turn]: ...

    def turn_neighbours(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]: ...

    def history_size(self, user_id: str, cap: int | None = None) -> tuple[int, int]: ...

    def retryable_turns(self, user_id: str, max_attempts: int) -> list[Turn]: ...

    def pending_turn_users(self, max_attempts: int) -> list[str]: ...

    def missing_turn_embeddings(self, limit: int = 100_000) -> list[tuple[str, str, str]]: ...

    def feedback(self, user_id: str) -> list[Feedback]: ...

    def forget_key(self) -> bytes: ...

    def forgotten(self, user_id: str) -> list[Mapping[str, Any]]: ...

    def last_turn_seq(self, user_id: str) -> int:
        """A turn position no earlier than the user's last turn (forgetting: later turns are new statements)."""
        ...

    def turn_seqs(self, user_id: str, ids: Sequence[str]) -> dict[str, int]: ...

    # -- vectors and maintenance --------------------------------------------------------------------------

    def flush_vectors(self) -> None:
        """Apply every pending vector write now (an engine that writes vectors with their rows has none)."""
        ...

    def vector_state(self) -> VectorState: ...

    def repair_vectors(self, missing: Sequence[str], orphans: Sequence[str], refill: set[str]) -> None:
        """Make the index hold exactly the rows' vectors: add ``missing``, drop ``orphans``, and rebuild the groups
        named in ``refill`` (and those with set-aside writes) from the rows."""
        ...

    def rebuild_indexes(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the vector and keyword indexes from the rows; returns the number of vectors."""
        ...

    def scrub_user(self, user_id: str, *, refill: bool) -> None:
        """After a purge or a forget: nothing of the removed data left in the index or the engine's free space.
        ``refill``: the user's vector groups are rebuilt from the rows (a forget rewrote some of them)."""
        ...


class HybridRead(NamedTuple):
    """`Backend.hybrid_candidates`' answer: dense ids best first, keyword ids best first, the user's rows among them
    with their similarity to the query; and ``forgot_nothing``, True when the same read saw that the user has no
    forgotten facts (the search then needs no forget guard: one read fewer), False when the engine did not look."""

    dense: list[str]
    keyword: list[str]
    rows: dict[str, tuple[Candidate, float | None]]
    forgot_nothing: bool = False


class _Reads(Protocol):
    def nearest(self, key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]: ...

    def keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]: ...

    def candidates_by_ids(
        self, ids: Sequence[str], user_id: str, query: np.ndarray | None = None
    ) -> dict[str, tuple[Candidate, float | None]]: ...


def hybrid_candidates_in_three_reads(
    engine: _Reads, user_id: str, vector: np.ndarray, k: int, text: str, limit: int
) -> HybridRead:
    """`Backend.hybrid_candidates` as three reads: an engine's answer when it has no single read for it."""
    key = user_key(user_id)
    dense = [i for i, _ in engine.nearest(key, vector, k)]
    keyword = [i for i, _ in engine.keyword_search(key, text, limit)]
    return HybridRead(dense, keyword, engine.candidates_by_ids(list(dict.fromkeys(dense + keyword)), user_id, vector))
