"""Memory builder decisions (confirm, supersede, dispute, add) and its failure handling, with a scripted fake LLM."""

from __future__ import annotations

import json
import logging

import pytest

from mark_agents.builder import MemoryBuilder
from mark_agents.config import AgentConfig
from mark_agents.llm import LLMUnavailable
from memory_store import MemoryStatus, MemoryStore, StoreSettings
from tests.mark_agents.fake_llm import RoleLLM


@pytest.fixture
def store(tmp_path, embedder):
    s = MemoryStore(StoreSettings(home=tmp_path / "h"), embedder=embedder)
    yield s
    s.close()


@pytest.fixture
def llm() -> RoleLLM:
    return RoleLLM()


def exchange(store: MemoryStore, user: str, assistant: str = "Noted.", user_id: str = "alice"):
    return store.add_turns(
        [
            {"user_id": user_id, "session_id": "s", "role": "user", "content": user},
            {"user_id": user_id, "session_id": "s", "role": "assistant", "content": assistant},
        ]
    )


async def test_new_fact_is_added_with_source_and_history_with_scripted_fake_llm(store, llm):
    llm.extract = lambda body: llm.notes(("user_question", "The user has a dog named Biscuit."))
    turns = exchange(store, "My dog is called Biscuit.")
    report = await MemoryBuilder(store, llm.client()).build(turns)
    assert len(report.added) == 1 and report.usage.calls == 1
    m = store.get(report.added[0], "alice")
    assert m.text == "The user has a dog named Biscuit." and m.kind.value == "user_question"
    assert m.source.turn_ids == [t.id for t in turns] and m.trust == pytest.approx(0.7)
    assert store.history("alice", m.id)[0].reason == "new information"


async def test_repeated_fact_confirms_without_an_llm_relation_call_with_scripted_fake_llm(store, llm):
    first = store.add("The user has a dog named Biscuit.", "alice")
    llm.extract = lambda body: llm.notes(("user_question", "The user has a dog named Biscuit."))
    report = await MemoryBuilder(store, llm.client()).build(exchange(store, "Biscuit, my dog, says hi."))
    assert report.confirmed == [first.id] and not report.added
    assert store.get(first.id, "alice").confirm_count == 1
    assert llm.calls("relate") == []
    assert store.history("alice", first.id)[-1].event == "confirm"


async def test_changed_fact_supersedes_the_old_one_with_scripted_fake_llm(store, llm):
    old = store.add("The user lives in Denver.", "alice")
    llm.extract = lambda body: llm.notes(("user_question", "The user moved from Denver to Lisbon."))
    llm.relate = lambda body: json.dumps({"relation": "replaces", "reason": "new home"})
    report = await MemoryBuilder(store, llm.client()).build(exchange(store, "I moved from Denver to Lisbon."))
    assert report.superseded == [old.id]
    kept = store.get(old.id, "alice")
    assert kept.status == MemoryStatus.superseded and kept.valid_until is not None
    assert "OLD: The user lives in Denver." in llm.user_text(llm.calls("relate")[0])
    assert next(h.memory.text for h in store.search("Where does the user live?", "alice")).endswith("Lisbon.")
    event = next(e for e in store.history("alice", old.id) if e.event == "supersede")
    assert event.reason.startswith("fact changed") and event.new_text == "The user moved from Denver to Lisbon."


async def test_contradiction_from_a_less_trusted_source_is_kept_disputed_with_scripted_fake_llm(store, llm):
    old = store.add("The user lives in Denver.", "alice", trust=0.9)
    llm.extract = lambda body: llm.notes(("residual", "The user lives in Denver suburbs of Boston."))
    llm.relate = lambda body: json.dumps({"relation": "conflicts", "reason": "two cities"})
    report = await MemoryBuilder(store, llm.client()).build(exchange(store, "Boston winters near Denver are cold."))
    assert len(report.disputed) == 1
    new = store.get(report.disputed[0], "alice")
    assert new.status == MemoryStatus.disputed and store.get(old.id, "alice").status == MemoryStatus.active
    assert (
        "less" in store.history("alice", new.id)[-1].reason
        or "more trusted" in store.history("alice", new.id)[-1].reason
    )


async def test_cleaning_drops_questions_echoes_and_ungrounded_notes_with_scripted_fake_llm(store, llm):
    llm.extract = lambda body: llm.notes(
        ("user_question", "What breed is Biscuit?"),
        ("llm_response", "The user wants to know what the name of their dog is."),
        ("llm_response", "The user wants answers: format, length, units."),
        ("residual", "Biscuit has a long tail and lives in Paris."),
        ("user_question", "The user has a dog named Biscuit."),
        ("user_question", "The user has a dog named Biscuit."),
    )
    report = await MemoryBuilder(store, llm.client()).build(exchange(store, "My dog is called Biscuit."))
    assert [store.get(i, "alice").text for i in report.added] == ["The user has a dog named Biscuit."]
    assert len(report.skipped) == 5


async def test_llm_down_during_extraction_writes_nothing_with_scripted_fake_llm(store, llm):
    store.add("The user lives in Denver.", "alice")
    llm.down = True
    with pytest.raises(LLMUnavailable):
        await MemoryBuilder(store, llm.client()).build(exchange(store, "I moved to Lisbon."))
    assert [m.text for m in store.list("alice").items] == ["The user lives in Denver."]


async def test_invalid_relation_json_is_logged_and_the_note_added_with_scripted_fake_llm(store, llm, caplog):
    store.add("The user lives in Denver.", "alice")
    llm.extract = lambda body: llm.notes(("user_question", "The user rents a small flat in Denver near the park."))
    llm.relate = lambda body: "this is not json"
    with caplog.at_level(logging.WARNING):
        report = await MemoryBuilder(store, llm.client()).build(
            exchange(store, "I rent a small flat in Denver near the park.")
        )
    assert len(report.added) == 1
    assert "relation check failed" in caplog.text and len(llm.calls("relate")) == 3  # bounded repair attempts


async def test_three_agent_mode_makes_three_calls_with_scripted_fake_llm(store, llm):
    llm.reply = lambda body: json.dumps({"notes": ["The user has a dog named Biscuit."]})  # agents' own prompts
    config = AgentConfig(extraction_mode="three")
    report = await MemoryBuilder(store, llm.client(), config).build(exchange(store, "My dog is called Biscuit."))
    assert len(llm.calls("reply")) == 3
    assert len(report.added) == 1  # the same note from three agents is kept once


async def test_a_user_fact_echoed_by_the_assistant_is_kept_with_scripted_fake_llm(store, llm):
    llm.extract = lambda body: llm.notes(
        ("user_question", "I moved from Denver to Lisbon last month."),
        ("residual", "Congratulations on the move!"),
    )
    turns = exchange(store, "I moved from Denver to Lisbon last month.", "I moved from Denver to Lisbon last month.")
    report = await MemoryBuilder(store, llm.client()).build(turns)
    assert [store.get(i, "alice").text for i in report.added] == ["The user moved from Denver to Lisbon last month."]
    assert report.skipped == ["Congratulations on the move! (not grounded in the exchange)"]


def test_copied_messages_become_third_person_statements() -> None:
    from mark_agents.builder import note_sentences, third_person

    assert third_person("Hey Sam! My dog is called Biscuit.") == "The user's dog is called Biscuit."
    assert third_person("Lost my job as a banker yesterday, so I'm starting my own business.") == (
        "The user lost the user's job as a banker yesterday, so the user is starting the user's own business."
    )
    assert third_person("Yes, climbing is on Thursdays now.") == "Climbing is on Thursdays now."
    assert third_person("Tom left, so Priya is my manager now.") == "Tom left, so Priya is the user's manager now."
    # A curly apostrophe opens a note as a straight one does (it used to give "The user’m").
    assert third_person("I’m moving to Lisbon and I’ve sold my car.") == (
        "The user is moving to Lisbon and the user has sold the user's car."
    )
    # The assistant's advice keeps its own "I" (only a leading first person is the user's).
    assert third_person("The assistant said I should rest.", "llm_response") == "The assistant said I should rest."
    assert note_sentences("Cool, Sam! I love all dances, but contemporary is my pick. It's so expressive! Yours?") == [
        "I love all dances, but contemporary is my pick. It's so expressive!"
    ]
    assert note_sentences("What's your fave?") == []


async def test_a_copied_message_gives_its_statements_not_a_dropped_question_with_scripted_fake_llm(store, llm):
    said = "Hey Sam! I started bouldering last week. Sorry to hear that! Have you tried it?"
    llm.extract = lambda body: llm.notes(("user_question", said))
    report = await MemoryBuilder(store, llm.client()).build(exchange(store, said, "Not yet!"))
    assert [store.get(i, "alice").text for i in report.added] == ["The user started bouldering last week."]
    assert report.skipped == ["Sorry to hear that! (small talk)"]


async def test_a_recommendation_the_user_accepted_stays_one_note_with_scripted_fake_llm(store, llm):
    note = "The assistant recommended the Cornell method for meeting notes, and the user accepted."
    llm.extract = lambda body: llm.notes(("llm_response", note))
    turns = exchange(store, "Which note method should I use for meetings?", "Try the Cornell method. Deal?")
    report = await MemoryBuilder(store, llm.client()).build(turns)
    assert [store.get(i, "alice").text for i in report.added] == [note]
