"""Pytest plugin: the real local model server for integration tests, and a scripted fake for unit tests.

Load it with ``pytest_plugins = ["tests.llm_fixtures"]`` (or ``-p tests.llm_fixtures``).

- every local server a test starts is recorded in a session temp registry (``MARK_LLM_SERVER_DIR``) and
  stopped at the end of the session.
- ``local_llm_url`` (session): starts the embedded llama.cpp server once per test session in a session temp
  home, and stops it at the end. The 470 MB model is assembled once into a cache directory shared by
  sessions (``$MARK_TEST_MODEL_DIR``, default ``<pytest temp root>/mark-model-cache``).
- ``llm_settings``: a Settings in a per-test home whose ``llm.base_url`` points at that server, so code
  under test calls ``connect(llm, models_dir)`` and never starts a server of its own.
- :class:`ScriptedLLM`: an OpenAI-compatible endpoint played from a script through ``httpx.MockTransport``,
  so the real ``openai`` client code path runs without any server.

Tests using the real-server fixtures get the ``llm`` marker automatically (``-m "not llm"`` skips them);
mark them explicitly anyway, it documents the cost.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from mark_agents.config import LLMSettings, Settings
from mark_agents.llm import LLMClient

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

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def completion(
    text: str,
    *,
    prompt_tokens: int | None = 10,
    completion_tokens: int | None = 5,
    finish_reason: str = "stop",
    model: str = "fake-model",
) -> httpx.Response:
    """A chat completion answer; pass ``prompt_tokens=None`` to leave out the usage block."""
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return httpx.Response(200, json=body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An error answer shaped like OpenAI's (``{"error": {"message": ...}}``)."""
    return httpx.Response(status, json={"error": {"message": message, "type": "fake"}}, headers=headers)


def stream(deltas: list[str], *, usage: tuple[int, int] | None = None, model: str = "fake-model") -> httpx.Response:
    """A server-sent-events stream of ``deltas``, with a final usage chunk when ``usage`` is given."""
    events = []
    for i, delta in enumerate(deltas):
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [
                {"index": 0, "delta": {"content": delta}, "finish_reason": "stop" if i == len(deltas) - 1 else None}
            ],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    if usage is not None:
        usage_chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }
        events.append(f"data: {json.dumps(usage_chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return httpx.Response(200, content="".join(events).encode(), headers={"content-type": "text/event-stream"})


class ScriptedLLM:
    """A fake OpenAI-compatible endpoint that answers each request with the next step of a script.

    A step is an ``httpx.Response``, an exception to raise (``httpx.ConnectError``, ``httpx.ReadTimeout``...)
    or a function of the request. The last step repeats when the script runs out. ``requests`` holds the
    JSON bodies received, in order.
    """

    def __init__(self, *steps: Step, base_url: str = "http://fake-llm.test/v1") -> None:
        if not steps:
            raise ValueError("a script needs at least one step")
        self.steps = list(steps)
        self.base_url = base_url
        self.requests: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content or b"{}"))
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return httpx.Response(step.status_code, headers=step.headers, content=step.content)
        return step(request)

    def openai_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key="x",
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.handler)),
        )

    def client(self, settings: LLMSettings | None = None, **overrides: Any) -> LLMClient:
        """An LLMClient on this script; back-off is shortened so retry tests take milliseconds."""
        settings = settings or LLMSettings(base_url=self.base_url, model="fake-model", **overrides)
        client = LLMClient(settings, client=self.openai_client())
        client.retry_base_s = client.connect_retry_base_s = 0.001
        return client


@pytest.fixture
def scripted_llm() -> type[ScriptedLLM]:
    """The ScriptedLLM class, for tests that prefer a fixture to an import."""
    return ScriptedLLM
