"""Forgetting that holds, probed adversarially (mark_agents.forget_probes) through the real agent, store, chroma and
embedding model.

The full probe grid runs on the scripted fake LLM (tests/mark_agents/fake_llm.py RoleLLM: a careful extractor that
*recovers* forgotten facts from their redacted turns during rebuilds, and replies that repeat whatever memory they
are shown), reading the reply prompts from the fake's logged requests. One `llm` test runs a slice (one forgotten
fact, five kept) with the real local model. Also here: the session's checkpointed messages (the issue's step 3), the
REPL's `/forget about`, and the CLI's `forget --about`.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mark_agents import MemoryAgent, Settings
from mark_agents.forget_probes import (
    FACTS,
    PLANTS,
    ProbeScript,
    Probing,
    RecordingLLM,
    _in_keyword_index,
    _rows,
    found,
    found_in_bytes,
    pick,
    plot,
    render,
    run_probes,
)
from mark_agents.llm import connect
from mark_agents.prompts import AGENT_SYSTEM, ANSWER_SYSTEM, COMBINED_SYSTEM, RELATION_SYSTEM
from mark_agents.repl import run_repl
from mark_cli.main import app
from memory_store import CachedEmbedder, MemoryStore
from tests.mark_agents.fake_llm import RoleLLM


def scripted(script: ProbeScript) -> RoleLLM:
    fake = RoleLLM()
    fake.extract = lambda body: fake.notes(*script.extract(fake.said(body)))
    fake.reply = lambda body: script.reply(body["messages"][0]["content"], body["messages"][-1]["content"])
    return fake


@pytest.fixture
def make_agent(tmp_path, embedder):
    agents: list[MemoryAgent] = []

    def make(llm, home: Path | None = None) -> MemoryAgent:
        settings = Settings(home=home or tmp_path / "home")
        store = MemoryStore(settings, embedder=CachedEmbedder(embedder))
        agent = MemoryAgent(settings, llm=llm, store=store, owns_store=True)
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        a.close()


def test_the_probe_set_is_sound():
    """At least 20 facts of every kind are forgotten; no token hides in a system prompt (it would be "found" in every
    prompt) or in another fact; every planted fact has its questions."""
    forgotten = [f for f in FACTS if f.forget]
    assert len(forgotten) >= 20
    assert {f.kind for f in forgotten} == {"name", "number", "place", "preference", "recommendation"}
    assert sum(1 for f in forgotten if f.about) >= 3
    prompts = " ".join([ANSWER_SYSTEM, COMBINED_SYSTEM, RELATION_SYSTEM, *AGENT_SYSTEM.values()])
    assert [f.token for f in FACTS if found(f.token, prompts)] == []
    for f in FACTS:
        assert not [g.key for g in FACTS if g is not f and found(f.token, g.note)], f.key
        questions = [f.direct, *f.paraphrases, f.indirect, f.related]
        assert not [q for q in questions if q and found(f.token, q)], f.key
        if f.forget:
            assert len(f.paraphrases) == 3 and f.indirect and f.related
    assert {k for p in PLANTS for k in p.facts} == {f.key for f in FACTS}


def test_a_fact_in_bytes_is_found_but_not_inside_record_ids_or_version_numbers():
    """The byte probe finds a token as text holds it, never inside LangGraph's checkpoint ids and channel versions
    (a UUID segment "-4471-" or the float "138.0.24471213297071281" once made the grid fail one run in four)."""
    assert found_in_bytes("4471", b"my licence plate is kz-4471, saved.")
    assert found_in_bytes("4471", b"\xa7content\xb4kz-4471 is the plate")
    assert not found_in_bytes("4471", b"\xd9$968edcdd-4471-4ab7-38f3-304ba8f3d817")
    assert not found_in_bytes("4471", b"\xd9400000000000000000000000000000138.0.24471213297071281")
    assert not found_in_bytes("4471", b"row 3f2a9c4471bd02e1aa7c")  # a hex id
    assert found_in_bytes("4471", b"code 4471-b")  # a short run of hex and dashes is text, not an id
    # ids stored back to back in a SQLite page: the UUID holding "-8841-" starts right after another id's hex
    page = b"6ff6a28e39cb24760c206500c1f1eece4-f2e0-6505-804c-1e5467311df4dd82e349-3827-0826-8841-b93e007395fe\x04"
    assert not found_in_bytes("8841", page)
    assert found_in_bytes("8841", b"pin 8841-0826 at the door")  # hex and dashes, but not UUID-shaped


async def test_forgotten_facts_never_resurface_and_kept_ones_stay_scripted_llm(make_agent, tmp_path):
    """The whole grid: >= 20 facts planted through chat, forgotten (by id and with --about), then probed by chat
    (same and new session, paraphrases, indirect, related), /why, recall, search in all three modes, export, history,
    the chat state file, every file, rebuild and rebuild --fresh with an extractor that recovers them."""
    script = ProbeScript(FACTS, PLANTS)
    fake = scripted(script)
    agent = make_agent(fake.client())
    p = Probing(agent, lambda: [json.dumps(b) for b in fake.calls("reply")], FACTS, PLANTS, script=script)
    result = await run_probes(p)

    assert result["facts_forgotten"] >= 20 and result["probed"] >= 20 * 20
    assert result["baseline_recalled"] == {"recalled": len(FACTS), "facts": len(FACTS)}  # the probes can see facts
    assert result["leaks"] == []
    assert result["resurfaced"] == 0
    for stage, c in result["collateral"].items():
        assert c["recalled"] == c["kept"], (stage, c["lost"])
    assert result["recovery_attempts_blocked"] >= result["facts_forgotten"]  # the recovering extractor was stopped
    assert all(f["memories"] >= 1 for f in result["forgets"].values())
    assert all(f.get("planned_note", True) for f in result["forgets"].values())  # --about found each note
    # The probes can see a fact where it stands: the kept ones appear in the prompts, rows, index and files.
    assert any(found("Northwind", b) for b in p.prompts())
    db = agent.store.settings.db_path
    assert _in_keyword_index(db, "Northwind") and any(found_in_bytes("Northwind", v) for v in _rows(db))
    assert found_in_bytes("Northwind", (db.parent / "chat_state.db").read_bytes().lower())

    out = io.StringIO()
    render({**result, "llm": "scripted", "machine": "test"}, Console(file=out, width=140))
    assert "resurfaced / probed: 0 / " in out.getvalue()
    png = plot({**result, "llm": "scripted"}, tmp_path / "forget.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_same_session_forgets_its_messages_scripted_llm(make_agent):
    """The issue's step 3: after forgetting, the session's checkpointed messages no longer hold the PIN, in the
    prompt of the next turn or in any checkpoint of the file; the rest of the message stays."""
    script = ProbeScript(FACTS, PLANTS)
    fake = scripted(script)
    agent = make_agent(fake.client())
    await agent.achat("carol", "My bank PIN is 8841 and I bank with Northwind Credit.", "s1")
    await agent.achat("carol", "What is my bank PIN?", "s1")
    await agent.aflush()
    note = next(m for m in agent.store.list("carol").items if "8841" in m.text)
    report = await agent.aforget("carol", note.id)
    assert report.chat_threads == 1 and len(report.turns) >= 2
    await agent.achat("carol", "What is my bank PIN?", "s1")
    sent = fake.calls("reply")[-1]["messages"]
    assert not found("8841", json.dumps(sent))
    assert "[forgotten] and I bank with Northwind Credit." in [m["content"] for m in sent]
    await agent.aflush()
    with sqlite3.connect(Path(agent.settings.home) / "chat_state.db") as db:
        assert db.execute("SELECT count(DISTINCT checkpoint_id) FROM checkpoints").fetchone()[0] >= 2
    raw = b"".join(p.read_bytes() for p in Path(agent.settings.home).glob("chat_state.db*")).lower()
    # Not a bare `in`: LangGraph's checkpoint ids are hex, and "8841" turns up in one now and then (found_in_bytes).
    assert not found_in_bytes("8841", raw) and found_in_bytes("northwind", raw)
    # Said again after forgetting: new information, remembered normally.
    await agent.achat("carol", "My bank PIN is 8841 and I bank with Northwind Credit.", "s2")
    await agent.aflush()
    assert any("8841" in m.text for m in agent.store.list("carol").items)
    assert any(found("8841", h.turn.content) for h in agent.store.search_episodes("bank PIN", "carol"))


async def test_repl_forget_about_asks_then_forgets_scripted_llm(make_agent):
    script = ProbeScript(FACTS, PLANTS)
    fake = scripted(script)
    agent = make_agent(fake.client())
    for say in ("My dog is called Waffles and my rabbit is called Clover.", "My cat is named Pickles."):
        await agent.achat("alice", say)
    await agent.aflush()
    lines = ["What is my dog's name?", "/forget about my dog", "n", "/forget about my dog", "yes", "/why", "/memories"]
    out, err = io.StringIO(), io.StringIO()
    code = await run_repl(
        agent,
        "alice",
        stdin=io.StringIO("\n".join(lines) + "\n"),
        out=Console(file=out, width=200),
        err=Console(file=err, width=200),
        interactive=False,
    )
    assert code == 0, err.getvalue()
    shown = out.getvalue()
    assert "1 memories and" in shown and "The user's dog is called Waffles." in shown  # the plan, shown first
    assert "kept" in shown and "forgot 1 memory" in shown
    after = shown.split("forgot 1 memory", 1)[1]
    assert not found("Waffles", after)  # /why and /memories after the forget
    assert "The user's rabbit is called Clover." in after and "Pickles" in after
    with MemoryStore(Settings(home=agent.settings.home), embedder=agent.store.embedder) as store:
        assert not found("Waffles", json.dumps([t.content for t in store.turns("alice")]))


def test_cli_forget_about_asks_and_reports_scripted_llm(tmp_path, embedder, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MARK_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    script = ProbeScript(FACTS, PLANTS)
    fake = scripted(script)
    with MemoryAgent(Settings(home=home), llm=fake.client()) as agent:
        agent.chat("carol", "My gym locker code is 4417.")
        agent.chat("carol", "I play the cello.")
        agent.flush()

    def invoke(*args: str, stdin: str | None = None):
        return CliRunner().invoke(app, ["--home", str(home), *args], input=stdin, catch_exceptions=False)

    r = invoke("memory", "forget", "--about", "my gym locker code", "--user", "carol")
    assert r.exit_code == 2 and "--yes" in r.output  # not interactive: nothing happens without --yes
    r = invoke("memory", "forget", "abc", "--about", "x", "--user", "carol")
    assert r.exit_code == 2
    r = invoke("memory", "forget", "--about", "my gym locker code", "--user", "carol", "--yes", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.splitlines()[-1])
    assert len(report["memories"]) == 1 and report["chat_threads"] == 1 and len(report["turns"]) >= 2
    assert not found("4417", r.stdout)
    r = invoke("memory", "export", "--user", "carol")
    assert not found("4417", r.stdout) and "cello" in r.stdout
    raw = b"".join(p.read_bytes() for p in home.glob("chat_state.db*")).lower()
    assert not found_in_bytes("4417", raw)  # not a bare `in`: a hex checkpoint id may hold "4417"
    r = invoke("memory", "forget", "--about", "my gym locker code", "--user", "carol", "--yes")
    assert r.exit_code == 0 and "nothing matches" in r.stdout


@pytest.mark.llm
async def test_forgotten_facts_never_resurface_with_the_local_model(make_agent, llm_settings):
    """A slice with the real local model: one forgotten fact beside five kept ones, every probe (the full grid with
    this model is `mark bench forget --llm`; three facts took ~25 minutes of a 2-core machine). The model extracts the
    notes and writes the replies; the probes read the prompts it was sent. Nothing forgotten comes back; the rest
    stays recalled."""
    facts, plants = pick(1)
    llm = RecordingLLM(await connect(llm_settings.llm, llm_settings.models_dir))
    agent = make_agent(llm, llm_settings.home)
    p = Probing(agent, lambda: llm.reply_requests, facts, plants)
    result = await run_probes(p)
    assert result["leaks"] == [] and result["resurfaced"] == 0
    assert result["facts_forgotten"] == 1 and result["facts_kept"] == 5
    assert result["probed"] >= 20
    c = result["collateral"]
    assert c["after forgetting"]["recalled"] == c["before forgetting"]["recalled"]
