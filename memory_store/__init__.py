"""memory_store: storage and retrieval of long-term memories, usable on its own.

One core over two engines: embedded SQLite (the truth) with a vector index (chromadb by default) under a data
directory, or Postgres with pgvector (``MARK_STORE_URL=postgresql://...``). Search is hybrid (dense + keyword)
and decay-ranked. Knows nothing of LLMs.

    from memory_store import MemoryStore
    store = MemoryStore(home="./data")
    store.add("My dog is called Biscuit.", user_id="alice")
    store.search("What is my dog's name?", user_id="alice")[0].memory.text
"""

from memory_store.aio import AsyncMemoryStore
from memory_store.config import ScoringConfig, StoreSettings
from memory_store.embeddings import CachedEmbedder, Embedder, SentenceTransformerEmbedder, get_embedder
from memory_store.errors import InvalidInput, MarkError, NotFound, StoreError
from memory_store.models import (
    AppliedChange,
    CheckReport,
    EpisodeHit,
    Feedback,
    ForgetPlan,
    ForgetReport,
    HistoryEvent,
    Memory,
    MemoryChange,
    MemoryKind,
    MemoryStatus,
    NewMemory,
    Page,
    PurgeReport,
    ScoreBreakdown,
    SearchHit,
    Source,
    Turn,
)
from memory_store.store import MemoryStore

__all__ = [
    "AppliedChange",
    "AsyncMemoryStore",
    "CachedEmbedder",
    "CheckReport",
    "Embedder",
    "EpisodeHit",
    "Feedback",
    "ForgetPlan",
    "ForgetReport",
    "HistoryEvent",
    "InvalidInput",
    "MarkError",
    "Memory",
    "MemoryChange",
    "MemoryKind",
    "MemoryStatus",
    "MemoryStore",
    "NewMemory",
    "NotFound",
    "Page",
    "PurgeReport",
    "ScoreBreakdown",
    "ScoringConfig",
    "SearchHit",
    "SentenceTransformerEmbedder",
    "Source",
    "StoreError",
    "StoreSettings",
    "Turn",
    "get_embedder",
]
