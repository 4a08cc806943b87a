"""MemoryStore: the memory layer's one implementation (sync; `AsyncMemoryStore` derives the async API).

The core is written once over the backend protocol (memory_store.backend) and split by job in memory_store/core:
memories, search, episodes (turns and feedback), transfer (export/import), maintenance (check, reconcile, rebuild)
and privacy (purge, forget). The engine is chosen by the settings: ``MARK_STORE_URL=postgresql://...`` is Postgres
with pgvector (memory_store.postgres_backend); unset, the embedded SQLite + vector index under ``MARK_HOME``
(memory_store.sqlite_engine).

Every read takes a user id and is scoped to it; the only calls that see several users are the explicit admin
ones (`users`, `export_jsonl(user_id=None)`, `check`, `rebuild`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_store.backend import Backend
from memory_store.config import StoreSettings
from memory_store.core.base import new_id
from memory_store.core.episodes import TurnOps
from memory_store.core.maintenance import MaintenanceOps
from memory_store.core.memories import MemoryOps
from memory_store.core.privacy import PrivacyOps
from memory_store.core.search import EXACT_FILTER_LIMIT, SearchOps
from memory_store.core.transfer import TransferOps
from memory_store.embeddings import Embedder
from memory_store.errors import StoreError
from memory_store.models import utcnow
from memory_store.vectors import VectorIndex

__all__ = ["EXACT_FILTER_LIMIT", "MemoryStore", "new_id", "open_backend"]


def open_backend(settings: StoreSettings, vector_index: VectorIndex | None = None) -> Backend:
    """The engine the settings name: Postgres for a ``store_url``, else the embedded one under ``home``."""
    if settings.store_url:
        with contextlib.suppress(OSError):  # MARK_HOME still holds what other packages keep (chat state, models)
            settings.home.mkdir(parents=True, exist_ok=True)
        if vector_index is not None:
            raise ValueError("a vector index is part of the embedded engine; Postgres keeps vectors in its rows")
        try:
            from memory_store.postgres_backend import PostgresBackend
        except ImportError as exc:
            raise StoreError(
                f"MARK_STORE_URL names Postgres, which needs the `postgres` extra ({exc}): "
                "pip install 'mark-memory[postgres]'"
            ) from None
        return PostgresBackend(settings.store_url, pool_size=settings.store_pool_size)
    from memory_store.sqlite_engine import SQLiteBackend

    return SQLiteBackend(settings, vector_index)


class MemoryStore(MemoryOps, SearchOps, TurnOps, TransferOps, MaintenanceOps, PrivacyOps):
    """Per-user long-term memory: rows for truth, vectors for similarity, hybrid decay-ranked search."""

    def __init__(
        self,
        settings: StoreSettings | None = None,
        *,
        home: str | Path | None = None,
        embedder: Embedder | None = None,
        vector_index: VectorIndex | None = None,
        clock: Callable[[], datetime] = utcnow,
        backend: Backend | None = None,
    ) -> None:
        if settings is None:
            settings = StoreSettings(**({"home": Path(home)} if home is not None else {}))
        elif home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        settings = settings.model_copy(update={"home": Path(settings.home).expanduser()})
        self.settings = settings
        self.home = settings.home
        self.clock = clock
        self._embedder = embedder
        self._forget_key = None
        self._recent = OrderedDict()
        self._recent_lock = threading.Lock()
        self.backend = backend if backend is not None else open_backend(settings, vector_index)
        self.backend.start(self.reconcile)

    @property
    def engine(self) -> str:
        """ "sqlite" or "postgres"."""
        return self.backend.engine

    @property
    def read_only(self) -> bool:
        return self.backend.read_only

    @property
    def db(self) -> Any:
        """The engine's SQL layer (tests and admin tools; the core goes through `backend`)."""
        return self.backend

    @property
    def index(self) -> VectorIndex:
        """The embedded engine's vector index (Postgres keeps vectors in its rows: a read-only view of them)."""
        return self.backend.index  # type: ignore[attr-defined]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
