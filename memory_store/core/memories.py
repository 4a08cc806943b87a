"""Memories: add, edit, confirm, supersede, dispute, delete, and the reads of one user's notes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from memory_store.backend import MemoryFilter, Transaction
from memory_store.core.base import StoreBase, new_id
from memory_store.errors import InvalidInput, NotFound
from memory_store.errors import first_error as _first_error
from memory_store.importing import embedding_problem
from memory_store.models import (
    AppliedChange,
    HistoryEvent,
    Memory,
    MemoryChange,
    MemoryKind,
    MemoryStatus,
    NewMemory,
    Page,
    as_utc,
)
from memory_store.validation import check_optional_id, check_scope_id, check_text


class MemoryOps(StoreBase):
    # -- writes -------------------------------------------------------------------------------------

    def add(
        self,
        text: str,
        user_id: str,
        *,
        kind: MemoryKind | str = MemoryKind.user_question,
        agent_id: str | None = None,
        session_id: str | None = None,
        trust: float = 0.6,
        metadata: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        reason: str = "added",
        actor: str = "api",
    ) -> Memory:
        """Add one memory. See `add_many` for batches (one transaction, one embedding pass)."""
        check_scope_id(user_id)
        check_text(text)
        try:
            item = NewMemory(
                text=text,
                user_id=user_id,
                kind=MemoryKind(kind),
                agent_id=agent_id,
                session_id=session_id,
                trust=trust,
                metadata=metadata or {},
                **({"source": source} if source else {}),
            )
        except ValueError as exc:
            raise InvalidInput(f"invalid memory: {_first_error(exc)}") from None
        return self.add_many([item], reason=reason, actor=actor)[0]

    def add_many(self, items: Sequence[NewMemory], *, reason: str = "added", actor: str = "api") -> list[Memory]:
        """Add a batch atomically: either every memory is stored (rows, history, vectors) or none is."""
        if not items:
            return []
        texts: list[str] = []  # (not (item, text) pairs: a batch's tuples lived long enough to be promoted by the GC)
        for n, item in enumerate(items):
            try:
                texts.append(_checked_text(item))
            except InvalidInput as exc:
                raise InvalidInput(f"{_where('item', n, len(items))}{exc}") from None
        vectors = self.embed(texts)
        now = self.clock()
        memories = [self._record(item, text, now) for item, text in zip(items, texts, strict=True)]
        # Each history event is made as its row is written and dropped right after: a batch's events held in a list
        # lived through a young collection and were promoted, which brings Python's next full collection (~0.2 s
        # over the embedding model's objects) sooner.
        self._insert(memories, vectors, (self._history(m, "add", reason, actor, new=m.text) for m in memories))
        return memories

    def _record(self, item: NewMemory, text: str, now: datetime) -> Memory:
        """A new stored record from what the caller gave (text already validated)."""
        return Memory(
            id=new_id(),
            user_id=item.user_id,
            agent_id=item.agent_id,
            session_id=item.session_id,
            kind=item.kind,
            text=text,
            created_at=now,
            updated_at=now,
            trust=item.trust,
            valid_from=item.valid_from or now,
            source=item.source,
            metadata=item.metadata,
            embedding_model=self.embedder.model_id,
        )

    def _insert(self, memories: list[Memory], vectors: np.ndarray, events: Iterable[HistoryEvent]) -> None:
        with self.backend.transaction() as tx:
            tx.insert_memories(memories, list(vectors))
            tx.add_history(events)

    def update(
        self,
        memory_id: str,
        user_id: str,
        *,
        text: str | None = None,
        trust: float | None = None,
        metadata: dict[str, Any] | None = None,
        reason: str = "updated",
        actor: str = "api",
    ) -> Memory:
        """Edit a memory in place (a correction). A *changed fact* should use `supersede`, which keeps the old."""
        old = self._require(memory_id, user_id)
        changes: dict[str, Any] = {}
        new = old.model_copy()
        if text is not None:
            new.text = check_text(text)
            vec = self.embed([new.text])[0]
            changes.update(text=new.text, embedding=vec, embedding_model=self.embedder.model_id)
        if trust is not None:
            if not 0.0 <= trust <= 1.0:
                raise InvalidInput("trust must be between 0 and 1")
            new.trust = changes["trust"] = trust
        if metadata is not None:
            new.metadata = changes["metadata"] = metadata
        if not changes:
            return old
        new.updated_at = changes["updated_at"] = self.clock()
        with self.backend.transaction() as tx:
            tx.update_memory(user_id, memory_id, changes)
            tx.add_history([self._history(new, "update", reason, actor, old=old.text, new=new.text)])
        return self._require(memory_id, user_id)

    def confirm(self, memory_id: str, user_id: str, *, reason: str = "stated again", actor: str = "api") -> Memory:
        """The fact was stated again: strength, frequency and trust go up, the forgetting clock restarts."""
        m = self._require(memory_id, user_id)
        with self.backend.transaction() as tx:
            self._confirm_in(tx, m, self.clock(), reason, actor)
        return self._require(memory_id, user_id)

    def _confirm_in(self, tx: Transaction, m: Memory, now: datetime, reason: str, actor: str) -> None:
        trust = min(1.0, m.trust + (1.0 - m.trust) * 0.15)
        tx.confirm_memory(m.user_id, m.id, trust, now)
        tx.add_history([self._history(m, "confirm", reason, actor, old=m.text, new=m.text)])

    def supersede(
        self, memory_id: str, user_id: str, new: NewMemory, *, reason: str = "fact changed", actor: str = "api"
    ) -> Memory:
        """Replace a changed fact: the new memory is added, the old one kept with valid_until and superseded_by."""
        old = self._require(memory_id, user_id)
        if new.user_id != user_id:
            raise InvalidInput("a memory can only be superseded within the same user")
        text = _checked_text(new)
        vec = self.embed([text])
        created = self._record(new, text, self.clock())
        with self.backend.transaction() as tx:
            self._supersede_in(tx, old, created, vec[0], reason, actor)
        return created

    def _supersede_in(
        self, tx: Transaction, old: Memory, created: Memory, vector: np.ndarray, reason: str, actor: str
    ) -> None:
        now = created.created_at
        tx.insert_memories([created], [vector])
        tx.update_memory(
            old.user_id,
            old.id,
            {
                "status": MemoryStatus.superseded.value,
                "valid_until": now,
                "superseded_by": created.id,
                "updated_at": now,
            },
        )
        tx.add_history(
            [
                self._history(created, "add", reason, actor, new=created.text, supersedes=old.id),
                self._history(
                    old, "supersede", reason, actor, old=old.text, new=created.text, superseded_by=created.id
                ),
            ]
        )
        # The turns the old value came from stay searchable, marked as no longer current.
        tx.mark_turns_outdated(old.user_id, old.source.turn_ids, created.id)

    def dispute(
        self, memory_id: str, user_id: str, *, reason: str, trust_penalty: float = 0.2, actor: str = "api"
    ) -> Memory:
        """Flag a memory contradicted by a less trusted source: kept and searchable, marked, trust lowered."""
        m = self._require(memory_id, user_id)
        with self.backend.transaction() as tx:
            self._dispute_in(tx, m, trust_penalty, self.clock(), reason, actor)
        return self._require(memory_id, user_id)

    def _dispute_in(
        self, tx: Transaction, m: Memory, trust_penalty: float, now: datetime, reason: str, actor: str
    ) -> Memory:
        """Flag ``m`` disputed within ``tx``; returns it as changed."""
        changes = {"status": MemoryStatus.disputed, "trust": max(0.0, m.trust - trust_penalty), "updated_at": now}
        tx.update_memory(m.user_id, m.id, {**changes, "status": MemoryStatus.disputed.value})
        tx.add_history([self._history(m, "dispute", reason, actor, old=m.text, new=m.text)])
        return m.model_copy(update=changes)

    def apply(self, user_id: str, changes: Sequence[MemoryChange], *, actor: str = "api") -> list[AppliedChange]:
        """Apply a batch of decisions about one user's notes (a memory builder's, for one extraction) in one
        transaction: every change is stored or none is. Targets are read inside the transaction, so a change whose
        target is gone, or was superseded meanwhile (by another writer or an earlier change of the batch), adds its
        note instead. New notes without an ``embedding`` are embedded in one pass."""
        check_scope_id(user_id)
        texts: list[str | None] = []
        for n, change in enumerate(changes):
            try:
                check_optional_id(change.target_id, "memory id")
                item = change.memory
                if item is None:
                    texts.append(None)
                    continue
                if item.user_id != user_id:
                    raise InvalidInput("a change's note must belong to the user the changes are applied for")
                texts.append(_checked_text(item))
                if change.embedding is not None:
                    problem = embedding_problem(np.asarray(change.embedding), self.embedder.dim)
                    if problem:
                        raise InvalidInput(
                            f"{problem}; {self.embedder.model_id} makes {self.embedder.dim}-dimensional unit vectors"
                        )
            except InvalidInput as exc:
                raise InvalidInput(f"{_where('change', n, len(changes))}{exc}") from None
        vectors = [
            np.asarray(change.embedding, dtype=np.float32)
            if change.embedding is not None and text is not None
            else None
            for change, text in zip(changes, texts, strict=True)
        ]
        missing = [n for n, text in enumerate(texts) if text is not None and vectors[n] is None]
        if missing:
            for n, vector in zip(missing, self.embed([texts[n] or "" for n in missing]), strict=True):
                vectors[n] = vector
        now = self.clock()
        applied: list[AppliedChange] = []
        with self.backend.transaction() as tx:
            for change, text, vector in zip(changes, texts, vectors, strict=True):
                applied.append(self._apply_one(tx, user_id, change, text, vector, now, actor))
        return applied

    def _apply_one(
        self,
        tx: Transaction,
        user_id: str,
        change: MemoryChange,
        text: str | None,
        vector: np.ndarray | None,
        now: datetime,
        actor: str,
    ) -> AppliedChange:
        action, reason = change.action, change.reason
        target = tx.get_memory(change.target_id, user_id) if change.target_id else None
        if action != "add" and (target is None or target.status == MemoryStatus.superseded):
            if change.memory is None:
                raise NotFound(f"no memory {change.target_id!r} to confirm for this user")
            action, reason = "add", f"{reason}; target gone, added instead".lstrip("; ")
        if action == "confirm":
            assert target is not None
            self._confirm_in(tx, target, now, reason, actor)
            confirmed = tx.get_memory(target.id, user_id)
            assert confirmed is not None
            return AppliedChange(action=action, memory=confirmed, target_id=target.id, reason=reason)
        assert change.memory is not None and text is not None and vector is not None
        created = self._record(change.memory, text, now)
        if action == "supersede":
            assert target is not None
            self._supersede_in(tx, target, created, vector, reason, actor)
        else:
            tx.insert_memories([created], [vector])
            tx.add_history([self._history(created, "add", reason, actor, new=text)])
            if action == "dispute":  # the new note is the one flagged: it contradicts a more trusted one
                created = self._dispute_in(tx, created, 0.0, now, reason, actor)
        return AppliedChange(action=action, memory=created, target_id=change.target_id, reason=reason)

    def adjust_trust(
        self, memory_ids: Iterable[str], user_id: str, delta: float, *, reason: str, actor: str = "api"
    ) -> list[Memory]:
        out = []
        with self.backend.transaction() as tx:
            for mid in memory_ids:
                m = tx.get_memory(mid, user_id)
                if m is None:
                    continue
                trust = min(1.0, max(0.0, m.trust + delta))
                tx.update_memory(user_id, mid, {"trust": trust, "updated_at": self.clock()})
                tx.add_history([self._history(m, "trust", reason, actor, old=f"{m.trust:.3f}", new=f"{trust:.3f}")])
                out.append(m.model_copy(update={"trust": trust}))
        return out

    def mark_recalled(self, memory_ids: Iterable[str], user_id: str) -> None:
        """The memories were used in a reply: recall count up, the forgetting clock restarts."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return
        check_scope_id(user_id)
        with self.backend.transaction() as tx:
            tx.mark_recalled(user_id, ids, self.clock())

    def delete(self, memory_id: str, user_id: str, *, reason: str = "forgotten", actor: str = "api") -> None:
        """Remove a memory. Its history (with the old text and the reason) stays until the user is purged."""
        m = self._require(memory_id, user_id)
        with self.backend.transaction() as tx:
            tx.delete_memory(user_id, memory_id)
            tx.add_history([self._history(m, "delete", reason, actor, old=m.text)])

    # -- reads --------------------------------------------------------------------------------------

    def get(self, memory_id: str, user_id: str) -> Memory:
        return self._require(memory_id, user_id)

    def resolve_id(self, short: str, user_id: str) -> str:
        """Expand an id as typed in the CLI within the user's scope: the whole id, its short form (the end, as lists
        show it: `short_id`) or a unique start."""
        check_scope_id(user_id)
        short = short.strip()
        matches = self.backend.resolve_short_id(short, user_id) if short else []
        if not matches:
            raise NotFound(f"no memory {short!r} for this user")
        if len(matches) > 1:
            raise InvalidInput(f"memory id {short!r} matches more than one memory; give more characters")
        return matches[0]

    def list(
        self,
        user_id: str,
        *,
        kinds: Sequence[MemoryKind | str] | None = None,
        session_id: str | None = None,
        include_history: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Memories of one user, newest first, a page at a time."""
        check_scope_id(user_id)
        if limit < 1 or offset < 0:
            raise InvalidInput("limit must be >= 1 and offset >= 0")
        flt = memory_filter(kinds, session_id, None, None, None, include_history)
        items, total = self.backend.list_memories(user_id, flt, limit, offset)
        return Page(items=items, total=total, offset=offset, limit=limit)

    def history(
        self, user_id: str, memory_id: str | None = None, *, limit: int = 1000, offset: int = 0
    ) -> list[HistoryEvent]:
        """The audit trail of one user (or one memory): add, update, confirm, supersede, dispute, delete."""
        check_scope_id(user_id)
        return self.backend.history(user_id, memory_id, limit, offset)

    def count(self, user_id: str, *, include_history: bool = False) -> int:
        return self.list(user_id, include_history=include_history, limit=1).total


def _checked_text(item: NewMemory) -> str:
    """A new note's text, checked with its user, agent and session ids (InvalidInput says which is wrong)."""
    text = check_text(item.text)
    check_scope_id(item.user_id)
    check_optional_id(item.agent_id, "agent id")
    check_optional_id(item.session_id, "session id")
    return text


def _where(what: str, n: int, count: int) -> str:
    """The prefix naming the bad element of a batch ("item 3: "), empty for a batch of one."""
    return f"{what} {n}: " if count > 1 else ""


def memory_filter(
    kinds: Sequence[MemoryKind | str] | None,
    session_id: str | None,
    agent_id: str | None,
    since: datetime | None,
    until: datetime | None,
    include_history: bool,
) -> MemoryFilter:
    """The backend filter of a read: searchable statuses (superseded ones with ``include_history``) and the rest."""
    statuses = [MemoryStatus.active, MemoryStatus.disputed]
    if include_history:
        statuses.append(MemoryStatus.superseded)
    kind_values: tuple[str, ...] = ()
    if kinds:
        try:
            kind_values = tuple(MemoryKind(k).value for k in kinds)
        except ValueError as exc:
            raise InvalidInput(f"unknown memory kind: {exc}") from None
    return MemoryFilter(
        statuses=tuple(s.value for s in statuses),
        kinds=kind_values,
        session_id=session_id,
        agent_id=agent_id,
        # A caller's time without a zone is UTC, as in the records (models.as_utc): compared with them as it is, a
        # naive bound raised a TypeError.
        since=None if since is None else as_utc(since),
        until=None if until is None else as_utc(until),
    )
