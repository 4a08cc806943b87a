"""The embedded engine: SQLite (the truth, with FTS5 keywords) and a vector index (chroma or exact) beside it.

Write path: one SQLite transaction writes the rows and queues their vector writes in an outbox; after the commit
the outbox is applied to the vector index. A crash after the commit leaves outbox rows that the next open (or any
search) applies, so SQLite and the vector index converge and no partial record exists. Vector writes wait in the
outbox until `VECTOR_FLUSH_OPS` are pending, or a check or close, or a search that finds more than
`PENDING_MERGE_LIMIT` of its group's writes pending: chroma's cost is per call and per collection, so applying
writes in large groups is what makes bulk adds fast. A search scores its group's few pending writes exactly from
SQLite beside the index's answer, so it sees every write without waiting for the index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from memory_store.backend import HybridRead, VectorState, hybrid_candidates_in_three_reads
from memory_store.config import StoreSettings
from memory_store.errors import Conflict, StoreError
from memory_store.errors import first_error as _first_error
from memory_store.models import CheckReport
from memory_store.sqlite_backend import SQLiteDB, SQLiteTx
from memory_store.validation import episode_key, user_key
from memory_store.vectors import ChromaIndex, ExactIndex, VectorIndex
from memory_store.wal import wal_kept_warning

#: Vector writes wait in the (durable) outbox until this many are pending (see the module's docstring).
VECTOR_FLUSH_OPS = 10_000
#: A search reads up to this many pending vector writes of its group from SQLite and scores them exactly beside
#: the index's answer, instead of applying the outbox first: applying is a chroma write (12-35 ms on 2 cores)
#: that a chat turn's recall would wait for, right after storing the user's message.
PENDING_MERGE_LIMIT = 256

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writable(home: Path, db_path: Path) -> bool:
    """Can this process write the data directory (and its database file)? If not, the store opens read-only."""
    return os.access(home, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK))


class SQLiteBackend(SQLiteDB):
    """SQLite rows and a vector index kept in step through a transactional outbox (the `Backend` protocol)."""

    engine = "sqlite"

    def __init__(self, settings: StoreSettings, vector_index: VectorIndex | None = None) -> None:
        home = settings.home
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {home}: {exc}") from exc
        self.home = home
        #: A data directory this process cannot write is opened for reading: list, search, history and export
        #: work, every write raises StoreError.
        super().__init__(settings.db_path, read_only=not _writable(home, settings.db_path))
        if vector_index is None:
            if settings.vector_backend == "chroma" and not self.read_only:
                vector_index = ChromaIndex(settings.vectors_path, loader=self.user_vectors)
            else:
                # Exact search over the embeddings in SQLite; also the read-only fallback (chroma writes on open).
                vector_index = ExactIndex(loader=self.user_vectors)
        self.index = vector_index
        self._vlock = threading.RLock()
        self._vfile = FileLock(str(home / "vectors.lock"), timeout=120, thread_local=False)
        self._epoch = self.vector_epoch()
        self._marker: Path | None = None
        if self.read_only:
            log.info("%s is read-only: opened for reading, with exact vector search", home)
            return
        self._sync_vectors(force=True)

    # -- life cycle -----------------------------------------------------------------------------------------

    def start(self, reconcile: Callable[[], CheckReport]) -> None:
        """Reconcile SQLite and the vector index on open when a process using this home died uncleanly.

        Each open store leaves a marker file named after its process; a marker whose process is gone means a
        crash (or kill -9). Pending outbox writes are applied on open anyway; this also compares every id and
        repairs what differs (an index file restored from a backup, a crash inside chroma's own write).
        """
        if self.read_only:
            return
        markers = self.home / "open"
        markers.mkdir(exist_ok=True)
        stale = [m for m in markers.glob("*.pid") if m.stem.isdigit() and not _alive(int(m.stem))]
        if stale:
            report = reconcile()
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SQLiteTx]:
        try:
            with self.write() as w:
                tx = SQLiteTx(self, w)
                yield tx
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        if tx.vector_writes and self.outbox_count() >= VECTOR_FLUSH_OPS:
            self._sync_vectors()

    def close(self) -> None:
        if not self.read_only:
            with contextlib.suppress(Exception):  # best effort: pending writes are durable and applied on next open
                self._sync_vectors()
        self.index.close()
        super().close()
        if self._marker is not None:
            with contextlib.suppress(OSError):
                self._marker.unlink(missing_ok=True)

    # -- vector reads ---------------------------------------------------------------------------------------

    def nearest(self, key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest vectors of one group: the index's answer with the group's pending writes merged in.

        Up to `PENDING_MERGE_LIMIT` pending writes are read from SQLite (the truth) and scored exactly; the index
        is written first only when more are pending, a group drop is, or another process moved the index.
        """
        pending: list[tuple[str, str]] = []
        if not self.read_only:
            pending = self.pending_vector_ops(key, PENDING_MERGE_LIMIT + 1)
            if (
                len(pending) > PENDING_MERGE_LIMIT
                or any(op == "drop" for _, op in pending)
                or self.vector_epoch() != self._epoch
            ):
                self._sync_vectors(force=True)
                pending = []
        with self._vlock:
            found = self.index.query(key, vector, k + len(pending))
        if not pending:
            return found
        last = dict(pending)  # each id's last op wins, as when the outbox is applied
        query = np.asarray(vector, dtype=np.float32)
        merged = [(i, s) for i, s in found if i not in last]
        fresh = self.vectors_for(key, [i for i, op in last.items() if op == "upsert"])
        merged += [(i, float(v @ query)) for i, v in fresh.items() if v.shape == query.shape]
        merged.sort(key=lambda t: -t[1])
        return merged[:k]

    def hybrid_candidates(self, user_id: str, vector: np.ndarray, k: int, text: str, limit: int) -> HybridRead:
        return hybrid_candidates_in_three_reads(self, user_id, vector, k, text, limit)

    def vector_count(self, key: str) -> int:
        return self.index.count(key)

    # -- applying the outbox ------------------------------------------------------------------------------

    def flush_vectors(self) -> None:
        self._sync_vectors(force=True)

    def _sync_vectors(self, force: bool = False) -> None:
        """Bring the vector index up to date: pick up other processes' writes, apply pending outbox ops.

        Ops the index refuses are set aside (`vector_quarantine`), so one bad write never blocks other users, a
        read or a repair. If the outbox cannot be cleared (a full disk), the ops stay pending and are applied
        again later (they are idempotent); the caller's read goes on.
        """
        if self.read_only:
            return  # nothing can be applied; the exact index reads SQLite, the truth, directly
        if not force and self.vectors_settled(self._epoch):
            return
        with self._vlock, self._vfile:
            epoch = self.vector_epoch()
            if epoch != self._epoch:
                self.index.refresh()
                self._epoch = epoch
            while True:
                ops = self.outbox()
                if not ops:
                    return
                failed = self._apply_ops(ops)
                try:
                    with self.write() as w:
                        if failed:
                            self.quarantine(w, failed, time.time())
                        self.clear_outbox(w, ops[-1]["seq"])
                        self._epoch = self.bump_vector_epoch(w)
                except StoreError as exc:
                    log.warning("pending vector writes stay pending: %s", exc)
                    return

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
        if not user_ops or self.index.follows_rows(key):
            return  # the rows hold these writes: the group is read from them at its next use
        final: dict[str, str] = {}
        for op in user_ops:
            final[op["memory_id"]] = op["op"]
        deletes = [i for i, op in final.items() if op == "delete"]
        if deletes:
            self.index.delete(key, deletes)
        upserts = [i for i, op in final.items() if op == "upsert"]
        found = self.vectors_for(key, upserts) if upserts else {}
        if found:
            self.index.upsert(key, list(found), np.stack(list(found.values())))

    def _refill_user(self, key: str) -> bool:
        """Rebuild one vector group from SQLite (the truth); on success its set-aside writes are done."""
        try:
            self.index.drop_user(key)
            ids, vectors = self.user_vectors(key)
            if ids:
                self.index.upsert(key, ids, vectors)
        except Exception as exc:
            log.warning("could not rebuild the vectors of one user: %s", _first_error(exc))
            return False
        with self.write() as w:
            self.clear_quarantine(w, key)
            self._epoch = self.bump_vector_epoch(w)
        return True

    # -- maintenance ----------------------------------------------------------------------------------------

    def vector_state(self) -> VectorState:
        self._sync_vectors(force=True)
        with self._vlock:
            expected = self.all_vector_ids()
            keys = set(expected) | self.index.user_keys()
            missing, orphans, vectors = [], [], 0
            for key in sorted(keys):
                have = self.index.ids(key)
                vectors += len(have)
                want = expected.get(key, set())
                missing += sorted(want - have)
                orphans += sorted(have - want)
        quarantined = self.quarantined()
        return VectorState(
            expected=sum(len(v) for v in expected.values()),
            vectors=vectors,
            missing=missing,
            orphans=orphans,
            pending=self.outbox_count(),
            set_aside=len(quarantined),
            set_aside_error=quarantined[-1]["error"] if quarantined else "",
            keyword_ok=self.check_fts(),
        )

    def repair_vectors(self, missing: Sequence[str], orphans: Sequence[str], refill: set[str]) -> None:
        with self._vlock, self._vfile:
            refill = refill | {r["user_key"] for r in self.quarantined()}
            for key in sorted(refill):
                self._refill_user(key)
            wanted = set(missing)
            missing_by_key: dict[str, list[str]] = {}
            if wanted:
                for key, ids in self.all_vector_ids().items():
                    if key not in refill and ids & wanted:
                        missing_by_key[key] = sorted(ids & wanted)
            for key, ids in missing_by_key.items():
                found = self.vectors_for(key, ids)
                try:
                    if found:
                        self.index.upsert(key, list(found), np.stack(list(found.values())))
                except Exception:  # the group itself is broken (another dimension): rebuild it from SQLite
                    self._refill_user(key)
            if orphans:
                stray_ids = set(orphans)
                for key in self.index.user_keys():
                    stray = sorted(self.index.ids(key) & stray_ids)
                    if stray:
                        self.index.delete(key, stray)

    def rebuild_indexes(self, progress: Callable[[int], None] | None = None) -> int:
        n = 0
        with self._vlock, self._vfile:
            self.index.reset()
            for key, ids, vectors in self.iter_vectors():
                self.index.upsert(key, ids, vectors)
                n += len(ids)
                if progress:
                    progress(len(ids))
            with self.write() as w:
                self.clear_outbox(w)
                self.clear_quarantine(w)
                self.rebuild_fts(w)
                self._epoch = self.bump_vector_epoch(w)
        return n

    def _scrub_or_warn(self) -> None:
        if not self.scrub():
            log.warning(wal_kept_warning(self.path.name, "rows"))

    def scrub_user(self, user_id: str, *, refill: bool) -> None:
        """Vectors applied (a forget also rebuilds the user's groups, so the index's files keep no old vector),
        the keyword index merged and the WAL emptied (secure delete zeroed the rows)."""
        keys = [user_key(user_id), episode_key(user_id)]
        if refill:
            self.flush_vectors()
            for key in keys:
                with self._vlock, self._vfile:
                    if not self._refill_user(key):
                        log.warning(
                            "the vector index could not be rebuilt after a forget: run `mark memory check --repair`"
                        )
            self._scrub_or_warn()
            return
        self._sync_vectors()
        self._scrub_or_warn()
        if any(self.vectors_left(key) for key in keys):
            raise StoreError(
                "the user's data is gone from the database, but the vector index has not dropped their vectors "
                "yet: run `mark memory check --repair`"
            )
