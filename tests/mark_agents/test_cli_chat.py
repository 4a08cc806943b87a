"""`mark chat`, `mark memory rederive` (old name `rebuild`) and chat state in `mark memory purge`, via the real CLI.

In process (typer's CliRunner) with the LLM connection replaced by the scripted fake; the exit-code test and
the integration test with the real local model run the console script in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from mark_cli.main import app
from memory_store import MemoryStore
from memory_store.validation import user_key
from tests.mark_agents.fake_llm import Brain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MARK_HOME", str(tmp_path / "home"))  # whatever runs without --home stays here too
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path / "home"


@pytest.fixture
def brain(monkeypatch) -> Brain:
    """Every MemoryAgent the CLI builds talks to this scripted fake instead of connecting to a model."""
    fake = Brain()

    async def connect(llm_settings, models_dir):
        return fake.script.client()

    monkeypatch.setattr("mark_agents.agent.connect", connect)
    return fake


def invoke(home: Path, *args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["--home", str(home), *args], input=stdin, catch_exceptions=False)


def threads(home: Path) -> set[str]:
    with sqlite3.connect(home / "chat_state.db") as db:
        return {r[0] for r in db.execute("SELECT DISTINCT thread_id FROM checkpoints")}


def test_cli_chat_piped_with_scripted_fake_llm(home, brain):
    r = invoke(home, "chat", "--user", "alice", stdin="My dog is called Biscuit.\n/memories\n/exit\n")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "Noted."
    assert lines[1] == "1 memories"
    assert re.fullmatch(r"[0-9a-f]{10}  user_question  The user's dog is called Biscuit\.", lines[2])

    r = invoke(home, "chat", "--user", "alice", "--session", "s2", "--no-stream", stdin="What is my dog's name?\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "You told me: The user's dog is called Biscuit."


def test_cli_chat_rejects_a_bad_user_id_with_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "mark_cli.main", "chat", "--user", "   "],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input="",
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "error: user id is empty"


def test_cli_memory_purge_removes_chat_state_with_scripted_fake_llm(home, brain):
    settings = Settings(home=home)
    with MemoryAgent(settings, llm=brain.script.client()) as agent:
        agent.chat("alice", "Hello.", session_id="one")
        agent.chat("alice", "Hello again.", session_id="two")
        agent.chat("bob", "Hi.")
        agent.flush()
    alice = {f"{user_key('alice')}:{user_key(s)}" for s in ("one", "two")}
    assert alice < threads(home)

    r = invoke(home, "memory", "purge", "--user", "alice", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["turns"] == 4
    assert threads(home) == {f"{user_key('bob')}:{user_key('default')}"}
    raw = b"".join(p.read_bytes() for p in home.glob("chat_state.db*"))
    assert b"Hello again." not in raw and b"Hi." in raw


def test_cli_memory_rederive_and_its_old_name_with_scripted_fake_llm(home, brain):
    with MemoryStore(Settings(home=home)) as store:
        store.add_turns(
            [
                {"user_id": "alice", "session_id": "s", "role": "user", "content": "My cat is called Miso."},
                {"user_id": "alice", "session_id": "s", "role": "assistant", "content": "Lovely name."},
            ]
        )
    r = invoke(home, "memory", "rederive", "--user", "alice", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["status"] == "done" and len(result["turn_ids"]) == 2
    (first,) = result["reports"][0]["added"]

    r = invoke(home, "memory", "rebuild", "--user", "alice", "--fresh")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("done: 2 turns, 1 exchanges processed; 1 added")
    with MemoryStore(Settings(home=home)) as store:
        (memory,) = store.list("alice").items
        assert memory.text == "The user's cat is called Miso." and memory.id != first

    brain.down = True
    r = invoke(home, "memory", "rebuild", "--user", "alice")
    assert r.exit_code == 1
    assert r.stdout.startswith("failed: 2 turns, 0 exchanges processed")
    assert "unavailable" in r.stderr and "retried later" in r.stderr


@pytest.mark.llm
def test_cli_chat_remembers_across_processes_with_the_local_model(llm_settings):
    """The issue's acceptance test: tell it in one process, ask in a new one, see it in /memories."""
    env = {**os.environ, "MARK_LLM_BASE_URL": llm_settings.llm.base_url, "NO_COLOR": "1"}

    def chat(stdin: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mark_cli.main", "--home", str(llm_settings.home), "chat", "--user", "alice"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            input=stdin,
            env=env,
            timeout=600,
        )

    first = chat("My dog is called Biscuit.\n/exit\n")
    assert first.returncode == 0, first.stderr
    assert "error" not in first.stderr, first.stderr
    second = chat("What is my dog's name?\n/memories\n/exit\n")
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if re.fullmatch(r"\d+ memories.*", line))
    reply, memories = lines[:title], lines[title + 1 :]
    assert any("Biscuit" in line for line in reply), second.stdout
    assert any("Biscuit" in line for line in memories), second.stdout
