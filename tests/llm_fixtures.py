"""Pytest plugin: the real local model server for integration tests, and a scripted fake for unit tests.

Load it with ``pytest_plugins = ["tests.llm_fixtures"]`` (or ``-p tests.llm_fixtures``).

- every local server a test starts is recorded in a session temp registry (``MARK_LLM_SERVER_DIR``) and
  stopped at the end of the session.
- ``local_llm_url`` (session): starts the embedded llama.cpp server once per test session in a session temp
  home, and stops it at the end. The 470 MB model is assembled once into a cache directory shared by
  sessions (``$MARK_TEST_MODEL_DIR``, default ``<pytest temp root>/mark-model-cache``).
- ``llm_settings``: a Settings in a per-test home whose ``llm.base_url`` points at that server, so code
  under test calls ``connect(llm, models_dir)`` and never starts a server of its own.
- ``scripted_llm``: the one scripted fake, :class:`mark_agents.llm.scripted.ScriptedLLM` (an OpenAI-compatible
  endpoint played in process, so the real ``openai`` client code path runs without any server).

Tests using the real-server fixtures get the ``llm`` marker automatically (``-m "not llm"`` skips them);
mark them explicitly anyway, it documents the cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mark_agents.config import LLMSettings, Settings
from mark_agents.llm.scripted import ScriptedLLM

#: Fixtures that need the real server; tests using them are marked ``llm``.
REAL_LLM_FIXTURES = frozenset({"local_llm_url", "local_llm_server", "llm_settings"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_LLM_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("llm"):
            item.add_marker(pytest.mark.llm)


# -- the real local server -------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def private_llm_server_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Local servers started by tests are recorded in a session temp dir, never in the user's shared registry
    (so no test reuses or stops a server of the user's), and whatever still runs there is stopped at the end."""
    from mark_agents.local_llm import stop_all

    path = tmp_path_factory.mktemp("llm-servers")
    before = os.environ.get("MARK_LLM_SERVER_DIR")
    os.environ["MARK_LLM_SERVER_DIR"] = str(path)
    try:
        yield path
    finally:
        stop_all(LLMSettings(local_server_dir=path))
        if before is None:
            os.environ.pop("MARK_LLM_SERVER_DIR", None)
        else:
            os.environ["MARK_LLM_SERVER_DIR"] = before


@pytest.fixture(scope="session")
def local_llm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF, assembled and verified once per machine (not once per session)."""
    from mark_agents.local_llm import MODEL_FILENAME, ensure_model

    configured = os.environ.get("MARK_TEST_MODEL_DIR")
    cache = Path(configured) if configured else tmp_path_factory.getbasetemp().parent / "mark-model-cache"
    return ensure_model(cache / MODEL_FILENAME)


@pytest.fixture(scope="session")
def local_llm_server(tmp_path_factory: pytest.TempPathFactory, local_llm_model: Path) -> Iterator[Any]:
    """A LocalServer running for the whole session (home in the session temp dir)."""
    from mark_agents.local_llm import LocalServer

    home = tmp_path_factory.mktemp("llm-home")
    # Idle limit: longer than any pause between the tests that use it; the session's end stops it anyway.
    llm = LLMSettings(local_model_path=local_llm_model, local_idle_s=1800)
    server = LocalServer(llm, home / "models")
    started = time.perf_counter()
    server.start(wait=True, timeout_s=120)
    server.start_seconds = time.perf_counter() - started  # reported by the integration tests
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_llm_url(local_llm_server: Any) -> str:
    """Base URL (``http://127.0.0.1:PORT/v1``) of the session's local model server."""
    status = local_llm_server.status()
    assert status.running and status.base_url, f"local model server is not running: {status}"
    return status.base_url


@pytest.fixture
def llm_settings(tmp_path: Path, local_llm_url: str) -> Settings:
    """Settings in a fresh home whose chat LLM is the session's local server."""
    return Settings(home=tmp_path / "home", llm=LLMSettings(base_url=local_llm_url, model="local", api_key="sk-no-key"))


# -- the scripted fake ----------------------------------------------------------------------------------


@pytest.fixture
def scripted_llm() -> type[ScriptedLLM]:
    """The scripted LLM class (mark_agents.llm.scripted), for tests that prefer a fixture to an import."""
    return ScriptedLLM
