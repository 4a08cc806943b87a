"""What every part of the store core shares: settings, clock, embedder, backend, and two small helpers."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.backend import Backend
from memory_store.config import StoreSettings
from memory_store.embeddings import Embedder, get_embedder, text_key
from memory_store.errors import InvalidInput, NotFound
from memory_store.forgetting import Fingerprint, ForgetGuard
from memory_store.ids import new_id
from memory_store.models import HistoryEvent, Memory
from memory_store.validation import check_scope_id


def _as_datetime(value: float | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)


#: Single texts embedded lately, kept by hash: a chat turn stores the user's message and then recalls with it, and
#: an embedding costs more than the whole search. Emptied by purge and forget.
RECENT_EMBEDDINGS = 64


class StoreBase:
    """The state the core's parts share (set by `MemoryStore.__init__`)."""

    settings: StoreSettings
    home: Path
    clock: Callable[[], datetime]
    backend: Backend
    _embedder: Embedder | None
    _forget_key: bytes | None
    _recent: OrderedDict[str, np.ndarray]
    _recent_lock: threading.Lock

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedding_model, self.settings.embedding_device)
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) != 1:
            return self.embedder.embed(texts)
        recent = self._recent
        key = text_key(texts[0])
        with self._recent_lock:
            vector = recent.get(key)
            if vector is not None:
                recent.move_to_end(key)
                return vector[None, :]
        vectors = self.embedder.embed(texts)
        with self._recent_lock:
            recent[key] = vectors[0]
            while len(recent) > RECENT_EMBEDDINGS:
                recent.popitem(last=False)
        return vectors

    def _forget_recent_embeddings(self) -> None:
        """Drop the recent-embeddings cache (purge and forget: nothing derived from a removed text stays)."""
        with self._recent_lock:
            self._recent.clear()

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

    def forget_guard(self, user_id: str) -> ForgetGuard | None:
        """The user's forgotten facts, for readers that must never show them (None when the user forgot nothing)."""
        check_scope_id(user_id)
        rows = self.backend.forgotten(user_id)
        if not rows:
            return None
        if self._forget_key is None:
            self._forget_key = self.backend.forget_key()
        fps = [
            Fingerprint.from_json(
                json.loads(r["fingerprint"]) if isinstance(r["fingerprint"], str) else r["fingerprint"],
                before_seq=r["before_seq"],
                created_at=_as_datetime(r["created_at"]),
                id=r["id"],
            )
            for r in rows
        ]
        return ForgetGuard(self._forget_key, fps, seq_of=lambda ids: self.backend.turn_seqs(user_id, ids))

    def _require(self, memory_id: str, user_id: str) -> Memory:
        check_scope_id(user_id)
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInput("memory id is empty")
        found = self.backend.get_memory(memory_id, user_id)
        if found is None:
            raise NotFound(f"no memory {memory_id!r} for this user")
        return found
