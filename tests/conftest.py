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

pytest_plugins = ["tests.pg_fixtures"] + (
    ["tests.llm_fixtures"] if importlib.util.find_spec("tests.llm_fixtures") else []
)


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


@pytest.fixture(params=["chroma", "exact", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(tmp_path, embedder, clock, backend, request):
    """A store on each engine and vector backend (SQLite + chroma, SQLite + exact, Postgres + pgvector): every
    store test is a conformance test for all three."""
    from memory_store import MemoryStore, StoreSettings

    settings = StoreSettings(home=tmp_path / "home", vector_backend="exact" if backend == "exact" else "chroma")
    if backend == "postgres":
        settings = settings.model_copy(update={"store_url": request.getfixturevalue("pg_url")})
    s = MemoryStore(settings, embedder=embedder, clock=clock)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request) -> str:
    return request.param


@pytest.fixture
def make_store(tmp_path, embedder, clock, engine, request):
    """make_store(name): a new, empty store on the test's engine (a home for SQLite, a database for Postgres);
    the same name twice opens the same store again. Closed at the end of the test."""
    from memory_store import MemoryStore, StoreSettings

    urls: dict[str, str] = {}
    opened: list[MemoryStore] = []

    def make(name: str = "home", **kwargs) -> MemoryStore:
        settings = StoreSettings(home=tmp_path / name)
        if engine == "postgres":
            from tests.pg_fixtures import new_database

            if name not in urls:
                urls[name] = new_database(request.getfixturevalue("pg_server"))
            settings = settings.model_copy(update={"store_url": urls[name]})
        s = MemoryStore(settings, embedder=kwargs.pop("embedder", embedder), clock=kwargs.pop("clock", clock))
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def chroma_store(tmp_path, embedder, clock):
    from memory_store import MemoryStore, StoreSettings

    s = MemoryStore(StoreSettings(home=tmp_path / "home"), embedder=embedder, clock=clock)
    yield s
    s.close()
