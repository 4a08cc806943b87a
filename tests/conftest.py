"""Shared fixtures: real SQLite, real chromadb, the real embedding model (loaded once per session).

The local-LLM fixtures (`local_llm_url`, `llm_settings`) live in tests/llm_fixtures.py.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import UTC, datetime, timedelta

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.llm_fixtures"] if importlib.util.find_spec("tests.llm_fixtures") else []


@pytest.fixture(scope="session")
def embedder():
    from memory_store.embeddings import get_embedder

    return get_embedder()


class FakeClock:
    """A controllable clock, so decay can be tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["chroma", "exact"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(tmp_path, embedder, clock, backend):
    """A store on each vector backend: every store test is a conformance test for both."""
    from memory_store import MemoryStore, StoreSettings

    s = MemoryStore(StoreSettings(home=tmp_path / "home", vector_backend=backend), embedder=embedder, clock=clock)
    yield s
    s.close()


@pytest.fixture
def chroma_store(tmp_path, embedder, clock):
    from memory_store import MemoryStore, StoreSettings

    s = MemoryStore(StoreSettings(home=tmp_path / "home"), embedder=embedder, clock=clock)
    yield s
    s.close()
