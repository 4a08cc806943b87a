"""The embedded local model for real: assembly, the llama.cpp server's life cycle, chat and structured output.

Prompts stay tiny: on 2 CPU cores the 0.5B model pre-fills ~110 tokens/s and generates ~40 tokens/s.
"""

from __future__ import annotations

import asyncio
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
from mark_agents.local_llm import MODEL_SIZE, LocalServer, ensure_model, running_servers

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
    other = LocalServer(local_llm_server.llm)
    assert other.ensure_running() == local_llm_url
    assert other.status().pid == status.pid


async def test_connect_without_base_url_reuses_the_running_server(local_llm_server: Any, local_llm_url: str) -> None:
    llm = await connect(local_llm_server.llm, local_llm_server.models_dir)
    try:
        assert llm.base_url == local_llm_url and llm.context_window == 8192
    finally:
        await llm.aclose()


async def test_real_chat_answers(llm_settings: Settings) -> None:
    meter = UsageMeter()
    async with await connect(llm_settings.llm, llm_settings.models_dir) as llm:
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
    async with await connect(llm_settings.llm, llm_settings.models_dir) as llm:
        started = time.perf_counter()
        person, usage = await llm.structured(messages, Person, max_tokens=40)
        elapsed = time.perf_counter() - started
    assert isinstance(person, Person)
    assert person.name.strip().lower().startswith("alice") and "denver" in person.city.lower()
    assert usage.calls >= 1 and elapsed < 60


def test_start_and_stop_a_server(tmp_path: Path, local_llm_model: Path) -> None:
    server = LocalServer(LLMSettings(local_model_path=local_llm_model, local_n_ctx=2048), tmp_path / "models")
    url = server.start()
    status = server.status()
    assert status.running and status.base_url == url and status.n_ctx == 2048
    state = json.loads(server.state_path.read_text())
    assert (state["pid"], state["port"], state["n_ctx"]) == (status.pid, status.port, 2048)
    assert server.log_path.exists() and not (tmp_path / "llm").exists()  # nothing in the data directory
    assert server.stop() is True
    assert not server.status().running
    with pytest.raises(ProcessLookupError):
        os.kill(status.pid, 0)
    assert server.stop() is False


def test_two_processes_of_two_data_directories_starting_at_once_share_one_server(
    tmp_path: Path, local_llm_model: Path
) -> None:
    code = (
        "import sys; from pathlib import Path; from mark_agents.config import Settings, LLMSettings;"
        "from mark_agents.local_llm import LocalServer;"
        "s = Settings(home=Path(sys.argv[1]), llm=LLMSettings(local_model_path=Path(sys.argv[2]), local_n_ctx=2048));"
        "print(LocalServer(s.llm, s.models_dir).ensure_running())"
    )
    server = LocalServer(LLMSettings(local_model_path=local_llm_model, local_n_ctx=2048), tmp_path / "models")
    for log in (server.log_path, server.log_path.with_suffix(".log.1")):  # earlier tests' runs of this server
        log.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"home{i}"), str(local_llm_model)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    urls = {p.communicate(timeout=180)[0].strip() for p in procs}
    try:
        assert all(p.returncode == 0 for p in procs)
        assert len(urls) == 1 and server.status().base_url in urls
        log = server.log_path.read_text(errors="replace")
        assert log.count("# mark:") == 1 and not server.log_path.with_suffix(".log.1").exists()  # launched once
    finally:
        server.stop()


def test_a_server_dying_at_start_quotes_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    server = LocalServer(LLMSettings(local_model_path=bad), tmp_path / "models")
    with pytest.raises(LLMUnavailable) as info:
        server.start(timeout_s=60)
    message = str(info.value)
    assert "exited with code" in message and "Failed to load model" in message and server.log_path.name in message
    assert "\n" not in message
    assert not server.status().running


async def test_an_idle_server_stops_by_itself_and_a_client_starts_it_again(
    tmp_path: Path, local_llm_model: Path
) -> None:
    """MARK_LLM_IDLE_SECONDS=1: the server leaves the registry and exits; the next request brings it back."""
    llm_settings = LLMSettings(local_model_path=local_llm_model, local_n_ctx=1024, local_idle_s=1)
    settings = Settings(home=tmp_path / "a", llm=llm_settings)
    llm = await connect(settings.llm, settings.models_dir)
    try:
        first = LocalServer(settings.llm).status()
        assert first.running and first.idle_limit_s == 1 and first.idle_s is not None
        assert LocalServer(llm_settings, tmp_path / "b" / "models").status().pid == first.pid  # shared
        assert first.pid in [s.pid for s in running_servers(settings.llm)]  # with the session's server
        deadline = time.monotonic() + 120
        while _alive(first.pid):
            assert time.monotonic() < deadline, "the idle server did not stop"
            await asyncio.sleep(0.2)
        assert not LocalServer(settings.llm).state_path.exists()
        assert first.pid not in [s.pid for s in running_servers(settings.llm)]
        assert "no request for 1 s, stopping" in LocalServer(settings.llm).log_path.read_text(errors="replace")

        result = await llm.chat([{"role": "user", "content": "Say OK."}], max_tokens=4)  # restarts it
        assert result.usage.calls == 1
        second = LocalServer(settings.llm).status()
        assert second.running and second.pid != first.pid and llm.base_url == second.base_url
    finally:
        await llm.aclose()
        LocalServer(settings.llm).stop()  # only this test's server: stop_all would also stop the session's


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_cli_lists_and_stops_the_servers_of_every_data_directory(
    tmp_path: Path, local_llm_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mark_cli.main import app

    monkeypatch.setenv("MARK_LLM_SERVER_DIR", str(tmp_path / "registry"))  # apart from the session's server
    monkeypatch.setenv("MARK_LLM_MODEL_PATH", str(local_llm_model))
    monkeypatch.setenv("MARK_LLM_N_CTX", "1024")
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(tmp_path / "a"), "llm", "status"]).output.strip() == "not running"
    url = runner.invoke(app, ["--home", str(tmp_path / "a"), "llm", "serve"], catch_exceptions=False).output.strip()
    assert url.startswith("http://127.0.0.1:")

    listed = runner.invoke(app, ["--home", str(tmp_path / "b"), "llm", "status", "--json"], catch_exceptions=False)
    (server,) = json.loads(listed.output)
    assert server["base_url"] == url and server["n_ctx"] == 1024 and server["idle_limit_s"] == 900
    assert server["idle_s"] is not None and server["model_path"] == str(local_llm_model)
    table = runner.invoke(app, ["--home", str(tmp_path / "b"), "llm", "status"], catch_exceptions=False).output
    assert str(server["pid"]) in table and "idle" in table and "15m00s" in table

    stopped = runner.invoke(app, ["--home", str(tmp_path / "c"), "llm", "stop"], catch_exceptions=False)
    assert stopped.exit_code == 0 and f"stopped pid {server['pid']}" in stopped.output
    with pytest.raises(ProcessLookupError):
        os.kill(server["pid"], 0)
    assert runner.invoke(app, ["--home", str(tmp_path / "a"), "llm", "status"]).output.strip() == "not running"
