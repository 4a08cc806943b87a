"""The embedded local model for real: assembly, the llama.cpp server's life cycle, chat and structured output.

Prompts stay tiny: on 2 CPU cores the 0.5B model pre-fills ~110 tokens/s and generates ~40 tokens/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mark_agents.config import LLMSettings, Settings
from mark_agents.llm import LLMUnavailable, UsageMeter, connect
from mark_agents.local_llm import MODEL_SIZE, LocalServer, ensure_model

pytestmark = pytest.mark.llm


class Person(BaseModel):
    name: str
    city: str


def test_model_assembled_and_verified(local_llm_model: Path) -> None:
    assert local_llm_model.stat().st_size == MODEL_SIZE
    with local_llm_model.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert local_llm_model.with_name(local_llm_model.name + ".verified.json").exists()
    started = time.perf_counter()
    ensure_model(local_llm_model)
    assert time.perf_counter() - started < 0.5  # later starts only compare size and mtime with the stamp


def test_status_and_reuse_from_a_second_object(local_llm_server: Any, local_llm_url: str) -> None:
    status = local_llm_server.status()
    assert status.running and status.base_url == local_llm_url
    assert status.n_ctx == 8192 and status.model_path.endswith(".gguf") and status.uptime_s >= 0
    other = LocalServer(local_llm_server.settings)
    assert other.ensure_running() == local_llm_url
    assert other.status().pid == status.pid


async def test_connect_without_base_url_reuses_the_running_server(local_llm_server: Any, local_llm_url: str) -> None:
    llm = await connect(local_llm_server.settings)
    try:
        assert llm.base_url == local_llm_url and llm.context_window == 8192
    finally:
        await llm.aclose()


async def test_real_chat_answers(llm_settings: Settings) -> None:
    meter = UsageMeter()
    async with await connect(llm_settings) as llm:
        result = await llm.chat(
            [{"role": "user", "content": "What is the capital of France? One word."}], max_tokens=8, meter=meter
        )
        streamed = [d async for d in llm.stream([{"role": "user", "content": "Say hello."}], max_tokens=8, meter=meter)]
    assert "paris" in result.text.lower()
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0 and not result.usage.estimated
    assert result.usage.cost_usd == 0.0 and result.model == "local"
    assert "".join(streamed).strip()
    assert meter.total.calls == 2


async def test_structured_returns_a_valid_object_via_the_real_server(llm_settings: Settings) -> None:
    messages = [{"role": "user", "content": "Extract the person as JSON: Alice lives in Denver."}]
    async with await connect(llm_settings) as llm:
        started = time.perf_counter()
        person, usage = await llm.structured(messages, Person, max_tokens=40)
        elapsed = time.perf_counter() - started
    assert isinstance(person, Person)
    assert person.name.strip().lower().startswith("alice") and "denver" in person.city.lower()
    assert usage.calls >= 1 and elapsed < 60


def test_start_and_stop_a_server(tmp_path: Path, local_llm_model: Path) -> None:
    server = LocalServer(Settings(home=tmp_path, llm=LLMSettings(local_model_path=local_llm_model, local_n_ctx=2048)))
    url = server.start()
    status = server.status()
    assert status.running and status.base_url == url and status.n_ctx == 2048
    state = json.loads((tmp_path / "llm" / "server.json").read_text())
    assert (state["pid"], state["port"], state["n_ctx"]) == (status.pid, status.port, 2048)
    assert (tmp_path / "llm" / "server.log").exists()
    assert server.stop() is True
    assert not server.status().running
    with pytest.raises(ProcessLookupError):
        os.kill(status.pid, 0)
    assert server.stop() is False


def test_two_processes_starting_at_once_share_one_server(tmp_path: Path, local_llm_model: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from mark_agents.config import Settings, LLMSettings;"
        "from mark_agents.local_llm import LocalServer;"
        "s = Settings(home=Path(sys.argv[1]), llm=LLMSettings(local_model_path=Path(sys.argv[2]), local_n_ctx=2048));"
        "print(LocalServer(s).ensure_running())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(local_llm_model)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    urls = {p.communicate(timeout=180)[0].strip() for p in procs}
    server = LocalServer(Settings(home=tmp_path, llm=LLMSettings(local_model_path=local_llm_model, local_n_ctx=2048)))
    try:
        assert all(p.returncode == 0 for p in procs)
        assert len(urls) == 1 and server.status().base_url in urls
        log = (tmp_path / "llm" / "server.log").read_text(errors="replace")
        assert log.count("# mark:") == 1 and not (tmp_path / "llm" / "server.log.1").exists()  # launched once
    finally:
        server.stop()


def test_a_server_dying_at_start_quotes_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    server = LocalServer(Settings(home=tmp_path, llm=LLMSettings(local_model_path=bad)))
    with pytest.raises(LLMUnavailable) as info:
        server.start(timeout_s=60)
    message = str(info.value)
    assert "exited with code" in message and "Failed to load model" in message and "server.log" in message
    assert "\n" not in message
    assert not server.status().running
