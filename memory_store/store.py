"""MemoryStore: the memory layer's one implementation (sync; `AsyncMemoryStore` derives the async API).

Write path: validate -> embed (outside any lock) -> one SQLite transaction (rows + history + vector
outbox) -> apply the outbox to the vector index. A crash after the commit leaves outbox rows that the next
open (or any search) applies, so SQLite and the vector index converge and no partial record exists.

Every read takes a user id and is scoped to it in SQL; the only calls that see several users are the
explicit admin ones (`users`, `export_jsonl(user_id=None)`, `check`, `rebuild`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock

from memory_store import forgetter, scoring
from memory_store.config import StoreSettings
from memory_store.embeddings import Embedder, get_embedder
from memory_store.errors import InvalidInput, NotFound, StoreError
from memory_store.errors import first_error as _first_error
from memory_store.forgetting import Fingerprint, ForgetGuard
from memory_store.importing import EXPORT_FORMAT, EXPORT_VERSION, embedding_problem, read_export
from memory_store.models import (
    CheckReport,
    EpisodeHit,
    Feedback,
    ForgetPlan,
    ForgetReport,
    HistoryEvent,
    Memory,
    MemoryKind,
    MemoryStatus,
    NewMemory,
    Page,
    PurgeReport,
    SearchHit,
    Turn,
    utcnow,
)
from memory_store.sqlite_backend import SQLiteDB, memory_to_row, ts
from memory_store.validation import (
    check_optional_id,
    check_scope_id,
    check_text,
    check_turn,
    episode_key,
    episode_key_of,
    user_key,
)
from memory_store.vectors import ChromaIndex, ExactIndex, VectorIndex

#: With a filter (kind, session, time), scopes up to this size are searched exactly from SQLite.
EXACT_FILTER_LIMIT = 5000
#: Vector writes wait in the (durable) outbox until this many are pending, or until the next search, check
#: or close: chroma's cost is per call and per collection, so applying writes in large groups is what makes
#: bulk adds fast. Reads are unaffected: a search applies pending writes before it queries the index.
VECTOR_FLUSH_OPS = 10_000


log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_id() -> str:
    return uuid.uuid4().hex


def _writable(home: Path, db_path: Path) -> bool:
    """Can this process write the data directory (and its database file)? If not, the store opens read-only."""
    return os.access(home, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK))


class MemoryStore:
    """Per-user long-term memory: SQLite for truth, a vector index for similarity, hybrid decay-ranked search."""

    def __init__(
        self,
        settings: StoreSettings | None = None,
        *,
        home: str | Path | None = None,
        embedder: Embedder | None = None,
        vector_index: VectorIndex | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if settings is None:
            settings = StoreSettings(**({"home": Path(home)} if home is not None else {}))
        elif home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        settings = settings.model_copy(update={"home": Path(settings.home).expanduser()})
        self.settings = settings
        self.home = settings.home
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {self.home}: {exc}") from exc
        self.clock = clock
        self._embedder = embedder
        #: A data directory this process cannot write is opened for reading: list, search, history and export
        #: work, every write raises StoreError.
        self.read_only = not _writable(self.home, settings.db_path)
        self.db = SQLiteDB(settings.db_path, read_only=self.read_only)
        if vector_index is None:
            if settings.vector_backend == "chroma" and not self.read_only:
                vector_index = ChromaIndex(settings.vectors_path)
            else:
                # Exact search over the embeddings in SQLite; also the read-only fallback (chroma writes on open).
                vector_index = ExactIndex(loader=lambda key: self.db.user_vectors(key))
        self.index = vector_index
        self._vlock = threading.RLock()
        self._vfile = FileLock(str(self.home / "vectors.lock"), timeout=120, thread_local=False)
        self._epoch = self.db.vector_epoch()
        self._marker: Path | None = None
        self._forget_key: bytes | None = None
        if self.read_only:
            log.info("%s is read-only: opened for reading, with exact vector search", self.home)
            return
        self._sync_vectors(force=True)
        self._mark_open()

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedding_model, self.settings.embedding_device)
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)

    def _sync_vectors(self, force: bool = False) -> None:
        """Bring the vector index up to date: pick up other processes' writes, apply pending outbox ops.

        Ops the index refuses are set aside (`vector_quarantine`), so one bad write never blocks other users, a
        read or a repair. If the outbox cannot be cleared (a full disk), the ops stay pending and are applied
        again later (they are idempotent); the caller's read goes on.
        """
        if self.read_only:
            return  # nothing can be applied; the exact index reads SQLite, the truth, directly
        if not force:
            row = self.db.query(
                "SELECT (SELECT value FROM meta WHERE key='vector_epoch') AS e, "
                "EXISTS(SELECT 1 FROM vector_outbox) AS p"
            )[0]
            if int(row["e"]) == self._epoch and not row["p"]:
                return
        with self._vlock, self._vfile:
            epoch = self.db.vector_epoch()
            if epoch != self._epoch:
                self.index.refresh()
                self._epoch = epoch
            while True:
                ops = self.db.outbox()
                if not ops:
                    return
                failed = self._apply_ops(ops)
                try:
                    with self.db.write() as w:
                        if failed:
                            self.db.quarantine(w, failed, time.time())
                        self.db.clear_outbox(w, ops[-1]["seq"])
                        self._epoch = self.db.bump_vector_epoch(w)
                except StoreError as exc:
                    log.warning("pending vector writes stay pending: %s", exc)
                    return

    def _maybe_flush_vectors(self) -> None:
        if self.db.outbox_count() >= VECTOR_FLUSH_OPS:
            self._sync_vectors()

    def flush_vectors(self) -> None:
        """Apply every pending vector write now (searches, `check` and `close` do it anyway)."""
        self._sync_vectors(force=True)

    def _apply_ops(self, ops: Sequence[Any]) -> list[tuple[Any, str]]:
        """Apply outbox ops, one upsert and one delete call per user at most (chroma's cost is per call).

        Users are independent; within a user a `drop` erases what came before it, and for each memory the
        last op wins (an upsert reads the memory's current embedding from SQLite). Returns the ops of users
        whose writes the index refused, each with the error: they are set aside, the other users' applied.
        """
        by_user: dict[str, list[Any]] = {}
        for op in ops:
            by_user.setdefault(op["user_key"], []).append(op)
        failed: list[tuple[Any, str]] = []
        for key, user_ops in by_user.items():
            try:
                self._apply_user_ops(key, user_ops)
            except Exception as exc:  # whatever the index raises: this user's writes wait for a repair
                error = _first_error(exc) if str(exc) else type(exc).__name__
                log.warning(
                    "the vector index refused %d writes (set aside; `mark memory check --repair` applies them): %s",
                    len(user_ops),
                    error,
                )
                failed += [(op, error) for op in user_ops]
        return failed

    def _apply_user_ops(self, key: str, user_ops: list[Any]) -> None:
        """One user's ops in order: a drop first if any, then one delete call and one upsert call."""
        drops = [i for i, op in enumerate(user_ops) if op["op"] == "drop"]
        if drops:
            self.index.drop_user(key)
            user_ops = user_ops[drops[-1] + 1 :]
        final: dict[str, str] = {}
        for op in user_ops:
            final[op["memory_id"]] = op["op"]
        deletes = [i for i, op in final.items() if op == "delete"]
        if deletes:
            self.index.delete(key, deletes)
        upserts = [i for i, op in final.items() if op == "upsert"]
        found = self._vectors_for(key, upserts) if upserts else {}
        if found:
            self.index.upsert(key, list(found), np.stack(list(found.values())))

    def _vectors_for(self, key: str, ids: list[str]) -> dict[str, np.ndarray]:
        return self.db.vectors_for(key, ids)

    def _mark_open(self) -> None:
        """Reconcile SQLite and the vector index on open when a process using this home died uncleanly.

        Each open store leaves a marker file named after its process; a marker whose process is gone means a
        crash (or kill -9). Pending outbox writes are applied above anyway; this also compares every id and
        repairs what differs (an index file restored from a backup, a crash inside chroma's own write).
        """
        markers = self.home / "open"
        markers.mkdir(exist_ok=True)
        stale = [m for m in markers.glob("*.pid") if m.stem.isdigit() and not _alive(int(m.stem))]
        if stale:
            report = self.reconcile()
            if report.missing_vectors or report.orphan_vectors:
                log.warning(
                    "an unclean shutdown left the vector index behind: repaired %d missing and %d orphan vectors",
                    len(report.missing_vectors),
                    len(report.orphan_vectors),
                )
            for m in stale:
                m.unlink(missing_ok=True)
        self._marker = markers / f"{os.getpid()}.pid"
        self._marker.touch()

    def reconcile(self) -> CheckReport:
        """Admin: compare every id in SQLite and the vector index, and repair the differences.

        Memories without a usable embedding (none, or not the model's size) are re-embedded from their text,
        and the vector group of every user with set-aside writes (or such memories) is refilled from SQLite.
        Returns the report of what was found before the repair.
        """
        report = self.check()
        refill = self._reembed_unusable()
        with self._vlock, self._vfile:
            refill |= {r["user_key"] for r in self.db.quarantined()}
            for key in sorted(refill):
                self._refill_user(key)
            missing = set(report.missing_vectors)
            missing_by_key: dict[str, list[str]] = {}
            if missing:
                for key, ids in self.db.all_vector_ids().items():
                    if key not in refill and ids & missing:
                        missing_by_key[key] = sorted(ids & missing)
            for key, ids in missing_by_key.items():
                found = self._vectors_for(key, ids)
                try:
                    if found:
                        self.index.upsert(key, list(found), np.stack(list(found.values())))
                except Exception:  # the group itself is broken (another dimension): rebuild it from SQLite
                    self._refill_user(key)
            if report.orphan_vectors:
                orphans = set(report.orphan_vectors)
                for key in self.index.user_keys():
                    stray = sorted(self.index.ids(key) & orphans)
                    if stray:
                        self.index.delete(key, stray)
        return report

    def _reembed_unusable(self) -> set[str]:
        """Embed again, from their text, the memories whose stored embedding is missing or not the model's size.

        Returns the user keys concerned. Cheap when there are none: one SQL query (and the model's size).
        """
        if not self.db.query("SELECT 1 FROM memories LIMIT 1"):
            return set()
        rows = self.db.missing_embeddings(self.embedder.dim)
        keys: set[str] = set()
        for start in range(0, len(rows), 256):
            chunk = rows[start : start + 256]
            vecs = self.embed([t for _, _, t in chunk])
            with self.db.write() as w:
                for (mid, key, _), v in zip(chunk, vecs, strict=True):
                    w.execute(
                        "UPDATE memories SET embedding = ?, embedding_model = ? WHERE id = ?",
                        [v.tobytes(), self.embedder.model_id, mid],
                    )
                    keys.add(key)
        return keys

    def _refill_user(self, key: str) -> bool:
        """Rebuild one user's vector group from SQLite (the truth); on success their set-aside writes are done."""
        try:
            self.index.drop_user(key)
            ids, vectors = self.db.user_vectors(key)
            if ids:
                self.index.upsert(key, ids, vectors)
        except Exception as exc:
            log.warning("could not rebuild the vectors of one user: %s", _first_error(exc))
            return False
        with self.db.write() as w:
            self.db.clear_quarantine(w, key)
            self._epoch = self.db.bump_vector_epoch(w)
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: pending writes are durable and applied on next open
            self._sync_vectors()
        self.index.close()
        self.db.close()
        marker = getattr(self, "_marker", None)
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _history(
        self,
        memory: Memory,
        event: str,
        reason: str,
        actor: str,
        old: str | None = None,
        new: str | None = None,
        **metadata: Any,
    ) -> HistoryEvent:
        return HistoryEvent(
            id=new_id(),
            memory_id=memory.id,
            user_id=memory.user_id,
            event=event,
            old_text=old,
            new_text=new,
            reason=reason,
            actor=actor,
            created_at=self.clock(),
            metadata=metadata,
        )

    def _require(self, memory_id: str, user_id: str) -> Memory:
        check_scope_id(user_id)
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInput("memory id is empty")
        found = self.db.get_memory(memory_id, user_id)
        if found is None:
            raise NotFound(f"no memory {memory_id!r} for this user")
        return found

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
        prepared = []
        for n, item in enumerate(items):
            where = f"item {n}: " if len(items) > 1 else ""
            try:
                text = check_text(item.text)
                check_scope_id(item.user_id)
                check_optional_id(item.agent_id, "agent id")
                check_optional_id(item.session_id, "session id")
            except InvalidInput as exc:
                raise InvalidInput(f"{where}{exc}") from None
            prepared.append((item, text))
        vectors = self.embed([text for _, text in prepared])
        now = self.clock()
        memories = [self._record(item, text, now) for item, text in prepared]
        self._insert(memories, vectors, [self._history(m, "add", reason, actor, new=m.text) for m in memories])
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

    def _insert(self, memories: list[Memory], vectors: np.ndarray, events: list[HistoryEvent]) -> None:
        by_key: dict[str, list[str]] = {}
        rows = []
        for m, v in zip(memories, vectors, strict=True):
            key = user_key(m.user_id)
            rows.append(memory_to_row(m, key, v))
            by_key.setdefault(key, []).append(m.id)
        with self.db.write() as w:
            self.db.insert_memories(w, rows)
            self.db.add_history(w, events)
            for key, ids in by_key.items():
                self.db.enqueue_vectors(w, "upsert", key, ids)
        self._maybe_flush_vectors()

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
        fields: dict[str, Any] = {}
        new = old.model_copy()
        if text is not None:
            new.text = check_text(text)
            vec = self.embed([new.text])[0]
            fields.update(text=new.text, embedding=vec.tobytes(), embedding_model=self.embedder.model_id)
        if trust is not None:
            if not 0.0 <= trust <= 1.0:
                raise InvalidInput("trust must be between 0 and 1")
            new.trust = fields["trust"] = trust
        if metadata is not None:
            new.metadata = metadata
            fields["metadata"] = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if not fields:
            return old
        new.updated_at = self.clock()
        fields["updated_at"] = ts(new.updated_at)
        with self.db.write() as w:
            self.db.update_memory(w, memory_id, fields)
            self.db.add_history(w, [self._history(new, "update", reason, actor, old=old.text, new=new.text)])
            if text is not None:
                self.db.enqueue_vectors(w, "upsert", user_key(user_id), [memory_id])
        self._maybe_flush_vectors()
        return self._require(memory_id, user_id)

    def confirm(self, memory_id: str, user_id: str, *, reason: str = "stated again", actor: str = "api") -> Memory:
        """The fact was stated again: strength, frequency and trust go up, the forgetting clock restarts."""
        m = self._require(memory_id, user_id)
        now = self.clock()
        trust = min(1.0, m.trust + (1.0 - m.trust) * 0.15)
        with self.db.write() as w:
            w.execute(
                "UPDATE memories SET confirm_count = confirm_count + 1, last_confirmed_at = ?, trust = ?, "
                "updated_at = ? WHERE id = ?",
                [ts(now), trust, ts(now), memory_id],
            )
            self.db.add_history(w, [self._history(m, "confirm", reason, actor, old=m.text, new=m.text)])
        return self._require(memory_id, user_id)

    def supersede(
        self, memory_id: str, user_id: str, new: NewMemory, *, reason: str = "fact changed", actor: str = "api"
    ) -> Memory:
        """Replace a changed fact: the new memory is added, the old one kept with valid_until and superseded_by."""
        old = self._require(memory_id, user_id)
        if new.user_id != user_id:
            raise InvalidInput("a memory can only be superseded within the same user")
        text = check_text(new.text)
        vec = self.embed([text])
        now = self.clock()
        created = self._record(new, text, now)
        key = user_key(user_id)
        with self.db.write() as w:
            self.db.insert_memories(w, [memory_to_row(created, key, vec[0])])
            self.db.update_memory(
                w,
                old.id,
                {
                    "status": MemoryStatus.superseded.value,
                    "valid_until": ts(now),
                    "superseded_by": created.id,
                    "updated_at": ts(now),
                },
            )
            self.db.add_history(
                w,
                [
                    self._history(created, "add", reason, actor, new=text, supersedes=old.id),
                    self._history(old, "supersede", reason, actor, old=old.text, new=text, superseded_by=created.id),
                ],
            )
            self.db.enqueue_vectors(w, "upsert", key, [created.id])
            # The turns the old value came from stay searchable, marked as no longer current.
            self.db.mark_turns_outdated(w, user_id, old.source.turn_ids, created.id)
        self._maybe_flush_vectors()
        return created

    def dispute(
        self, memory_id: str, user_id: str, *, reason: str, trust_penalty: float = 0.2, actor: str = "api"
    ) -> Memory:
        """Flag a memory contradicted by a less trusted source: kept and searchable, marked, trust lowered."""
        m = self._require(memory_id, user_id)
        now = self.clock()
        with self.db.write() as w:
            self.db.update_memory(
                w,
                memory_id,
                {
                    "status": MemoryStatus.disputed.value,
                    "trust": max(0.0, m.trust - trust_penalty),
                    "updated_at": ts(now),
                },
            )
            self.db.add_history(w, [self._history(m, "dispute", reason, actor, old=m.text, new=m.text)])
        return self._require(memory_id, user_id)

    def adjust_trust(
        self, memory_ids: Iterable[str], user_id: str, delta: float, *, reason: str, actor: str = "api"
    ) -> list[Memory]:
        out = []
        with self.db.write() as w:
            for mid in memory_ids:
                m = self.db.get_memory(mid, user_id)
                if m is None:
                    continue
                trust = min(1.0, max(0.0, m.trust + delta))
                self.db.update_memory(w, mid, {"trust": trust, "updated_at": ts(self.clock())})
                self.db.add_history(
                    w, [self._history(m, "trust", reason, actor, old=f"{m.trust:.3f}", new=f"{trust:.3f}")]
                )
                out.append(m.model_copy(update={"trust": trust}))
        return out

    def mark_recalled(self, memory_ids: Iterable[str], user_id: str) -> None:
        """The memories were used in a reply: recall count up, the forgetting clock restarts."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return
        check_scope_id(user_id)
        now = ts(self.clock())
        with self.db.write() as w:
            marks = ",".join("?" * len(ids))
            w.execute(
                f"UPDATE memories SET recall_count = recall_count + 1, last_recalled_at = ? "
                f"WHERE user_id = ? AND id IN ({marks})",
                [now, user_id, *ids],
            )

    def delete(self, memory_id: str, user_id: str, *, reason: str = "forgotten", actor: str = "api") -> None:
        """Remove a memory. Its history (with the old text and the reason) stays until the user is purged."""
        m = self._require(memory_id, user_id)
        with self.db.write() as w:
            self.db.delete_memory(w, memory_id)
            self.db.add_history(w, [self._history(m, "delete", reason, actor, old=m.text)])
            self.db.enqueue_vectors(w, "delete", user_key(user_id), [memory_id])
        self._maybe_flush_vectors()

    # -- reads --------------------------------------------------------------------------------------

    def get(self, memory_id: str, user_id: str) -> Memory:
        return self._require(memory_id, user_id)

    def resolve_id(self, prefix: str, user_id: str) -> str:
        """Expand an unambiguous id prefix (as typed in the CLI) within the user's scope."""
        check_scope_id(user_id)
        matches = self.db.resolve_prefix(prefix.strip(), user_id) if prefix.strip() else []
        if not matches:
            raise NotFound(f"no memory {prefix!r} for this user")
        if len(matches) > 1:
            raise InvalidInput(f"memory id prefix {prefix!r} is ambiguous; give more characters")
        return matches[0]

    @staticmethod
    def _filters(
        kinds: Sequence[MemoryKind | str] | None,
        session_id: str | None,
        agent_id: str | None,
        since: datetime | None,
        until: datetime | None,
        statuses: Sequence[MemoryStatus | str],
    ) -> tuple[str, list[Any]]:
        where, params = [], []
        status_values = [MemoryStatus(s).value for s in statuses]
        where.append(f"status IN ({','.join('?' * len(status_values))})")
        params += status_values
        if kinds:
            try:
                kind_values = [MemoryKind(k).value for k in kinds]
            except ValueError as exc:
                raise InvalidInput(f"unknown memory kind: {exc}") from None
            where.append(f"kind IN ({','.join('?' * len(kind_values))})")
            params += kind_values
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if since is not None:
            where.append("created_at >= ?")
            params.append(ts(since))
        if until is not None:
            where.append("created_at <= ?")
            params.append(ts(until))
        return " AND ".join(where), params

    def search(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 10,
        kinds: Sequence[MemoryKind | str] | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_history: bool = False,
        mode: str = "hybrid",
        explain: bool = False,
        query_embedding: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Hybrid (dense + keyword), decay-ranked search in one user's memories. See scoring.py for the score."""
        check_scope_id(user_id)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("search query is empty")
        if mode not in ("hybrid", "dense", "keyword"):
            raise InvalidInput(f"unknown search mode {mode!r} (hybrid, dense, keyword)")
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        statuses = [MemoryStatus.active, MemoryStatus.disputed]
        if include_history:
            statuses.append(MemoryStatus.superseded)
        where, params = self._filters(kinds, session_id, agent_id, since, until, statuses)
        key = user_key(user_id)
        fetch = max(limit * 4, 40)
        qv = None
        if mode != "keyword":
            qv = query_embedding if query_embedding is not None else self.embed([query.strip()])[0]
            qv = np.asarray(qv, dtype=np.float32)
        filtered = bool(kinds or session_id or agent_id or since or until or include_history)

        dense: list[str] = []
        exact_cos: dict[str, float] = {}
        if qv is not None:
            if filtered and self.db.count_filtered(user_id, where, params) <= EXACT_FILTER_LIMIT:
                # Selective filter: score the filtered rows exactly instead of hoping ANN over-fetch finds them.
                rows = self.db.filtered_ids(user_id, where, params)
                rows = [(i, e) for i, e in rows if e is not None]
                if rows:
                    sims = np.stack([e for _, e in rows]) @ qv
                    order = np.argsort(-sims)[:fetch]
                    dense = [rows[i][0] for i in order]
                    exact_cos = {rows[i][0]: float(sims[i]) for i in order}
            else:
                self._sync_vectors()
                n = self.index.count(key) if filtered else None
                k = fetch
                while True:
                    with self._vlock:
                        found = self.index.query(key, qv, k)
                    dense = [i for i, _ in found]
                    if filtered and len(found) == k and n is not None and k < n:
                        ok = self.db.count_filtered(
                            user_id, where + f" AND id IN ({','.join('?' * len(dense))})", [*params, *dense]
                        )
                        if ok < limit:
                            k *= 4
                            continue
                    break
        keyword = [i for i, _ in self.db.keyword_search(key, query, fetch)] if mode != "dense" else []

        candidates = list(dict.fromkeys(dense + keyword))
        rows = self.db.memories_by_ids(candidates, user_id)  # the scope guard: only this user's rows
        allowed = {i for i, _ in self.db.filtered_ids(user_id, where + self._in(candidates), [*params, *candidates])}
        now = self.clock()
        dense_rank = {}
        for i in dense:
            if i in allowed:
                dense_rank[i] = len(dense_rank) + 1
        keyword_rank = {}
        for i in keyword:
            if i in allowed:
                keyword_rank[i] = len(keyword_rank) + 1
        hits = []
        for mid in candidates:
            if mid not in allowed or mid not in rows:
                continue
            memory, emb = rows[mid]
            if qv is not None:
                cos = exact_cos.get(mid)
                if cos is None:
                    cos = float(emb @ qv) if emb is not None and emb.shape == qv.shape else 0.0
                if cos < self.settings.scoring.min_similarity and mid not in keyword_rank:
                    continue
            else:
                cos = 0.0
            b = scoring.score(memory, cos, dense_rank.get(mid), keyword_rank.get(mid), now, self.settings.scoring)
            hits.append(SearchHit(memory=memory, score=b.final, explain=b if explain else None))
        guard = self.forget_guard(user_id)
        if guard is not None:  # second line of defence: forgetting removed these notes already
            hits = [
                h for h in hits if not guard.blocks_note(h.memory.text, h.memory.source.turn_ids, h.memory.created_at)
            ]
        hits.sort(key=lambda h: (-h.score, h.memory.id))
        return hits[:limit]

    # -- episodes: the raw turns as memory ------------------------------------------------------------------

    def search_episodes(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 20,
        mode: str = "hybrid",
        query_embedding: np.ndarray | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[EpisodeHit]:
        """Hybrid search over everything the user and the assistant said (raw turns), best first.

        The turns are the episodic layer under the notes: what extraction missed is still found here. Scored by
        `scoring.episode_score` (dense and keyword fused; no decay: an old statement is as true as a new one
        unless a note superseded it, which `Turn.outdated_by` says).
        """
        check_scope_id(user_id)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("search query is empty")
        if mode not in ("hybrid", "dense", "keyword"):
            raise InvalidInput(f"unknown search mode {mode!r} (hybrid, dense, keyword)")
        fetch = max(limit * 3, 60)
        excluded = set(exclude_ids)
        dense: list[str] = []
        qv = None
        if mode != "keyword":
            qv = query_embedding if query_embedding is not None else self.embed([query.strip()])[0]
            qv = np.asarray(qv, dtype=np.float32)
            self._sync_vectors()
            with self._vlock:
                dense = [i for i, _ in self.index.query(episode_key(user_id), qv, fetch + len(excluded))]
        keyword = (
            [i for i, _ in self.db.episode_keyword_search(user_key(user_id), query, fetch + len(excluded))]
            if mode != "dense"
            else []
        )
        dense = [i for i in dense if i not in excluded]
        keyword = [i for i in keyword if i not in excluded]
        candidates = list(dict.fromkeys(dense + keyword))
        rows = self.db.turns_by_ids(user_id, candidates)  # the scope guard: only this user's turns
        dense_rank = {i: n for n, i in enumerate((i for i in dense if i in rows), 1)}
        keyword_rank = {i: n for n, i in enumerate((i for i in keyword if i in rows), 1)}
        hits = []
        for tid in candidates:
            if tid not in rows:
                continue
            turn, emb = rows[tid]
            cos = float(emb @ qv) if qv is not None and emb is not None and emb.shape == qv.shape else 0.0
            hits.append(
                EpisodeHit(
                    turn=turn,
                    score=scoring.episode_score(cos, dense_rank.get(tid), keyword_rank.get(tid), self.settings.scoring),
                    similarity=cos,
                    dense_rank=dense_rank.get(tid),
                    keyword_rank=keyword_rank.get(tid),
                )
            )
        guard = self.forget_guard(user_id)
        if guard is not None:  # second line of defence: forgetting redacted these turns already
            hits = [h.model_copy(update={"turn": guard.guard_turn(h.turn)}) for h in hits]
            hits = [h for h in hits if guard.has_content(h.turn.content)]
        hits.sort(key=lambda h: (-h.score, h.turn.seq or 0))
        return hits[:limit]

    def episode_window(self, turn: Turn, *, before: int = 1, after: int = 1) -> list[Turn]:
        """A turn with its neighbours in the same session, in order: a short answer keeps what it answers."""
        if turn.seq is None:
            raise InvalidInput("the turn has no store position (was it read from this store?)")
        return self.db.session_window(turn.user_id, turn.session_id, turn.seq, before, after)

    def history_size(self, user_id: str, *, cap: int | None = None) -> tuple[int, int]:
        """(turns, characters) of the user's conversation history: tells recall whether all of it fits. With
        `cap`, at most that many turns are counted (recall only needs to know whether the history is small)."""
        check_scope_id(user_id)
        return self.db.history_size(user_id, cap)

    @staticmethod
    def _in(ids: Sequence[str]) -> str:
        return f" AND id IN ({','.join('?' * len(ids))})" if ids else " AND 0"

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
        statuses = [MemoryStatus.active, MemoryStatus.disputed]
        if include_history:
            statuses.append(MemoryStatus.superseded)
        where, params = self._filters(kinds, session_id, None, None, None, statuses)
        items, total = self.db.list_memories(user_id, where, params, limit, offset)
        return Page(items=items, total=total, offset=offset, limit=limit)

    def history(
        self, user_id: str, memory_id: str | None = None, *, limit: int = 1000, offset: int = 0
    ) -> list[HistoryEvent]:
        """The audit trail of one user (or one memory): add, update, confirm, supersede, dispute, delete."""
        check_scope_id(user_id)
        return self.db.history(user_id, memory_id, limit, offset)

    def count(self, user_id: str, *, include_history: bool = False) -> int:
        return self.list(user_id, include_history=include_history, limit=1).total

    # -- raw turns and feedback -------------------------------------------------------------------------

    def add_turns(self, turns: Sequence[dict[str, Any] | Turn]) -> list[Turn]:
        """Store raw conversation messages (before any LLM sees them): nothing is lost if extraction fails."""
        out = []
        now = self.clock()
        for n, t in enumerate(turns):
            try:
                data = check_turn(t.model_dump() if isinstance(t, Turn) else dict(t))
            except InvalidInput as exc:
                raise InvalidInput(f"turn {n}: {exc}") from None
            out.append(
                Turn(
                    id=data.get("id") or new_id(),
                    user_id=data["user_id"],
                    agent_id=data.get("agent_id"),
                    session_id=data.get("session_id"),
                    role=data["role"],
                    content=data["content"],
                    created_at=data.get("created_at") or now,
                    extraction_status=data["extraction_status"],
                    metadata=data.get("metadata") or {},
                )
            )
        if out:
            self._store_turns(out)
        return out

    def _store_turns(self, turns: list[Turn]) -> None:
        """Write turns with their vectors (one embedding pass) and queue them for the episode index."""
        vectors = self.embed([t.content for t in turns])
        by_key: dict[str, list[str]] = {}
        for t in turns:
            by_key.setdefault(episode_key(t.user_id), []).append(t.id)
        with self.db.write() as w:
            self.db.add_turns(w, turns, vectors, self.embedder.model_id)
            for key, ids in by_key.items():
                self.db.enqueue_vectors(w, "upsert", key, ids)
        self._maybe_flush_vectors()

    def turns(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Turn]:
        check_scope_id(user_id)
        return self.db.turns(user_id, session_id, status, limit, offset, newest_first)

    def set_turns_status(
        self, turn_ids: Sequence[str], status: str, *, error: str | None = None, count_attempt: bool = True
    ) -> None:
        if status not in ("pending", "done", "failed", "skipped"):
            raise InvalidInput(f"unknown turn status {status!r}")
        with self.db.write() as w:
            self.db.set_turns_status(w, list(turn_ids), status, error, count_attempt)

    def retryable_turns(self, user_id: str, max_attempts: int = 3) -> list[Turn]:
        """Turns still waiting for memory extraction (pending, or failed fewer than max_attempts times)."""
        check_scope_id(user_id)
        return self.db.retryable_turns(user_id, max_attempts)

    def users_with_pending_turns(self, max_attempts: int = 3) -> list[str]:
        return self.db.pending_turn_users(max_attempts)

    def add_feedback(
        self,
        user_id: str,
        response_id: str,
        memory_ids: Sequence[str],
        value: int,
        *,
        comment: str = "",
        trust_step: float = 0.1,
    ) -> Feedback:
        """A good (+1) or bad (-1) verdict on a reply: recorded, and the trust of the memories used moves."""
        check_scope_id(user_id)
        if value not in (1, -1):
            raise InvalidInput("feedback value must be +1 (good) or -1 (bad)")
        fb = Feedback(
            id=new_id(),
            user_id=user_id,
            response_id=response_id,
            memory_ids=list(memory_ids),
            value=value,
            comment=comment,
            created_at=self.clock(),
        )
        with self.db.write() as w:
            self.db.add_feedback(w, fb)
        if memory_ids:
            self.adjust_trust(
                memory_ids, user_id, trust_step * value, reason=f"feedback {'good' if value > 0 else 'bad'}"
            )
        return fb

    def feedback(self, user_id: str) -> list[Feedback]:
        check_scope_id(user_id)
        return self.db.feedback(user_id)

    # -- privacy --------------------------------------------------------------------------------------

    def purge_user(self, user_id: str) -> PurgeReport:
        """Remove every trace of a user: memories, raw turns, history, feedback, keyword index, vectors."""
        check_scope_id(user_id)
        keys = [user_key(user_id), episode_key(user_id)]
        with self.db.write() as w:
            counts = self.db.purge_user(w, user_id)
            for key in keys:
                w.execute("DELETE FROM vector_outbox WHERE user_key = ?", [key])
                self.db.clear_quarantine(w, key)
                self.db.enqueue_vectors(w, "drop", key, [""])
        self._sync_vectors()
        self.db.scrub()
        left = self.db.query(
            "SELECT EXISTS(SELECT 1 FROM vector_quarantine WHERE user_key = ?) "
            "OR EXISTS(SELECT 1 FROM vector_outbox WHERE user_key = ?) AS n",
            [key, key],
        )[0]["n"]
        if left:
            raise StoreError(
                "the user's data is gone from the database, but the vector index has not dropped their vectors "
                "yet: run `mark memory check --repair`"
            )
        return PurgeReport(
            user_id=user_id,
            memories=counts["memories"],
            turns=counts["turns"],
            history=counts["history"],
            feedback=counts["feedback"],
        )

    # -- forgetting ---------------------------------------------------------------------------------------

    def plan_forget(self, user_id: str, memory_id: str | None = None, *, about: str | None = None) -> ForgetPlan:
        """What `forget` would remove: one note (an id or unique prefix) with its earlier or later versions, or
        every note and episode matching a topic (hybrid search, above a similarity threshold)."""
        return forgetter.plan(self, user_id, memory_id, about)

    def forget(
        self,
        user_id: str,
        memory_id: str | None = None,
        *,
        about: str | None = None,
        plan: ForgetPlan | None = None,
        reason: str = "forgotten on request",
        actor: str = "api",
    ) -> ForgetReport:
        """Forget a fact everywhere the store holds it, so nothing recalls or re-derives it (memory_store.forgetter):
        its notes, its clauses in the turns (redacted in place, re-embedded), the text of its history (a keyed hash
        stays), and a fingerprint of hashed tokens that extraction and recall consult. `plan`: a `plan_forget`
        result shown to the user first (what was shown is what goes)."""
        if plan is None:
            plan = self.plan_forget(user_id, memory_id, about=about)
        elif plan.user_id != check_scope_id(user_id):
            raise InvalidInput("the forget plan belongs to another user")
        return forgetter.forget(self, plan, reason=reason, actor=actor)

    def forget_guard(self, user_id: str) -> ForgetGuard | None:
        """The user's forgotten facts, for readers that must never show them (None when the user forgot nothing)."""
        check_scope_id(user_id)
        rows = self.db.forgotten(user_id)
        if not rows:
            return None
        if self._forget_key is None:
            self._forget_key = self.db.forget_key()
        fps = [
            Fingerprint.from_json(
                json.loads(r["fingerprint"]),
                before_seq=r["before_seq"],
                created_at=datetime.fromtimestamp(r["created_at"], UTC),
                id=r["id"],
            )
            for r in rows
        ]
        return ForgetGuard(self._forget_key, fps, seq_of=lambda ids: self.db.turn_seqs(user_id, ids))

    # -- admin: crosses users on purpose ------------------------------------------------------------------

    def users(self) -> list[str]:
        """Admin: every user id with data in this store."""
        return self.db.users()

    def export_jsonl(self, out: IO[str] | str | Path, *, user_id: str | None = None, embeddings: bool = True) -> int:
        """Write memories, history, turns and feedback as JSON lines; returns the number of records.

        With `user_id` only that user's data (the normal case); without it, every user's (admin).
        """
        if isinstance(out, str | Path):
            with open(out, "w", encoding="utf-8") as fh:
                return self.export_jsonl(fh, user_id=user_id, embeddings=embeddings)
        users = [check_scope_id(user_id)] if user_id is not None else self.users()
        header = {"type": "header", "format": EXPORT_FORMAT, "version": EXPORT_VERSION}
        out.write(json.dumps(header) + "\n")
        n = 0
        for uid in users:
            for r in self.db.query(
                "SELECT id, embedding FROM memories WHERE user_id = ? ORDER BY created_at, id", (uid,)
            ):
                m = self.db.get_memory(r["id"], uid)
                rec = {"type": "memory", **m.model_dump(mode="json")}
                if embeddings and r["embedding"]:
                    rec["embedding"] = base64.b64encode(r["embedding"]).decode("ascii")
                out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
                n += 1
            for e in self.db.history(uid, None, 10**9, 0):
                out.write(
                    json.dumps({"type": "history", **e.model_dump(mode="json")}, ensure_ascii=False, sort_keys=True)
                    + "\n"
                )
                n += 1
            for t in self.db.turns(uid, None, None, 10**9, 0):
                out.write(
                    json.dumps({"type": "turn", **t.model_dump(mode="json")}, ensure_ascii=False, sort_keys=True) + "\n"
                )
                n += 1
            for f in self.db.feedback(uid):
                out.write(
                    json.dumps({"type": "feedback", **f.model_dump(mode="json")}, ensure_ascii=False, sort_keys=True)
                    + "\n"
                )
                n += 1
        return n

    def import_jsonl(self, src: IO[str] | str | Path, *, replace: bool = False) -> int:
        """Load an export. Every line is validated before anything is written; the import is one transaction.

        Embeddings of the store's model must have its size (a vector of another size would wedge the index for
        every user); embeddings of another model, or none, are computed again so the index stays one space.
        """
        name = str(src) if isinstance(src, str | Path) else getattr(src, "name", "<stream>")
        if isinstance(src, str | Path):
            try:
                with open(src, encoding="utf-8") as fh:
                    return self.import_jsonl(fh, replace=replace)
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{name}: cannot read: {exc}") from None
        parsed = read_export(src, name)
        forgetter.guard_import(self, parsed)  # a backup from before a forget does not bring the fact back
        events, turns, feedback = parsed.events, parsed.turns, parsed.feedback
        model_id, dim = self.embedder.model_id, self.embedder.dim
        for item in parsed.memories:
            if item.vector is not None and item.memory.embedding_model == model_id:
                problem = embedding_problem(item.vector, dim)
                if problem:
                    raise InvalidInput(
                        f"{name}, line {item.line}: {problem}, but {model_id} makes {dim}-dimensional unit vectors; "
                        "nothing was imported"
                    )
        memories = [(i.memory, i.vector) for i in parsed.memories]
        redo = [i for i, (m, v) in enumerate(memories) if v is None or m.embedding_model != model_id]
        if redo:
            fresh = self.embed([memories[i][0].text for i in redo])
            for i, v in zip(redo, fresh, strict=True):
                memories[i] = (memories[i][0].model_copy(update={"embedding_model": model_id}), v)
        ids = [m.id for m, _ in memories]
        existing: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            existing |= {
                r["id"]: r["user_key"]
                for r in self.db.query(
                    f"SELECT id, user_key FROM memories WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            }
        if existing and not replace:
            raise InvalidInput(
                f"{name}: {len(existing)} memories already exist (e.g. {sorted(existing)[0]}); "
                "use replace to overwrite them"
            )
        turn_vectors = self.embed([t.content for t in turns]) if turns else None
        by_key: dict[str, list[str]] = {}
        try:
            with self.db.write() as w:
                for mid, key in existing.items():
                    self.db.delete_memory(w, mid)
                    self.db.enqueue_vectors(w, "delete", key, [mid])
                self.db.insert_memories(w, [memory_to_row(m, user_key(m.user_id), v) for m, v in memories])
                for m, _ in memories:
                    by_key.setdefault(user_key(m.user_id), []).append(m.id)
                if events:
                    w.execute(
                        f"DELETE FROM history WHERE id IN ({','.join('?' * len(events))})", [e.id for e in events]
                    )
                    self.db.add_history(w, events)
                if turns:
                    w.execute(f"DELETE FROM turns WHERE id IN ({','.join('?' * len(turns))})", [t.id for t in turns])
                    self.db.add_turns(w, turns, turn_vectors, self.embedder.model_id)
                    for t in turns:
                        by_key.setdefault(episode_key(t.user_id), []).append(t.id)
                for f in feedback:
                    w.execute("DELETE FROM feedback WHERE id = ?", [f.id])
                    self.db.add_feedback(w, f)
                for key, mids in by_key.items():
                    self.db.enqueue_vectors(w, "upsert", key, mids)
        except sqlite3.IntegrityError as exc:
            raise InvalidInput(f"{name}: conflicts with what is stored ({exc}); nothing was imported") from None
        self._maybe_flush_vectors()
        return len(memories) + len(events) + len(turns) + len(feedback)

    def check(self) -> CheckReport:
        """Admin: are SQLite and the vector index consistent? (Pending outbox ops are applied first.)"""
        if self.read_only:
            raise StoreError(
                f"the data directory {self.home} is read-only: a check applies pending writes and tests the keyword "
                "index, which needs writing (list, search, history and export work)"
            )
        self._sync_vectors(force=True)
        with self._vlock:
            expected = self.db.all_vector_ids()
            keys = set(expected) | self.index.user_keys()
            missing, orphans, vectors = [], [], 0
            for key in sorted(keys):
                have = self.index.ids(key)
                vectors += len(have)
                want = expected.get(key, set())
                missing += sorted(want - have)
                orphans += sorted(have - want)
        repair = "run `mark memory check --repair` or `mark memory rebuild-index`"
        problems = []
        quarantined = self.db.quarantined()
        if quarantined:
            problems.append(
                f"{len(quarantined)} vector writes were refused by the index and set aside "
                f"({quarantined[-1]['error']}) ({repair})"
            )
        unusable = [mid for mid, _, _ in self.db.missing_embeddings(self.embedder.dim)] if expected else []
        if unusable:
            problems.append(f"{len(unusable)} memories have no usable embedding ({repair})")
        if missing:
            problems.append(f"{len(missing)} memories have no vector ({repair})")
        if orphans:
            problems.append(f"{len(orphans)} vectors have no memory ({repair})")
        fts_ok = self.db.check_fts()
        if not fts_ok:
            problems.append("the keyword index is inconsistent (run `mark memory rebuild-index`)")
        pending = self.db.outbox_count()
        return CheckReport(
            ok=not problems and pending == 0,
            memories=sum(len(v) for v in expected.values()),
            vectors=vectors,
            missing_vectors=missing,
            orphan_vectors=orphans,
            pending_outbox=pending,
            set_aside=len(quarantined),
            unusable_embeddings=unusable,
            fts_ok=fts_ok,
            problems=problems,
        )

    def embed_missing_turns(self, batch: int = 256) -> int:
        """Give turns stored before episodes had vectors (or whose vector is missing) one; returns how many."""
        done = 0
        while True:
            missing = self.db.missing_turn_embeddings(limit=batch)
            if not missing:
                return done
            vecs = self.embed([t for _, _, t in missing])
            with self.db.write() as w:
                for (tid, _, _), v in zip(missing, vecs, strict=True):
                    w.execute(
                        "UPDATE turns SET embedding = ?, embedding_model = ? WHERE id = ?",
                        [v.tobytes(), self.embedder.model_id, tid],
                    )
                by_key: dict[str, list[str]] = {}
                for tid, key, _ in missing:
                    by_key.setdefault(episode_key_of(key), []).append(tid)
                for key, ids in by_key.items():
                    self.db.enqueue_vectors(w, "upsert", key, ids)
            done += len(missing)

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Admin: rebuild the vector and keyword indexes from SQLite (re-embedding rows without a usable vector).

        Set-aside vector writes are moot afterwards: the index holds exactly what SQLite holds.
        """
        self._reembed_unusable()
        self.embed_missing_turns()
        n = 0
        with self._vlock, self._vfile:
            self.index.reset()
            for key, ids, vectors in self.db.iter_vectors():
                self.index.upsert(key, ids, vectors)
                n += len(ids)
                if progress:
                    progress(len(ids))
            with self.db.write() as w:
                w.execute("DELETE FROM vector_outbox")
                self.db.clear_quarantine(w)
                w.execute("INSERT INTO memories_fts(memories_fts) VALUES('rebuild')")
                w.execute("INSERT INTO turns_fts(turns_fts) VALUES('rebuild')")
                self._epoch = self.db.bump_vector_epoch(w)
        return n
