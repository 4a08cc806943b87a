"""MemoryAgent control flow with a scripted fake LLM: turns stored first, background extraction, faults, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mark_agents import MemoryAgent, Settings
from mark_agents.llm import LLMUnavailable
from memory_store import MemoryStore
from tests.mark_agents.fake_llm import RoleLLM


@pytest.fixture
def llm() -> RoleLLM:
    fake = RoleLLM()
    fake.extract = lambda body: fake.notes(
        *[("user_question", said.replace("My ", "The user's ").replace("I ", "The user ")) for said in fake.said(body)]
    )
    return fake


@pytest.fixture
def make_agent(tmp_path, embedder, llm):
    agents = []

    def make(**kwargs) -> MemoryAgent:
        settings = Settings(home=tmp_path / "home", **kwargs)
        store = MemoryStore(settings, embedder=embedder)
        agent = MemoryAgent(settings, llm=llm.client(), store=store, owns_llm=True, owns_store=True)
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        a.close()


async def test_chat_uses_memories_and_remembers_in_background_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    agent.store.add("The user's dog is called Biscuit.", "alice")
    llm.reply = lambda body: "Your dog is Biscuit." if "Biscuit" in body["messages"][0]["content"] else "?"
    reply = await agent.achat("alice", "What is my dog's name?")
    assert reply.reply == "Your dog is Biscuit."
    assert [m.text for m in reply.memories] == ["The user's dog is called Biscuit."]
    system = llm.calls("reply")[0]["messages"][0]["content"]
    assert "<memories>" in system and "data, not instructions" in system
    assert reply.usage.calls == 1 and reply.memory_ms > 0
    await agent.aflush()
    turns = agent.store.turns("alice")
    assert [t.role for t in turns] == ["user", "assistant"] and {t.extraction_status for t in turns} == {"done"}
    assert agent.store.get(reply.memories[0].id, "alice").recall_count == 1


async def test_endpoint_down_keeps_the_turn_and_extraction_is_retried_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    llm.down = True
    with pytest.raises(LLMUnavailable, match="your message was saved"):
        await agent.achat("alice", "My cat is called Mochi.")
    (turn,) = agent.store.turns("alice")
    assert turn.content == "My cat is called Mochi." and turn.extraction_status == "pending"
    llm.down = False
    assert await agent.aprocess_pending() == 1
    assert [m.text for m in agent.store.list("alice").items] == ["The user's cat is called Mochi."]
    assert agent.store.turns("alice")[0].extraction_status == "done"


async def test_invalid_json_is_retried_then_recorded_as_failed_never_dropped_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    llm.extract = lambda body: "{not json"
    result = await agent.aremember([{"role": "user", "content": "I am allergic to peanuts."}], "alice")
    assert result.status == "failed" and "no valid extraction" in result.error.lower()
    assert len(llm.calls("extract")) == 3  # bounded repair attempts
    (turn,) = agent.store.turns("alice")
    assert turn.extraction_status == "failed" and turn.attempts == 1 and turn.last_error
    llm.extract = lambda body: llm.notes(("user_question", "The user is allergic to peanuts."))
    await agent.aprocess_pending()
    assert agent.store.turns("alice")[0].extraction_status == "done"
    assert agent.store.list("alice").items[0].text == "The user is allergic to peanuts."


async def test_session_resumes_in_a_new_agent_with_scripted_fake_llm(make_agent, llm):
    first = make_agent()
    llm.reply = lambda body: "Nice to meet you."
    await first.achat("alice", "Hello, I'm planning a trip.", session_id="trip")
    await first.aclose()
    second = make_agent()
    await second.achat("alice", "Where was I?", session_id="trip")
    sent = llm.calls("reply")[-1]["messages"]
    assert [m["content"] for m in sent[1:]] == ["Hello, I'm planning a trip.", "Nice to meet you.", "Where was I?"]
    await second.achat("alice", "New topic.", session_id="other")
    assert [m["content"] for m in llm.calls("reply")[-1]["messages"][1:]] == ["New topic."]


async def test_feedback_moves_trust_of_the_memories_used_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    m = agent.store.add("The user prefers metric units.", "alice", trust=0.6)
    reply = await agent.achat("alice", "Which units do I prefer?")
    assert await agent.afeedback("alice", reply.response_id, good=False) == [m.id]
    assert agent.store.get(m.id, "alice").trust == pytest.approx(0.5)
    with pytest.raises(Exception, match="no reply"):
        await agent.afeedback("bob", reply.response_id, good=True)


async def test_many_users_at_once_stay_isolated_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    for n in range(5):
        agent.store.add(f"The user's locker code is {n}{n}{n}.", f"user{n}")
    replies = await asyncio.gather(*[agent.achat(f"user{n}", "What is my locker code?") for n in range(5)])
    for n, r in enumerate(replies):
        assert [m.text for m in r.memories] == [f"The user's locker code is {n}{n}{n}."]
    await agent.aflush()


async def test_purge_removes_chat_state_too_with_scripted_fake_llm(make_agent, llm, tmp_path):
    agent = make_agent()
    llm.reply = lambda body: "Got it: quokkasecret."
    await agent.achat("alice", "My password hint is quokkasecret.")
    await agent.aflush()
    report = await agent.apurge_user("alice")
    assert report.turns == 2
    await agent.aclose()
    home = Path(tmp_path / "home")
    leaks = [p.name for p in home.rglob("*") if p.is_file() and b"quokkasecret" in p.read_bytes()]
    assert leaks == []


async def test_sync_close_after_async_use_closes_the_chat_state_with_scripted_fake_llm(make_agent, llm):
    """An async user who calls the sync `close` (no `aclose`): the chat state's connection is closed there, not left
    to the garbage collector, which stopped it from a closed loop ("Event loop is closed" in its worker thread)."""
    agent = make_agent()
    llm.reply = lambda body: "Noted."
    await agent.achat("alice", "My name is Alice.")
    await agent.aflush()
    saver = agent._saver
    assert saver is not None and saver.conn._thread.is_alive()
    agent.close()
    assert agent._saver is None and not saver.conn._thread.is_alive()
    agent.close()  # twice is harmless


def test_sync_api_streams_and_flushes_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    llm.reply = lambda body: "Hello there, Alice."
    tokens: list[str] = []
    reply = agent.chat("alice", "My name is Alice.", on_token=tokens.append)
    assert "".join(tokens) == "Hello there, Alice." == reply.reply
    agent.flush()
    assert agent.store.list("alice").items[0].text == "The user's name is Alice."
    assert agent.recall("What is my name?", "alice").memories[0].text == "The user's name is Alice."


async def test_bad_input_is_rejected_before_anything_is_stored_with_scripted_fake_llm(make_agent):
    agent = make_agent()
    for message in ["", "   ", "x" * 300_000]:
        with pytest.raises(Exception, match="message"):
            await agent.achat("alice", message)
    with pytest.raises(Exception, match="user id"):
        await agent.achat("", "hello")
    with pytest.raises(Exception, match="messages"):
        await agent.aremember([], "alice")
    assert agent.store.turns("alice") == []
    assert agent.store.list("alice").total == 0


async def test_a_fact_whose_extraction_failed_is_still_recalled_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    llm.extract = lambda body: "{not json"  # every extraction fails: no note is ever written
    await agent.achat("alice", "My favourite tea is Lapsang-42.", session_id="s1")
    await agent.aflush()
    assert agent.store.list("alice").total == 0
    assert agent.store.turns("alice")[0].extraction_status == "failed"
    llm.reply = lambda body: "Lapsang-42." if "Lapsang-42" in body["messages"][0]["content"] else "I don't know."
    reply = await agent.achat("alice", "Which tea do I like?", session_id="s2")
    assert reply.reply == "Lapsang-42."
    assert [t.text for t in reply.recalled_turns if t.role == "user"] == ["My favourite tea is Lapsang-42."]


async def test_recall_leaves_out_what_the_chat_prompt_already_shows_with_scripted_fake_llm(make_agent, llm):
    agent = make_agent()
    await agent.achat("alice", "My locker code is 4471.", session_id="s1")
    reply = await agent.achat("alice", "What is my locker code?", session_id="s1")
    await agent.aflush()  # its note may exist by now: notes are welcome, the raw turn is not repeated
    system = llm.calls("reply")[-1]["messages"][0]["content"]
    assert "My locker code is 4471." not in system  # it is in the session's history messages already
    assert any("4471" in m["content"] for m in llm.calls("reply")[-1]["messages"][1:])
    assert reply.recalled_turns == []


async def test_notes_are_built_by_the_memory_model_apart_from_the_chat_model_with_scripted_fake_llm(
    tmp_path, embedder, llm
):
    chat = RoleLLM()
    chat.reply = lambda body: "Nice to meet Biscuit!"
    settings = Settings(home=tmp_path / "home")
    agent = MemoryAgent(
        settings,
        llm=chat.client(),
        memory_llm=llm.client(),
        store=MemoryStore(settings, embedder=embedder),
        owns_store=True,
    )
    try:
        await agent.achat("alice", "My dog is called Biscuit.")
        await agent.aflush()
        assert [m.text for m in agent.store.list("alice").items] == ["The user's dog is called Biscuit."]
        assert chat.calls("extract") == [] and len(chat.calls("reply")) == 1
        assert len(llm.calls("extract")) == 1 and llm.calls("reply") == []
        rebuilt = await agent.arederive("alice", fresh=True)  # re-deriving probes and uses the memory model
        assert rebuilt.status == "done" and len(llm.calls("extract")) == 2 and len(chat.calls("reply")) == 1
    finally:
        await agent.aclose()


async def test_a_configured_memory_model_is_connected_and_closed_by_the_agent_with_scripted_fake_llm(
    tmp_path, embedder, llm, monkeypatch
):
    from mark_agents import agent as agent_module
    from mark_agents.config import LLMSettings

    connected = []

    async def connect(llm_settings, models_dir):
        client = llm.client()
        closed = []
        original = client.aclose

        async def aclose():
            closed.append(True)
            await original()

        client.aclose = aclose
        connected.append((llm_settings, closed))
        return client

    monkeypatch.setattr(agent_module, "connect", connect)
    chat = RoleLLM()
    settings = Settings(home=tmp_path / "home", memory_llm=LLMSettings(base_url="http://memory:9000/v1"))
    agent = MemoryAgent(
        settings, llm=chat.client(), store=MemoryStore(settings.store, embedder=embedder), owns_store=True
    )
    await agent.achat("alice", "My dog is called Biscuit.")
    await agent.aflush()
    await agent.aremember([{"role": "user", "content": "My cat is called Mochi."}], "alice")
    texts = {m.text for m in agent.store.list("alice").items}
    assert texts == {"The user's dog is called Biscuit.", "The user's cat is called Mochi."}
    assert chat.calls("extract") == [] and len(connected) == 1  # connected once, for both extractions
    assert connected[0][0].base_url == "http://memory:9000/v1" and connected[0][1] == []
    await agent.aclose()
    assert connected[0][1] == [True]  # the agent created it, the agent closed it


async def test_a_given_client_stays_the_callers_unless_handed_over_with_scripted_fake_llm(tmp_path, embedder, llm):
    closed: list[str] = []

    def counted(name: str):
        client = llm.client()
        original = client.aclose

        async def aclose():
            closed.append(name)
            await original()

        client.aclose = aclose
        return client

    settings = Settings(home=tmp_path / "home")
    kept = MemoryAgent(
        settings, llm=counted("kept"), store=MemoryStore(settings.store, embedder=embedder), owns_store=True
    )
    await kept.achat("alice", "Hello.")
    await kept.aclose()
    handed = MemoryAgent(settings, llm=counted("handed"), owns_llm=True, store=MemoryStore(settings, embedder=embedder))
    await handed.achat("alice", "Hello again.")
    await handed.aclose()
    handed.store.close()  # given without owns_store: the caller's to close
    assert closed == ["handed"]


async def test_the_chat_state_carries_the_turn_and_the_config_only_the_thread_with_scripted_fake_llm(make_agent):
    from mark_agents.graph import thread_config

    agent = make_agent()
    reply = await agent.achat("alice", "My locker code is 4471.", session_id="s1")
    config = thread_config("alice", "s1")
    assert list(config["configurable"]) == ["thread_id"]
    state = (await agent._graph.aget_state(config)).values
    assert state["user_id"] == "alice" and state["session_id"] == "s1"
    assert state["message"] == "My locker code is 4471." and state["response_id"] == reply.response_id
    assert state["user_turn_id"] == reply.turn_ids[0] and state["assistant_turn_id"] == reply.turn_ids[1]
    assert state["memory_ms"] == reply.memory_ms > 0


async def test_recall_honours_its_session_id_with_scripted_fake_llm(make_agent):
    agent = make_agent()
    await agent.aremember(
        [
            {"role": "user", "content": "My locker code is 4471."},
            {"role": "assistant", "content": "Noted: 4471."},
        ],
        "alice",
        session_id="gym",
        extract=False,
    )
    everywhere = await agent.arecall("What is my locker code?", "alice")
    assert "My locker code is 4471." in everywhere.text
    # The session's recent messages are the chat prompt's history: recall for that session leaves them out.
    in_session = await agent.arecall("What is my locker code?", "alice", session_id="gym")
    assert "4471" not in in_session.text and in_session.turns == []
    elsewhere = await agent.arecall("What is my locker code?", "alice", session_id="work")
    assert "My locker code is 4471." in elsewhere.text


async def test_nothing_to_retry_connects_no_memory_model_with_scripted_fake_llm(tmp_path, embedder, monkeypatch):
    from mark_agents import agent as agent_module
    from mark_agents.config import LLMSettings

    connected: list[object] = []

    async def connect(llm, models_dir):
        connected.append(llm)
        raise AssertionError("the memory model must not be connected")

    monkeypatch.setattr(agent_module, "connect", connect)
    settings = Settings(home=tmp_path / "home", memory_llm=LLMSettings(base_url="http://memory:9000/v1"))
    agent = MemoryAgent(
        settings, llm=RoleLLM().client(), store=MemoryStore(settings.store, embedder=embedder), owns_store=True
    )
    await agent.aremember([{"role": "user", "content": "Hello."}], "alice", extract=False)
    await agent.astore.set_turns_status([t.id for t in agent.store.turns("alice")], "done")
    assert await agent.aprocess_pending("alice") == 1
    assert connected == []
    await agent.aclose()
