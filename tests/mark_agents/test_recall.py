"""The recall pipeline on the real store and embedding model (no LLM): whole history while it fits, notes plus
episode excerpts beyond it, outdated values never offered as current, and every item explained."""

from __future__ import annotations

import pytest

from mark_agents.recall import recall
from memory_store import MemoryStore, NewMemory

FILLER = [
    "I spent the afternoon reorganising the garage shelves.",
    "The weather has been grey and windy all week.",
    "We watched a documentary about deep sea creatures.",
    "My neighbour keeps parking in front of our driveway.",
    "I tried a new pasta recipe with lemon and basil.",
    "Work has been busy with the quarterly reports.",
]


def say(store: MemoryStore, user: str, session: str, *pairs: tuple[str, str]) -> list:
    return store.add_turns(
        [{"user_id": user, "session_id": session, "role": role, "content": text} for role, text in pairs]
    )


def filler_sessions(store: MemoryStore, user: str, n: int) -> None:
    """n sessions of small talk, stored in one call (one embedding pass)."""
    rows = []
    for s in range(n):
        for i, text in enumerate(FILLER):
            rows.append({"user_id": user, "session_id": f"f{s}", "role": "user", "content": f"{text} (day {s}.{i})"})
            rows.append(
                {"user_id": user, "session_id": f"f{s}", "role": "assistant", "content": "I see, tell me more."}
            )
    store.add_turns(rows)


def test_a_fact_with_no_note_is_recalled_from_the_whole_history(store):
    say(store, "alice", "s1", ("user", "Hi! My dog is called Biscuit."), ("assistant", "Nice to meet Biscuit!"))
    found = recall(store, "What is the name of my dog?", "alice", budget_tokens=1000)
    assert found.mode == "history" and not found.memories
    assert "User: Hi! My dog is called Biscuit." in found.text
    assert [t.layer for t in found.turns] == ["history", "history"]
    assert found.tokens <= 1000


def test_beyond_the_budget_the_right_excerpt_is_retrieved(store):
    filler_sessions(store, "alice", 8)
    say(store, "alice", "pets", ("user", "Hi! My dog is called Biscuit."), ("assistant", "Nice to meet Biscuit!"))
    filler_sessions(store, "alice", 2)
    found = recall(store, "What is the name of my dog?", "alice", budget_tokens=300)
    assert found.mode == "retrieval" and found.tokens <= 300
    assert "My dog is called Biscuit." in found.text
    hit = next(t for t in found.turns if "Biscuit" in t.text and t.role == "user")
    assert hit.layer == "episode" and "rank" in hit.why


def test_notes_come_first_and_their_source_turns_count_as_recalled(store):
    (t,) = say(store, "alice", "s1", ("user", "I am severely allergic to peanuts, remember that."))
    note = store.add("The user is allergic to peanuts.", "alice", source={"turn_ids": [t.id]})
    filler_sessions(store, "alice", 6)
    found = recall(store, "Can I eat this peanut sauce?", "alice", budget_tokens=300)
    assert [m.id for m in found.memories][:1] == [note.id]
    assert found.text.index("allergic to peanuts.") < found.text.index("From earlier conversations")
    assert t.id in found.turn_ids


def test_a_note_less_related_than_the_excerpts_does_not_take_their_room(store):
    """A weak model's loose note must not push out turns the user actually said: beside excerpts about peanut
    sauces, "ate at a Thai restaurant" (similarity 0.26 to the query, above the notes' own floor) stays out, while
    the allergy note (0.48, the excerpts' median is ~0.41) comes in."""
    (t,) = say(store, "alice", "s1", ("user", "I am severely allergic to peanuts, remember that."))
    store.add("The user ate at a Thai restaurant.", "alice", source={"turn_ids": [t.id]})
    allergy = store.add("The user is allergic to peanuts.", "alice", source={"turn_ids": [t.id]})
    food = [
        "I made a spicy peanut sauce for the noodles tonight.",
        "Is satay sauce usually made with peanuts?",
        "My sister brought peanut butter cookies to the party.",
        "Can you suggest a dipping sauce for spring rolls?",
        "I love eating noodles with a rich sauce.",
    ]
    store.add_turns(
        [
            {"user_id": "alice", "session_id": f"food{i}", "role": "user", "content": f"{text} (day {i})"}
            for i in range(4)
            for text in food
        ]
    )
    filler_sessions(store, "alice", 6)
    found = recall(store, "Can I eat this peanut sauce?", "alice", budget_tokens=300)
    assert found.mode == "retrieval"
    assert [m.id for m in found.memories] == [allergy.id]
    assert "Thai restaurant" not in found.text


def test_evidence_spread_over_sessions_is_all_offered(store):
    filler_sessions(store, "alice", 4)
    say(store, "alice", "trip1", ("user", "For the Iceland trip I booked the flights with Icelandair."))
    filler_sessions(store, "alice", 3)
    say(store, "alice", "trip2", ("user", "For the Iceland trip the hotel is the Reykjavik Marina."))
    filler_sessions(store, "alice", 3)
    say(store, "alice", "trip3", ("user", "For the Iceland trip we rented a Dacia Duster."))
    found = recall(store, "What did I arrange for the Iceland trip?", "alice", budget_tokens=300)
    sessions = {t.session_id for t in found.turns if "Iceland" in t.text}
    assert sessions == {"trip1", "trip2", "trip3"}


def test_a_superseded_fact_is_shown_outdated_and_the_other_fact_of_its_turn_survives(store):
    (t1,) = say(store, "alice", "s1", ("user", "I live in Denver and I work as a nurse."))
    denver = store.add("The user lives in Denver.", "alice", source={"turn_ids": [t1.id]})
    nurse = store.add("The user works as a nurse.", "alice", source={"turn_ids": [t1.id]})
    (t2,) = say(store, "alice", "s2", ("user", "I moved from Denver to Lisbon last month."))
    store.supersede(
        denver.id, "alice", NewMemory(text="The user lives in Lisbon.", user_id="alice", source={"turn_ids": [t2.id]})
    )
    found = recall(store, "Where do I live and what is my job?", "alice", budget_tokens=1000)
    assert "[outdated; now: The user lives in Lisbon.]" in found.text
    assert "The user lives in Lisbon." in [m.text for m in found.memories]
    assert "The user lives in Denver." not in [m.text for m in found.memories]
    assert "I work as a nurse" in found.text and store.get(nurse.id, "alice").status.value == "active"
    assert nurse.id in [m.id for m in recall(store, "What is my job?", "alice", budget_tokens=1000).memories]


def test_excluded_turns_are_not_repeated(store):
    turns = say(store, "alice", "s1", ("user", "My locker code is 4471."), ("assistant", "Noted."))
    found = recall(store, "locker code", "alice", budget_tokens=1000, exclude_turn_ids=[turns[0].id])
    assert "4471" not in found.text and turns[0].id not in found.turn_ids


def test_recall_is_scoped_to_the_user(store):
    say(store, "bob", "s1", ("user", "My bank PIN is 8841."))
    say(store, "alice", "s1", ("user", "I like jazz."))
    assert "8841" not in recall(store, "What is my bank PIN?", "alice", budget_tokens=1000).text
    filler_sessions(store, "alice", 6)
    assert "8841" not in recall(store, "What is my bank PIN?", "alice", budget_tokens=200).text


def test_explain_lines_name_the_layer_of_every_item(store):
    (t,) = say(store, "alice", "s1", ("user", "My cat Mochi is twelve."))
    store.add("The user has a cat named Mochi.", "alice", source={"turn_ids": [t.id]})
    lines = recall(store, "How old is my cat?", "alice", budget_tokens=1000).explain_lines()
    assert lines[0].startswith("mode: history")
    assert any(line.startswith("note ") for line in lines) and any(line.startswith("history ") for line in lines)


@pytest.mark.parametrize("budget", [120, 200, 400])
def test_the_block_never_exceeds_the_budget(store, budget):
    filler_sessions(store, "alice", 5)
    for i in range(5):
        store.add(f"The user likes board game number {i}.", "alice")
    found = recall(store, "Which board games do I like?", "alice", budget_tokens=budget)
    assert 0 < found.tokens <= budget
