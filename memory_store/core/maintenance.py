"""Maintenance (admin): are the rows and the vector index consistent, repair what differs, rebuild the indexes."""

from __future__ import annotations

from collections.abc import Callable

from memory_store.core.base import StoreBase
from memory_store.errors import StoreError
from memory_store.models import CheckReport

#: Rows embedded again per transaction when their stored vector is unusable.
REEMBED_BATCH = 256


class MaintenanceOps(StoreBase):
    def flush_vectors(self) -> None:
        """Apply every pending vector write now (searches, `check` and `close` do it anyway)."""
        self.backend.flush_vectors()

    def check(self) -> CheckReport:
        """Admin: are the rows and the vector index consistent? (Pending vector writes are applied first.)"""
        if self.backend.read_only:
            raise StoreError(
                f"the data directory {self.home} is read-only: a check applies pending writes and tests the keyword "
                "index, which needs writing (list, search, history and export work)"
            )
        state = self.backend.vector_state()
        repair = "run `mark memory check --repair` or `mark memory rebuild-index`"
        problems = []
        if state.set_aside:
            problems.append(
                f"{state.set_aside} vector writes were refused by the index and set aside "
                f"({state.set_aside_error}) ({repair})"
            )
        unusable = [mid for mid, _, _ in self.backend.missing_embeddings(self.embedder.dim)] if state.expected else []
        if unusable:
            problems.append(f"{len(unusable)} memories have no usable embedding ({repair})")
        if state.missing:
            problems.append(f"{len(state.missing)} memories have no vector ({repair})")
        if state.orphans:
            problems.append(f"{len(state.orphans)} vectors have no memory ({repair})")
        if not state.keyword_ok:
            problems.append("the keyword index is inconsistent (run `mark memory rebuild-index`)")
        return CheckReport(
            ok=not problems and state.pending == 0,
            memories=state.expected,
            vectors=state.vectors,
            missing_vectors=state.missing,
            orphan_vectors=state.orphans,
            pending_outbox=state.pending,
            set_aside=state.set_aside,
            unusable_embeddings=unusable,
            fts_ok=state.keyword_ok,
            problems=problems,
        )

    def reconcile(self) -> CheckReport:
        """Admin: compare every id in the rows and the vector index, and repair the differences.

        Memories without a usable embedding (none, or not the model's size) are re-embedded from their text,
        and the vector group of every user with set-aside writes (or such memories) is refilled from the rows.
        Returns the report of what was found before the repair.
        """
        report = self.check()
        refill = self._reembed_unusable()
        self.backend.repair_vectors(report.missing_vectors, report.orphan_vectors, refill)
        return report

    def _reembed_unusable(self) -> set[str]:
        """Embed again, from their text, the memories whose stored embedding is missing or not the model's size.

        Returns the user keys concerned. Cheap when there are none: one query (and the model's size).
        """
        if not self.backend.has_memories():
            return set()
        rows = self.backend.missing_embeddings(self.embedder.dim)
        keys: set[str] = set()
        for start in range(0, len(rows), REEMBED_BATCH):
            chunk = rows[start : start + REEMBED_BATCH]
            vecs = self.embed([t for _, _, t in chunk])
            with self.backend.transaction() as tx:
                for (mid, key, _), v in zip(chunk, vecs, strict=True):
                    tx.set_memory_embedding(key, mid, v, self.embedder.model_id)
                    keys.add(key)
        return keys

    def embed_missing_turns(self, batch: int = REEMBED_BATCH) -> int:
        """Give turns stored before episodes had vectors (or whose vector is missing) one; returns how many."""
        done = 0
        while True:
            missing = self.backend.missing_turn_embeddings(limit=batch)
            if not missing:
                return done
            vecs = self.embed([t for _, _, t in missing])
            with self.backend.transaction() as tx:
                for (tid, key, _), v in zip(missing, vecs, strict=True):
                    tx.set_turn_embedding(key, tid, v, self.embedder.model_id)
            done += len(missing)

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Admin: rebuild the vector and keyword indexes from the rows (re-embedding rows without a usable vector).

        Set-aside vector writes are moot afterwards: the index holds exactly what the rows hold.
        """
        self._reembed_unusable()
        self.embed_missing_turns()
        return self.backend.rebuild_indexes(progress)
