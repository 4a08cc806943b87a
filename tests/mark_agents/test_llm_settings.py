"""LLM settings from the environment: MARK_LLM_* first, then OPENAI_*, the memory model from MARK_MEMORY_LLM_*."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mark_agents.config import LLMSettings, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MARK_", "OPENAI_")):
            monkeypatch.delenv(name)


def test_defaults_mean_the_local_server(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.home == tmp_path
    assert settings.llm == LLMSettings()
    assert settings.llm.is_local and settings.llm.model == "local"
    assert settings.memory_llm is None and settings.models_dir == tmp_path / "models"


def test_openai_variables_are_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    llm = Settings(home=tmp_path).llm
    assert (llm.base_url, llm.api_key) == ("https://api.openai.example/v1", "sk-openai")
    assert not llm.is_local


def test_mark_variables_win_over_openai_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("MARK_LLM_BASE_URL", "http://gpu-box:8000/v1")
    monkeypatch.setenv("MARK_LLM_API_KEY", "sk-mark")
    monkeypatch.setenv("MARK_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("MARK_LLM_TIMEOUT", "30")
    monkeypatch.setenv("MARK_LLM_MAX_RETRIES", "1")
    monkeypatch.setenv("MARK_LLM_PRICE_INPUT_PER_MTOK", "0.5")
    monkeypatch.setenv("MARK_LLM_N_CTX", "4096")
    llm = Settings(home=tmp_path).llm
    assert (llm.base_url, llm.api_key, llm.model) == ("http://gpu-box:8000/v1", "sk-mark", "gpt-4o-mini")
    assert (llm.timeout_s, llm.max_retries, llm.price_input_per_mtok, llm.local_n_ctx) == (30.0, 1, 0.5, 4096)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_LLM_BASE_URL", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.example/v1")
    assert Settings(home=tmp_path).llm.base_url == "https://api.openai.example/v1"


def test_constructor_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_LLM_MODEL", "from-env")
    monkeypatch.setenv("MARK_LLM_API_KEY", "sk-env")
    monkeypatch.setenv("MARK_MEMORY_LLM_MODEL", "memory-from-env")
    given = Settings(home=tmp_path, llm={"model": "given"})
    assert (given.llm.model, given.llm.api_key) == ("given", "sk-env")  # a dict is completed from the env
    whole = Settings(home=tmp_path, llm=LLMSettings(model="whole"), memory_llm=None)
    assert whole.llm == LLMSettings(model="whole")  # an object is taken as is
    assert whole.memory_llm is None


def test_home_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_HOME", str(tmp_path / "h"))
    assert Settings().home == tmp_path / "h"


def test_memory_model_is_the_chat_model_unless_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_LLM_BASE_URL", "http://chat:8000/v1")
    monkeypatch.setenv("MARK_LLM_MODEL", "chat-model")
    settings = Settings(home=tmp_path)
    assert settings.memory_llm is None and settings.memory is settings.llm

    monkeypatch.setenv("MARK_MEMORY_LLM_MODEL", "extractor")  # alone: same endpoint, another model
    memory = Settings(home=tmp_path).memory
    assert (memory.base_url, memory.model) == ("http://chat:8000/v1", "extractor")
    monkeypatch.setenv("MARK_MEMORY_LLM_BASE_URL", "http://memory:9000/v1")
    monkeypatch.setenv("MARK_MEMORY_LLM_TIMEOUT", "300")
    memory = Settings(home=tmp_path).memory
    assert (memory.base_url, memory.model, memory.timeout_s) == ("http://memory:9000/v1", "extractor", 300.0)
    assert Settings(home=tmp_path, memory_llm=None).memory.base_url == "http://chat:8000/v1"  # explicit None wins


def test_memory_model_naming_a_local_model_runs_embedded_beside_a_hosted_chat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MARK_LLM_BASE_URL", "https://api.example/v1")
    monkeypatch.setenv("MARK_LLM_API_KEY", "sk-chat")
    monkeypatch.setenv("MARK_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("MARK_LLM_N_CTX", "4096")
    monkeypatch.setenv("MARK_MEMORY_LLM_LOCAL_MODEL", "qwen2.5-coder-1.5b")
    memory = Settings(home=tmp_path).memory
    assert memory.is_local and memory.api_key is None and memory.model == "local"
    assert memory.local_model == "qwen2.5-coder-1.5b" and memory.local_n_ctx == 4096  # the rest is inherited


def test_default_memory_model_applies_only_to_the_default_embedded_chat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mark_agents import config

    monkeypatch.setattr(config, "DEFAULT_MEMORY_MODEL", "qwen2.5-coder-1.5b")
    monkeypatch.setattr(config, "DEFAULT_CHAT_MODEL", "qwen2.5-coder-0.5b")
    memory = Settings(home=tmp_path).memory
    assert memory.is_local and memory.local_model == "qwen2.5-coder-1.5b"
    named = Settings(home=tmp_path, llm=LLMSettings(local_model="qwen2.5-coder-0.5b"))
    assert named.memory is named.llm  # a chat model chosen by name is the memory model too
    mine = Settings(home=tmp_path, llm=LLMSettings(local_model_path=tmp_path / "mine.gguf"))
    assert mine.memory is mine.llm
    hosted = Settings(home=tmp_path, llm=LLMSettings(base_url="http://chat:8000/v1"))
    assert hosted.memory is hosted.llm


def test_unknown_bundled_model_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mark_cli.settings import build_settings
    from memory_store.errors import InvalidInput

    monkeypatch.setenv("MARK_MEMORY_LLM_LOCAL_MODEL", "qwen-9000b")
    with pytest.raises(InvalidInput) as info:
        build_settings(tmp_path)
    message = str(info.value)
    assert message.startswith("MARK_MEMORY_LLM_LOCAL_MODEL='qwen-9000b' is not valid")
    assert "qwen2.5-coder-0.5b" in message and "\n" not in message


def test_the_store_gets_its_own_part_of_the_settings(tmp_path: Path) -> None:
    from memory_store.config import StoreSettings

    settings = Settings(home=tmp_path, embedding_device="cpu", llm=LLMSettings(model="m"))
    store = settings.store
    assert type(store) is StoreSettings and store.home == tmp_path and store.embedding_model == settings.embedding_model
    assert not hasattr(store, "llm")
