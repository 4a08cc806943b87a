"""The records the store keeps and returns. Times are timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A time in UTC; a naive one is taken to be UTC already (SQLite's engine used to read it as the machine's
    local time, Postgres's as the session's zone, UTC: now one meaning on both)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Every time a record holds: aware and in UTC, whatever the caller or an imported file gave, so both engines
#: store and compare the same instant (Postgres's binary COPY refuses a naive time for a timestamptz).
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class MemoryKind(StrEnum):
    """The MARK agent a memory came from."""

    residual = "residual"  # implied facts, corrections, what the assistant lacked
    user_question = "user_question"  # facts, terms, abbreviations, preferences the user supplied
    llm_response = "llm_response"  # what made the user accept an answer: format, constraints


class MemoryStatus(StrEnum):
    active = "active"
    superseded = "superseded"  # a changed fact replaced it; kept for history, left out of search
    disputed = "disputed"  # contradicted by a less trusted source; searchable, flagged


class Source(BaseModel):
    """Where a memory was learned: the conversation and the turns it was extracted from."""

    conversation_id: str | None = None
    turn_ids: list[str] = Field(default_factory=list)


class NewMemory(BaseModel):
    """What a caller gives to `add`: the store fills in ids, times and counters."""

    text: str
    user_id: str
    kind: MemoryKind = MemoryKind.user_question
    agent_id: str | None = None
    session_id: str | None = None
    trust: float = Field(default=0.6, ge=0.0, le=1.0)
    source: Source = Field(default_factory=Source)
    metadata: dict[str, Any] = Field(default_factory=dict)
    valid_from: UtcDatetime | None = None


#: What a change does to a user's notes (see `MemoryChange`).
ChangeAction = Literal["add", "confirm", "supersede", "dispute"]


class MemoryChange(BaseModel):
    """One decision about a user's notes, applied by `MemoryStore.apply` with the rest of its batch (a memory
    builder's decisions for one extraction) in one transaction.

    add: store ``memory``. confirm: ``target_id`` was stated again (``memory``, the note as restated, is added
    instead if the target is gone). supersede: ``memory`` replaces ``target_id``, which is kept as history.
    dispute: ``memory`` contradicts the more trusted ``target_id``; it is stored flagged as disputed.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    action: ChangeAction
    memory: NewMemory | None = None
    target_id: str | None = None
    reason: str = ""
    #: The new note's vector when the caller has it already (a builder searched with it): not embedded again.
    embedding: np.ndarray | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _needs(self) -> MemoryChange:
        if self.action != "confirm" and self.memory is None:
            raise ValueError(f"a change that does {self.action!r} needs the new note (memory)")
        if self.action != "add" and not self.target_id:
            raise ValueError(f"a change that does {self.action!r} needs the note it is about (target_id)")
        return self


class Memory(BaseModel):
    """A stored memory: one atomic insight about one user."""

    model_config = ConfigDict(frozen=False)

    id: str
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    kind: MemoryKind
    text: str
    status: MemoryStatus = MemoryStatus.active
    created_at: UtcDatetime
    updated_at: UtcDatetime
    last_confirmed_at: UtcDatetime | None = None
    confirm_count: int = 0
    last_recalled_at: UtcDatetime | None = None
    recall_count: int = 0
    trust: float = 0.6
    valid_from: UtcDatetime
    valid_until: UtcDatetime | None = None
    superseded_by: str | None = None
    source: Source = Field(default_factory=Source)
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding_model: str


class AppliedChange(BaseModel):
    """What `MemoryStore.apply` did for one change: ``action`` is "add" where the target was gone or had been
    superseded meanwhile (``reason`` says so); ``memory`` is the note written (added, confirmed, superseding or
    disputed) as stored after the change."""

    action: ChangeAction
    memory: Memory
    target_id: str | None = None
    reason: str = ""


class Turn(BaseModel):
    """A raw conversation message, stored before any LLM call so nothing can be lost."""

    id: str
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    role: str
    content: str
    created_at: UtcDatetime
    extraction_status: str = "pending"  # pending | done | failed | skipped
    attempts: int = 0
    last_error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: The note that superseded a fact stated in this turn: the turn is kept, recall marks it as not current.
    outdated_by: str | None = None
    #: Store order (monotonic across sessions); neighbours of a turn are found by it. Not exported.
    seq: int | None = Field(default=None, exclude=True)


class HistoryEvent(BaseModel):
    """One change to a memory, with its reason: the audit trail."""

    id: str
    memory_id: str
    user_id: str
    event: str  # add | update | confirm | supersede | dispute | delete | trust | import
    old_text: str | None = None
    new_text: str | None = None
    reason: str = ""
    actor: str = "api"
    created_at: UtcDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class Feedback(BaseModel):
    """A user's verdict on a reply, linked to the memories that were used in it."""

    id: str
    user_id: str
    response_id: str
    memory_ids: list[str] = Field(default_factory=list)
    value: int  # +1 good, -1 bad
    comment: str = ""
    created_at: UtcDatetime


class ScoreBreakdown(BaseModel):
    """Every component of a search score, so a ranking can be explained and audited."""

    similarity: float  # cosine between query and memory
    dense_rank: int | None = None
    keyword_rank: int | None = None
    rrf: float = 0.0
    relevance: float  # fused relevance in [0, 1]
    recency: float  # forgetting curve R = exp(-days / strength)
    strength_days: float
    age_days: float
    frequency: float
    trust: float
    final: float


class SearchHit(BaseModel):
    memory: Memory
    score: float
    explain: ScoreBreakdown | None = None


class EpisodeHit(BaseModel):
    """A raw turn found by episode search, with how each ranker placed it (1 = best; None = not found by it)."""

    turn: Turn
    score: float
    similarity: float = 0.0
    dense_rank: int | None = None
    keyword_rank: int | None = None
    #: (previous, next) turn id in the session when the search looked them up (hybrid mode), else None.
    neighbours: tuple[str | None, str | None] | None = None


class Page(BaseModel):
    items: list[Memory]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        nxt = self.offset + len(self.items)
        return nxt if nxt < self.total else None


class CheckReport(BaseModel):
    ok: bool
    memories: int
    vectors: int
    missing_vectors: list[str] = Field(default_factory=list)  # in SQLite, not in the vector index
    orphan_vectors: list[str] = Field(default_factory=list)  # in the vector index, not in SQLite
    pending_outbox: int = 0
    set_aside: int = 0  # vector writes the index refused, waiting for `check --repair` (never blocking others)
    unusable_embeddings: list[str] = Field(default_factory=list)  # stored vector missing or not the model's size
    fts_ok: bool = True
    problems: list[str] = Field(default_factory=list)


class PurgeReport(BaseModel):
    user_id: str
    memories: int
    turns: int
    history: int
    feedback: int


class ForgetPlan(BaseModel):
    """What a forget would remove: shown to the user before it happens (`mark memory forget --about`)."""

    user_id: str
    about: str | None = None
    memories: list[Memory] = Field(default_factory=list)
    #: Turns that mention the topic (`about`), beside the notes' source turns (found when the plan is applied).
    turns: list[Turn] = Field(default_factory=list)


class ForgetReport(BaseModel):
    """What a forget removed. Holds no forgotten text: safe to log and to print as JSON."""

    user_id: str
    memories: list[str] = Field(default_factory=list)  # ids of the notes removed
    redacted_memories: list[str] = Field(default_factory=list)  # notes that kept their other facts
    turns: list[str] = Field(default_factory=list)  # ids of the turns redacted where the fact stood
    history: int = 0  # history events whose text was scrubbed
    feedback: int = 0  # feedback comments scrubbed
    fingerprints: int = 0  # records added to what the user forgot (hashed tokens, no text)
    chat_threads: int = 0  # checkpointed chat threads rewritten (filled in by mark_agents)
    #: Old text -> redacted text of what was rewritten, for the chat state (mark_agents); never serialised.
    _replacements: dict[str, str] = PrivateAttr(default_factory=dict)
    #: The fingerprints this forget recorded (hashed tokens), for the chat state; never serialised.
    _fingerprints: list[Any] = PrivateAttr(default_factory=list)
