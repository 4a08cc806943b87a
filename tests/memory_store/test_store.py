"""Store behaviour on every engine (the `store` fixture is parametrized: SQLite + chroma, SQLite + exact, Postgres)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from memory_store import InvalidInput, MemoryChange, MemoryKind, MemoryStatus, NewMemory, NotFound
from memory_store.ids import short_id
from memory_store.models import Source
from memory_store.validation import user_key
from tests.memory_store.engines import groups_in_chroma, lose_note_vectors, row_counts


def test_add_get_update_delete_with_history(store):
    m = store.add("My dog is called Biscuit.", "alice", kind="user_question", session_id="s1")
    assert store.get(m.id, "alice").text == "My dog is called Biscuit."
    updated = store.update(m.id, "alice", text="My dog is called Biscuit, a beagle.", reason="detail added")
    assert updated.text.endswith("beagle.")
    store.delete(m.id, "alice", reason="user asked")
    with pytest.raises(NotFound):
        store.get(m.id, "alice")
    events = [(e.event, e.reason) for e in store.history("alice", m.id)]
    assert events == [("add", "added"), ("update", "detail added"), ("delete", "user asked")]
    assert store.history("alice", m.id)[-1].old_text == "My dog is called Biscuit, a beagle."
    assert store.check().ok


def test_search_finds_the_relevant_memory_first(store):
    store.add_many(
        [
            NewMemory(text="My dog is called Biscuit.", user_id="alice"),
            NewMemory(text="I work as a nurse in Chicago.", user_id="alice"),
            NewMemory(text="I prefer answers as bullet points.", user_id="alice", kind=MemoryKind.llm_response),
        ]
    )
    hits = store.search("What is my dog's name?", "alice", explain=True)
    assert hits[0].memory.text == "My dog is called Biscuit."
    e = hits[0].explain
    assert e is not None and e.dense_rank == 1 and e.keyword_rank == 1
    assert 0 < e.relevance <= 1 and 0 < e.recency <= 1 and e.final == pytest.approx(hits[0].score)
    assert store.search("bullet points", "alice", mode="keyword")[0].memory.kind == MemoryKind.llm_response


def test_a_search_hit_is_the_whole_memory_as_stored_source_and_metadata_included(store):
    """Search ranks candidates from part of their row and decodes the rest for the hits only (Postgres reads the
    JSON columns of candidates as text): a hit must still equal the memory `get` returns, in every mode."""
    m = store.add(
        "My dog is called Biscuit.",
        "alice",
        session_id="s1",
        metadata={"lang": "en", "tags": ["pet", "ünïcode"], "n": 3},
        source={"conversation_id": "c1", "turn_ids": ["t1", "t2"]},
    )
    store.add("I work as a nurse in Chicago.", "alice")
    for mode in ("hybrid", "dense", "keyword"):
        hit = store.search("dog Biscuit", "alice", mode=mode)[0].memory
        assert hit == store.get(m.id, "alice")
        assert hit.metadata == {"lang": "en", "tags": ["pet", "ünïcode"], "n": 3}
        assert hit.source == Source(conversation_id="c1", turn_ids=["t1", "t2"])


def test_a_similarity_floor_keeps_only_memories_that_close_and_stops_when_none_is(store):
    store.add_many(
        [
            NewMemory(text="My dog is called Biscuit.", user_id="alice"),
            NewMemory(text="My dog Biscuit loves the beach.", user_id="alice"),
            NewMemory(text="I work as a nurse in Chicago, dog shifts included.", user_id="alice"),
        ]
    )
    query = "What is my dog's name?"
    everything = store.search(query, "alice", explain=True)
    sims = sorted((h.explain.similarity for h in everything), reverse=True)
    assert len(everything) == 3 and sims[0] > sims[1] > sims[2]
    floor = (sims[1] + sims[2]) / 2
    kept = store.search(query, "alice", explain=True, min_similarity=floor)
    assert [h.memory.id for h in kept] == [h.memory.id for h in everything if h.explain.similarity >= floor]
    assert len(kept) == 2
    assert store.search(query, "alice", min_similarity=sims[0] + 0.01) == []  # not even the nearest one is


def test_superseded_fact_leaves_search_but_stays_in_history(store):
    old = store.add("I live in Denver.", "alice")
    new = store.supersede(old.id, "alice", NewMemory(text="I moved to Lisbon.", user_id="alice"))
    texts = [h.memory.text for h in store.search("Where do I live?", "alice")]
    assert "I moved to Lisbon." in texts and "I live in Denver." not in texts
    kept = store.get(old.id, "alice")
    assert kept.status == MemoryStatus.superseded and kept.superseded_by == new.id and kept.valid_until is not None
    assert "I live in Denver." in [
        h.memory.text for h in store.search("Where do I live?", "alice", include_history=True)
    ]
    sup = [e for e in store.history("alice", old.id) if e.event == "supersede"]
    assert sup and sup[0].old_text == "I live in Denver." and sup[0].new_text == "I moved to Lisbon."
    assert store.list("alice").total == 1 and store.list("alice", include_history=True).total == 2


def test_confirmed_recent_memory_outranks_stale_one_of_equal_similarity(store, clock):
    stale = store.add("The user likes green tea.", "alice")
    fresh = store.add("The user likes green tea.", "alice")  # same text: equal similarity
    clock.advance(days=120)
    for _ in range(3):
        store.confirm(fresh.id, "alice")
        clock.advance(days=1)
    hits = store.search("What tea does the user like?", "alice", explain=True)
    assert [h.memory.id for h in hits[:2]] == [fresh.id, stale.id]
    a, b = hits[0].explain, hits[1].explain
    assert a.similarity == pytest.approx(b.similarity, abs=1e-5)
    assert a.recency > b.recency and a.frequency > b.frequency and a.strength_days > b.strength_days


def test_recency_decays_with_time(store, clock):
    m = store.add("I am training for a marathon.", "alice")
    r0 = store.search("marathon", "alice", explain=True)[0].explain.recency
    clock.advance(days=200)
    r1 = store.search("marathon", "alice", explain=True)[0].explain.recency
    assert r0 == pytest.approx(1.0) and r1 < 0.5
    store.mark_recalled([m.id], "alice")
    assert store.get(m.id, "alice").recall_count == 1
    assert store.search("marathon", "alice", explain=True)[0].explain.recency == pytest.approx(1.0)


def test_filters_kind_session_time(store, clock):
    store.add("Use metric units in answers.", "alice", kind="llm_response", session_id="s1")
    clock.advance(days=10)
    store.add("Metric units are used at work.", "alice", kind="residual", session_id="s2")
    assert {h.memory.kind for h in store.search("metric units", "alice", kinds=["residual"])} == {MemoryKind.residual}
    assert [h.memory.session_id for h in store.search("metric units", "alice", session_id="s1")] == ["s1"]
    assert [h.memory.session_id for h in store.search("metric units", "alice", since=clock())] == ["s2"]


def test_dispute_and_feedback_move_trust(store):
    m = store.add("My birthday is in May.", "alice", trust=0.6)
    d = store.dispute(m.id, "alice", reason="assistant said otherwise")
    assert d.status == MemoryStatus.disputed and d.trust < 0.6
    assert store.search("birthday", "alice")[0].memory.status == MemoryStatus.disputed
    before = store.get(m.id, "alice").trust
    store.add_feedback("alice", "resp-1", [m.id], +1)
    assert store.get(m.id, "alice").trust == pytest.approx(before + 0.1)
    assert store.feedback("alice")[0].memory_ids == [m.id]
    with pytest.raises(InvalidInput):
        store.add_feedback("alice", "resp-1", [m.id], 5)


def test_list_paginates_newest_first(store, clock):
    for i in range(7):
        store.add(f"Fact number {i} about the garden.", "alice")
        clock.advance(minutes=1)
    p1 = store.list("alice", limit=3)
    p2 = store.list("alice", limit=3, offset=p1.next_offset)
    p3 = store.list("alice", limit=3, offset=p2.next_offset)
    texts = [m.text for m in p1.items + p2.items + p3.items]
    assert texts == [f"Fact number {i} about the garden." for i in reversed(range(7))]
    assert p1.total == 7 and p3.next_offset is None


def test_resolve_id_takes_the_short_id_a_start_or_the_whole_id_within_the_users_scope(store):
    m = store.add("I speak Portuguese.", "alice")
    other = store.add("I speak Catalan.", "alice")  # made in the same millisecond or so: ids share their start
    assert store.resolve_id(short_id(m.id), "alice") == m.id
    assert store.resolve_id(short_id(m.id).upper(), "alice") == m.id  # typed in capitals: the same on every engine
    assert store.resolve_id(m.id, "alice") == m.id
    assert store.resolve_id(m.id[:24], "alice") == m.id and other.id[:24] != m.id[:24]
    with pytest.raises(InvalidInput, match="more than one memory"):
        store.resolve_id(m.id[:6], "alice")  # the time at the start of both ids
    for wildcard in ("%", "_"):  # LIKE's wildcards are taken literally, never as "any id"
        with pytest.raises(NotFound):
            store.resolve_id(wildcard, "alice")
    with pytest.raises(NotFound):
        store.resolve_id(short_id(m.id), "bob")


def test_turns_are_stored_and_status_tracked(store):
    turns = store.add_turns(
        [
            {"user_id": "alice", "session_id": "s", "role": "user", "content": "Hi, I'm Alice."},
            {"user_id": "alice", "session_id": "s", "role": "assistant", "content": "Hello Alice!"},
        ]
    )
    assert [t.extraction_status for t in store.turns("alice", session_id="s")] == ["pending", "pending"]
    assert store.users_with_pending_turns() == ["alice"]
    store.set_turns_status([t.id for t in turns], "done")
    assert store.users_with_pending_turns() == []
    assert store.turns("bob") == []


def test_rebuild_restores_a_lost_vector_index(store, monkeypatch):
    if store.engine == "sqlite" and not store.index.persistent:
        pytest.skip("the exact index is re-derived from SQLite on demand: it cannot lose vectors")
    groups_in_chroma(monkeypatch)
    for t in ["I like chess.", "I like tennis.", "My cat is Mochi."]:
        store.add(t, "alice")
    store.flush_vectors()
    lose_note_vectors(store)
    report = store.check()
    assert not report.ok and len(report.missing_vectors) == 3
    assert store.rebuild() == 3
    assert store.check().ok
    assert store.search("cat's name", "alice")[0].memory.text == "My cat is Mochi."


def test_a_small_user_among_many_finds_every_note(store):
    """Nearest-neighbour search scoped to one user finds all of a small user's notes, however many other users'
    notes the index holds (Postgres: its HNSW candidates may hold none of them; the user's rows are then exact)."""
    busy = "Note {} of a busy user about gardening and tea."
    store.add_many([NewMemory(text=busy.format(i), user_id=f"busy{i % 20}") for i in range(400)])
    mine = store.add_many(
        [
            NewMemory(text=t, user_id="quiet")
            for t in ["I grow tomatoes in my garden.", "I drink green tea every morning.", "My garden has tea herbs."]
        ]
    )
    hits = store.search("gardening and tea", "quiet", mode="dense", limit=10)
    assert {h.memory.id for h in hits} == {m.id for m in mine}


def test_a_repeated_search_ranks_the_same_whichever_way_the_engine_reads(store):
    """The first hybrid search of a user reads its candidates in separate queries; once the engine knows the user
    is small it may read them in one (Postgres). Both ways rank, score and explain alike, and stay in scope."""
    store.add_many(
        [NewMemory(text=f"Note {i} about tea, gardens and the sea.", user_id="other") for i in range(30)]
        + [
            NewMemory(text=t, user_id="alice")
            for t in [
                "I grow tomatoes in my garden.",
                "I drink green tea every morning.",
                "My sister lives by the sea.",
                "I collect old maps.",
            ]
        ]
    )
    runs = [store.search("tea in the garden", "alice", explain=True) for _ in range(3)]
    shapes = [[(h.memory.id, round(h.score, 6), h.explain.dense_rank, h.explain.keyword_rank) for h in r] for r in runs]
    assert shapes[0] == shapes[1] == shapes[2]
    assert runs[0] and {h.memory.user_id for h in runs[0]} == {"alice"}
    assert runs[0][0].memory.text in {"I grow tomatoes in my garden.", "I drink green tea every morning."}


def test_writes_reach_search_whether_or_not_the_index_holds_the_users_vectors(store):
    """The exact index skips applying writes to a group it does not hold (it reads the rows at the group's next
    use) and applies them to one it holds; on every engine, adds and deletes show in search either way."""
    first = store.add_many([NewMemory(text=f"The user owns a {pet}.", user_id="alice") for pet in ("cat", "parrot")])
    store.flush_vectors()
    if store.engine == "sqlite" and not store.index.persistent:
        assert store.index.follows_rows(user_key("alice"))  # never searched: not held, nothing was applied
    assert {h.memory.id for h in store.search("pets the user owns", "alice", mode="dense")} == {m.id for m in first}
    if store.engine == "sqlite" and not store.index.persistent:
        assert not store.index.follows_rows(user_key("alice"))  # held now: the next writes are applied to it
    later = store.add("The user owns a tortoise.", "alice")
    store.delete(first[0].id, "alice")
    store.flush_vectors()
    found = {h.memory.id for h in store.search("pets the user owns", "alice", mode="dense")}
    assert found == {first[1].id, later.id}


def _note(text: str, user: str = "alice", trust: float = 0.6) -> NewMemory:
    return NewMemory(text=text, user_id=user, trust=trust, source=Source(conversation_id="s1", turn_ids=["t9"]))


def test_apply_stores_an_extractions_decisions_together(store):
    home = store.add("I live in Denver.", "alice")
    tea = store.add("The user likes green tea.", "alice")
    birthday = store.add("My birthday is in May.", "alice", trust=0.9)
    done = store.apply(
        "alice",
        [
            MemoryChange(action="add", memory=_note("The user has a beagle called Biscuit."), reason="new"),
            MemoryChange(action="confirm", memory=_note("The user likes green tea."), target_id=tea.id, reason="same"),
            MemoryChange(action="supersede", memory=_note("I moved to Lisbon."), target_id=home.id, reason="moved"),
            MemoryChange(
                action="dispute", memory=_note("My birthday is in June.", trust=0.4), target_id=birthday.id, reason="x"
            ),
            MemoryChange(action="confirm", memory=_note("The user plays chess."), target_id="gone", reason="same"),
        ],
        actor="builder",
    )
    assert [d.action for d in done] == ["add", "confirm", "supersede", "dispute", "add"]
    assert done[4].reason == "same; target gone, added instead" and done[4].memory.text == "The user plays chess."
    assert done[1].memory.id == tea.id and done[1].memory.confirm_count == 1 and done[1].memory.trust > tea.trust
    assert store.get(home.id, "alice").superseded_by == done[2].memory.id
    assert store.get(done[3].memory.id, "alice").status == MemoryStatus.disputed == done[3].memory.status
    assert store.get(birthday.id, "alice").status == MemoryStatus.active  # the more trusted note stands
    assert {e.event for e in store.history("alice") if e.actor == "builder"} == {
        "add",
        "confirm",
        "supersede",
        "dispute",
    }
    hits = [h.memory.text for h in store.search("Where do I live?", "alice")]
    assert "I moved to Lisbon." in hits and "I live in Denver." not in hits
    assert store.search("beagle", "alice", mode="dense")[0].memory.id == done[0].memory.id  # its vector is indexed
    assert store.check().ok


def test_apply_is_all_or_nothing(store):
    home = store.add("I live in Denver.", "alice")
    before = row_counts(store)
    changes = [
        MemoryChange(action="add", memory=_note("The user has a beagle called Biscuit.")),
        MemoryChange(action="supersede", memory=_note("I moved to Lisbon."), target_id=home.id),
        MemoryChange(action="confirm", target_id="no-such-note"),  # fails inside the transaction
    ]
    with pytest.raises(NotFound):
        store.apply("alice", changes)
    assert row_counts(store) == before
    assert store.get(home.id, "alice").status == MemoryStatus.active
    assert [m.text for m in store.list("alice", include_history=True).items] == ["I live in Denver."]
    assert store.check().ok


def test_apply_reads_targets_inside_the_batch_and_refuses_bad_input(store, embedder):
    home = store.add("I live in Denver.", "alice")
    done = store.apply(
        "alice",
        [
            MemoryChange(action="supersede", memory=_note("I moved to Lisbon."), target_id=home.id),
            MemoryChange(action="supersede", memory=_note("I moved to Porto."), target_id=home.id),
        ],
    )
    assert [d.action for d in done] == ["supersede", "add"]  # the second found its target superseded already
    given = embedder.embed(["The user collects stamps."])[0]
    kept = store.apply(
        "alice", [MemoryChange(action="add", memory=_note("The user collects stamps."), embedding=given)]
    )
    assert store.search("stamps", "alice", mode="dense", explain=True)[0].explain.similarity > 0.5
    assert kept[0].memory.embedding_model == embedder.model_id
    before = row_counts(store)
    bad = [
        [MemoryChange(action="add", memory=_note("Bob's note.", user="bob"))],
        [MemoryChange(action="add", memory=_note("A note."), embedding=given[:10])],
        [MemoryChange(action="add", memory=_note("A note.")), MemoryChange(action="add", memory=_note(" "))],
    ]
    for changes in bad:
        with pytest.raises(InvalidInput):
            store.apply("alice", changes)
    assert row_counts(store) == before
    assert store.apply("alice", []) == []


def test_two_writers_superseding_one_note_at_once_leave_one_current_value(store):
    """Each `apply` reads its target inside its own transaction (Postgres locks the row), so of two writers racing
    to supersede the same note one supersedes it and the other, finding it superseded, adds its note."""
    home = store.add("I live in Denver.", "alice")
    start = threading.Barrier(2)

    def write(city: str) -> str:
        change = MemoryChange(action="supersede", memory=_note(f"I moved to {city}."), target_id=home.id)
        start.wait()
        return store.apply("alice", [change])[0].action

    with ThreadPoolExecutor(2) as pool:
        actions = sorted(pool.map(write, ["Lisbon", "Porto"]))
    assert actions == ["add", "supersede"]
    kept = store.get(home.id, "alice")
    assert kept.status == MemoryStatus.superseded
    assert [e.event for e in store.history("alice", home.id)] == ["add", "supersede"]
    assert store.list("alice").total == 2 and store.check().ok


def test_supersede_checks_the_new_notes_ids_as_add_does(store):
    old = store.add("I live in Denver.", "alice")
    for bad in ({"agent_id": "bot\x00"}, {"session_id": " "}):
        with pytest.raises(InvalidInput):
            store.supersede(old.id, "alice", NewMemory(text="I moved to Lisbon.", user_id="alice", **bad))
    assert store.get(old.id, "alice").status == MemoryStatus.active and store.list("alice").total == 1
