"""The evaluator's typed settings: the judge (MARK_JUDGE_*) and the helper (MARK_HELPER_*, --helper-model) over the
answering model's settings, and the run's embedding model from the store's settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mark_agents.config import LLMSettings, Settings
from mark_eval.config import EvalSettings, embedder_factory
from memory_store.errors import InvalidInput


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MARK_", "OPENAI_")) and name != "MARK_LLM_SERVER_DIR":
            monkeypatch.delenv(name)


def test_without_a_judge_the_answering_model_judges(tmp_path: Path) -> None:
    config = EvalSettings.from_settings(Settings(home=tmp_path))
    assert config.judge_llm is None and config.judge is config.settings.llm and not config.judge_apart
    assert config.helper_llm is None


def test_judge_from_environment_inherits_the_chat_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_LLM_BASE_URL", "http://chat:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("MARK_JUDGE_MODEL", "gpt-4o")
    judge = EvalSettings.from_settings(Settings(home=tmp_path)).judge
    assert (judge.base_url, judge.api_key, judge.model) == ("http://chat:8000/v1", "sk-openai", "gpt-4o")

    monkeypatch.setenv("MARK_JUDGE_BASE_URL", "https://judge.example/v1")
    monkeypatch.setenv("MARK_JUDGE_API_KEY", "sk-judge")
    config = EvalSettings.from_settings(Settings(home=tmp_path))
    judge = config.judge
    assert (judge.base_url, judge.api_key, judge.model) == ("https://judge.example/v1", "sk-judge", "gpt-4o")
    assert config.judge_apart


def test_a_bad_judge_variable_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK_JUDGE_TIMEOUT_S", "soon")
    with pytest.raises(InvalidInput, match="MARK_JUDGE_TIMEOUT_S='soon' is not valid"):
        EvalSettings.from_settings(Settings(home=tmp_path))


def test_helper_settings_from_option_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm=LLMSettings(base_url="http://127.0.0.1:9/v1", model="big", api_key="k"))
    assert EvalSettings.from_settings(settings).helper_llm is None
    assert EvalSettings.from_settings(settings, helper_model="big").helper_llm is None  # the answering model itself
    small = EvalSettings.from_settings(settings, helper_model="small").helper_llm
    assert small is not None
    assert small.model == "small" and small.base_url == "http://127.0.0.1:9/v1" and small.api_key == "k"
    monkeypatch.setenv("MARK_HELPER_BASE_URL", "http://127.0.0.1:8/v1")
    monkeypatch.setenv("MARK_HELPER_MODEL", "lite")
    other = EvalSettings.from_settings(settings).helper_llm
    assert other is not None
    assert other.base_url == "http://127.0.0.1:8/v1" and other.model == "lite" and other.api_key == "k"


def test_the_embedding_model_is_the_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mark_eval.config as config_module

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(config_module, "get_embedder", lambda name, device: seen.append((name, device)) or object())
    monkeypatch.setattr(config_module, "CachedEmbedder", lambda inner: inner)
    settings = Settings(home=tmp_path, embedding_model=str(tmp_path / "my-model"), embedding_device="cpu")
    embedder_factory(EvalSettings.from_settings(settings).store)()
    assert seen == [(str(tmp_path / "my-model"), "cpu")]
