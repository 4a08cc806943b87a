"""The chat REPL driven in process through piped-style stdin, on a MemoryAgent over a scripted fake LLM.

The store is real (SQLite, chroma, the embedding model); only the LLM endpoint is played from a script.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from mark_agents.repl import run_repl
from memory_store import MemoryStore
from memory_store.ids import short_id
from memory_store.validation import MAX_TURN_CHARS
from tests.mark_agents.fake_llm import Brain


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def brain() -> Brain:
    return Brain()


def make_agent(home, brain: Brain, embedder) -> MemoryAgent:
    settings = Settings(home=home)
    store = MemoryStore(settings, embedder=embedder)
    return MemoryAgent(settings, llm=brain.script.client(), store=store, owns_store=True)


async def chat(agent: MemoryAgent, *lines: str, user: str = "alice", stream: bool = True) -> tuple[int, str, str]:
    """Run a REPL session on these input lines; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = await run_repl(
        agent,
        user,
        stdin=io.StringIO("".join(line + "\n" for line in lines)),
        out=Console(file=out, width=200),
        err=Console(file=err, width=200),
        stream=stream,
        interactive=False,
    )
    return code, out.getvalue(), err.getvalue()


async def test_repl_remembers_and_explains_with_scripted_fake_llm(home, brain, embedder):
    code, out, err = await chat(
        make_agent(home, brain, embedder),
        "My dog is called Biscuit.",
        "/memories",
        "/search dog",
        "What is my dog's name?",
        "/why",
        "/exit",
    )
    assert code == 0, err
    assert "error" not in err
    lines = out.splitlines()
    assert lines[0] == "Noted."  # plain reply: no prompt, no decoration in a pipe
    assert "1 memories" in lines
    memory_row = next(line for line in lines if "Biscuit" in line and "user_question" in line)
    assert re.match(r"^[0-9a-f]{10}  user_question  The user's dog is called Biscuit\.$", memory_row)
    assert re.search(r"^[0-9a-f]{10}  0\.\d{3}  user_question  The user's dog is called Biscuit\.$", out, re.M)
    assert "You told me: The user's dog is called Biscuit." in lines
    why = out[out.index("notes behind the last reply") :]
    row = next(line for line in why.splitlines() if "Biscuit" in line)
    scores = row.split("  ")[-5:]  # similarity, recency, frequency, trust, final
    assert all(re.fullmatch(r"\d\.\d\d", s) for s in scores), row
    assert float(scores[3]) == pytest.approx(0.7)  # trust of a user_question note


async def test_repl_forget_feedback_export_help_with_scripted_fake_llm(home, brain, embedder, tmp_path):
    agent = make_agent(home, brain, embedder)
    mid = agent.store.add("The user's cat is called Miso.", "alice", trust=0.6).id
    export = tmp_path / "out" / "alice.jsonl"
    export.parent.mkdir()
    code, out, err = await chat(
        agent,
        "/good",
        "/why",
        "What is my cat called?",
        "/good",
        "/bad",
        "/bad too vague",
        f"/export {export}",
        f"/forget {short_id(mid)}",
        "/memories",
        "/forget zzzz",
        "/forget",
        "/search",
        "/help",
        "/frobnicate",
    )  # no /exit: end of input ends the session too
    assert code == 0
    assert "no reply to rate yet" in out
    assert "no reply yet" in out
    assert "You told me: The user's cat is called Miso." in out
    assert out.count("trust raised for 1 memory") == 1
    assert out.count("trust lowered for 1 memory") == 2
    assert f"forgot {short_id(mid)}: The user's cat is called Miso." in out
    assert "no memories yet" in out
    for command in ("/memories", "/search QUERY", "/why", "/forget ID", "/export [FILE]", "/exit"):
        assert command in out
    err_lines = err.splitlines()
    assert "error: no memory 'zzzz' for this user" in err_lines
    assert "error: usage: /forget ID (a short id from /memories) or /forget about TOPIC" in err_lines
    assert "error: usage: /search QUERY" in err_lines
    assert "error: unknown command /frobnicate (try /help)" in err_lines
    assert "Traceback" not in err

    records = [json.loads(line) for line in export.read_text().splitlines()]
    assert records[0]["type"] == "header"
    assert any(r["type"] == "memory" and r["id"] == mid for r in records)
    assert {r["value"] for r in records if r["type"] == "feedback"} == {1, -1}
    assert not list(export.parent.glob("*.tmp"))
    with MemoryStore(Settings(home=home), embedder=embedder) as store:
        assert store.list("alice").total == 0
        assert [f.comment for f in store.feedback("alice")].count("too vague") == 1
        history = store.history("alice", mid)
        assert history[-1].event == "forget" and history[-1].reason == "forgotten in chat"
        assert all("Miso" not in (e.old_text or "") + (e.new_text or "") for e in history)


async def test_repl_endpoint_down_then_retried_at_next_start_with_scripted_fake_llm(home, brain, embedder):
    brain.down = True
    code, out, err = await chat(make_agent(home, brain, embedder), "My dog is called Biscuit.", "/help", "/exit")
    assert code == 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "http://scripted-llm.invalid/v1 unavailable" in errors[0] and "your message was saved" in errors[0]
    assert "/memories" in out  # the REPL went on after the error
    assert "Traceback" not in err
    with MemoryStore(Settings(home=home), embedder=embedder) as store:
        assert [t.content for t in store.turns("alice", status="pending")] == ["My dog is called Biscuit."]

    brain.down = False  # the endpoint is back: the next session extracts the stored turn at start
    code, out, err = await chat(make_agent(home, brain, embedder), "/memories")
    assert code == 0, err
    assert "The user's dog is called Biscuit." in out
    with MemoryStore(Settings(home=home), embedder=embedder) as store:
        assert store.turns("alice", status="pending") == []


async def test_repl_no_stream_bad_input_and_isolation_with_scripted_fake_llm(home, brain, embedder):
    code, out, err = await chat(
        make_agent(home, brain, embedder),
        "My dog is called Biscuit.",
        "x" * (MAX_TURN_CHARS + 10),
        "",
        "/memories",  # waits for the background extraction, so the next reply can recall it
        "What is my dog's name?",
        stream=False,
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Noted." and lines[-1] == "You told me: The user's dog is called Biscuit."
    # Status lines ("loading the embedding model…") appear when the machine is slow: only the error counts.
    (error,) = [line for line in err.splitlines() if not line.endswith("…")]
    assert error == f"error: message is {MAX_TURN_CHARS + 10:,} characters; the limit is {MAX_TURN_CHARS:,}"
    # Bob shares the store and sees nothing of Alice's.
    code, out, err = await chat(make_agent(home, brain, embedder), "What is my dog's name?", "/memories", user="bob")
    assert code == 0, err
    assert out.splitlines() == ["Noted.", "no memories yet"]


async def test_repl_sessions_resume_from_checkpoint_with_scripted_fake_llm(home, brain, embedder):
    await chat(make_agent(home, brain, embedder), "Hello there.", "/exit")
    await chat(make_agent(home, brain, embedder), "Second message.", "/exit")
    replies = brain.calls("reply")
    # The second agent sent the first exchange as history: the session resumed from the SQLite checkpoint.
    assert [m["content"] for m in replies[-1]["messages"][1:]] == ["Hello there.", "Noted.", "Second message."]


async def test_repl_shows_markup_in_memories_literally_with_scripted_fake_llm(home, brain, embedder, monkeypatch):
    """Issue 8.2: a memory holding rich markup (a user or a model may write one) is text on a terminal too."""
    agent = make_agent(home, brain, embedder)
    texts = ["I like brackets [/] and [bold]x", "[red]red[/red] and [link=https://e.x]a link[/link] :smile:"]
    user = "[/]alice[bold]"
    ids = [agent.store.add(t, user).id for t in texts]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/memories\n/search brackets\n/forget {short_id(ids[1])}\n"))
    out, err = io.StringIO(), io.StringIO()
    code = await run_repl(
        agent,
        user,
        stdin=None,
        out=Console(file=out, width=200),
        err=Console(file=err, width=200),
        interactive=True,
    )
    assert code == 0, err.getvalue()
    shown = out.getvalue()
    assert shown.count(texts[0]) == 2  # /memories and /search
    assert shown.count(texts[1]) >= 2  # /memories and /forget (and /search if it ranks)
    assert f"forgot {short_id(ids[1])}: {texts[1]}" in shown
    assert f"user {user}" in err.getvalue()  # the banner
    assert "Traceback" not in err.getvalue() and "error" not in err.getvalue()
