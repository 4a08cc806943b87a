"""Episodes: every stored turn is memory too, searchable in its user's scope, and covered by purge, export,
check and rebuild like the notes. Real SQLite (both vector backends) and Postgres, the real embedding model."""

from __future__ import annotations

import io
import sqlite3

import pytest
import sqlite_utils

from memory_store import MemoryStore, NewMemory, Source, StoreSettings
from memory_store.migrations import m001_initial
from memory_store.validation import episode_key
from tests.memory_store.engines import groups_in_chroma, turns_matching


def say(store: MemoryStore, user: str, session: str, *pairs: tuple[str, str]) -> list:
    return store.add_turns(
        [{"user_id": user, "session_id": session, "role": role, "content": text} for role, text in pairs]
    )


def test_turns_are_found_by_meaning_and_by_words_in_their_users_scope(store):
    say(store, "alice", "s1", ("user", "My sister Marguerite just adopted a greyhound."), ("assistant", "Lovely!"))
    say(store, "alice", "s2", ("user", "I need a recipe for dinner tonight."), ("assistant", "Try a risotto."))
    say(store, "bob", "s1", ("user", "Marguerite is the name of my boat."))
    by_words = store.search_episodes("Marguerite", "alice", mode="keyword")
    assert [h.turn.content for h in by_words] == ["My sister Marguerite just adopted a greyhound."]
    by_meaning = store.search_episodes("What kind of dog did my sibling get?", "alice", mode="dense")
    assert by_meaning[0].turn.content.startswith("My sister Marguerite")
    hybrid = store.search_episodes("sister's new dog", "alice")
    assert hybrid[0].turn.content.startswith("My sister Marguerite")
    assert hybrid[0].dense_rank == 1 and hybrid[0].turn.session_id == "s1"
    assert all(h.turn.user_id == "alice" for h in store.search_episodes("Marguerite boat", "alice", limit=50))
    assert [h.turn.user_id for h in store.search_episodes("Marguerite boat", "bob")] == ["bob"]


def test_the_assistants_words_are_episodes_too(store):
    say(
        store,
        "alice",
        "s1",
        ("user", "Which note-taking method should I use?"),
        ("assistant", "I recommend the Zettelkasten method with atomic notes."),
    )
    hits = store.search_episodes("Which note-taking method did you recommend to me?", "alice")
    assert [h.turn.role for h in hits] == ["user", "assistant"] or [h.turn.role for h in hits] == ["assistant", "user"]
    assert "Zettelkasten" in next(h.turn.content for h in hits if h.turn.role == "assistant")


def test_excluded_turns_are_not_returned(store):
    (t,) = say(store, "alice", "s1", ("user", "My locker code is 4471."))
    assert store.search_episodes("locker code", "alice", exclude_ids=[t.id]) == []


def test_window_keeps_neighbours_of_the_same_session_in_order(store):
    turns = say(
        store,
        "alice",
        "s1",
        ("user", "When do you go swimming?"),
        ("assistant", "Thursdays."),
        ("user", "And on weekends?"),
    )
    say(store, "alice", "s2", ("user", "Unrelated message in another session."))
    hit = next(h.turn for h in store.search_episodes("Thursdays", "alice", mode="keyword"))
    window = store.episode_window(hit, before=1, after=5)
    assert [t.id for t in window] == [t.id for t in turns]


def test_turn_neighbours_stay_inside_the_session_and_the_user(store):
    a = say(store, "alice", "s1", ("user", "First."), ("assistant", "Second."))
    say(store, "bob", "s1", ("user", "Bob's turn between them."))
    say(store, "alice", "s2", ("user", "Another session."))
    b = say(store, "alice", "s1", ("user", "Third, later in s1."))
    near = store.backend.turn_neighbours("alice", [a[0].id, a[1].id, b[0].id])
    assert near == {a[0].id: (None, a[1].id), a[1].id: (a[0].id, b[0].id), b[0].id: (a[1].id, None)}
    assert store.backend.turn_neighbours("bob", [a[0].id]) == {}  # another user's ids are not even seen


def test_episode_neighbours_reads_the_turns_around_many_hits_at_once(store):
    a = say(store, "alice", "s1", ("user", "Where do you swim?"), ("assistant", "At the lido."), ("user", "Nice."))
    (lone,) = say(store, "alice", "s2", ("user", "Alone in its session."))
    (bobs,) = say(store, "bob", "s1", ("user", "Bob's turn."))
    near = store.episode_neighbours("alice", [a[1].id, lone.id, bobs.id])
    assert [t.content if t else None for t in near[a[1].id]] == ["Where do you swim?", "Nice."]
    assert near[lone.id] == (None, None)
    assert bobs.id not in near  # another user's turn is not read
    known = {a[0].id: (None, a[1].id)}  # what a search already looked up is not looked up again
    assert store.episode_neighbours("alice", [a[0].id], known=known)[a[0].id][1].content == "At the lido."


def test_hybrid_search_finds_the_answer_next_to_the_turn_that_has_the_words(store):
    """The answer ("Thrilled, honestly.") shares no word with the question and means little alone: the turn
    before it does. Hybrid search lends it part of its neighbour's score; the single rankers stay unsmoothed."""
    question, answer = say(
        store,
        "alice",
        "s1",
        ("assistant", "How did the pottery exhibition at the harbour go?"),
        ("user", "Thrilled, honestly."),
    )
    for n in range(30):
        say(store, "alice", f"f{n}", ("user", f"Filler about groceries, the weather and errand number {n}."))
    keyword = store.search_episodes("pottery exhibition harbour", "alice", mode="keyword")
    assert [h.turn.id for h in keyword] == [question.id]
    hybrid = store.search_episodes("pottery exhibition harbour", "alice", limit=5)
    ids = [h.turn.id for h in hybrid]
    assert ids[0] == question.id and answer.id in ids[:3]
    assert 0 < hybrid[ids.index(answer.id)].score < hybrid[0].score <= 1


def test_neighbour_smoothing_lends_a_share_of_each_score_and_stays_in_unit_range():
    from memory_store.scoring import neighbour_smoothed

    near = {"b": ("a", "c")}
    out = neighbour_smoothed({"b": 1.0}, near, 0.5)
    assert out == {"b": 0.5, "a": 0.25, "c": 0.25}
    assert neighbour_smoothed({"b": 1.0}, near, 0.0) == {"b": 1.0}
    both = neighbour_smoothed(
        {"a": 1.0, "b": 1.0, "c": 1.0}, {"a": (None, "b"), "b": ("a", "c"), "c": ("b", None)}, 0.5
    )
    assert both["b"] == 1.0 and both["a"] == both["c"] == 0.75


def test_superseding_a_note_marks_its_source_turns_outdated(store):
    (t,) = say(store, "alice", "s1", ("user", "I live in Denver and I work as a nurse."))
    old = store.add("The user lives in Denver.", "alice", source={"turn_ids": [t.id]})
    new = store.supersede(old.id, "alice", NewMemory(text="The user lives in Lisbon.", user_id="alice"))
    (turn,) = store.turns("alice")
    assert turn.outdated_by == new.id
    assert store.search_episodes("nurse", "alice")[0].turn.outdated_by == new.id


def test_purge_removes_episode_vectors_and_keyword_rows(store):
    say(store, "alice", "s1", ("user", "My passport number is X1234567."))
    say(store, "bob", "s1", ("user", "Bob keeps his passport in the drawer."))
    store.flush_vectors()
    assert store.index.ids(episode_key("alice"))
    store.purge_user("alice")
    store.flush_vectors()
    assert store.index.ids(episode_key("alice")) == set()
    assert store.search_episodes("passport", "alice") == []
    assert turns_matching(store, "X1234567") == 0
    assert [h.turn.user_id for h in store.search_episodes("passport", "bob")] == ["bob"]


def test_check_and_rebuild_cover_episodes(store, monkeypatch):
    if store.engine == "sqlite" and not store.index.persistent:
        pytest.skip("the exact index is re-derived from SQLite on demand: it cannot lose vectors")
    groups_in_chroma(monkeypatch)
    say(store, "alice", "s1", ("user", "I collect vintage typewriters."), ("assistant", "What a hobby!"))
    store.add("The user collects typewriters.", "alice")
    store.flush_vectors()
    assert store.check().ok
    if store.engine == "postgres":  # a vector is a column of its row: the rows lose theirs, rebuild restores them
        store.db.query("UPDATE mark_turns SET embedding = NULL")
        assert store.search_episodes("typewriters hobby", "alice", mode="dense") == []
        assert store.rebuild() == 3
        assert store.check().ok
        assert store.search_episodes("typewriters hobby", "alice", mode="dense")[0].turn.role in ("user", "assistant")
        return
    store.index.drop_user(episode_key("alice"))
    report = store.check()
    assert not report.ok and len(report.missing_vectors) == 2
    store.reconcile()
    assert store.check().ok
    store.index.reset()
    assert store.rebuild() == 3
    assert store.check().ok
    assert store.search_episodes("typewriters hobby", "alice", mode="dense")[0].turn.role in ("user", "assistant")


def test_export_import_keeps_episodes_searchable(tmp_path, embedder, clock):
    a = MemoryStore(StoreSettings(home=tmp_path / "a"), embedder=embedder, clock=clock)
    say(a, "alice", "s1", ("user", "My favourite tea is Lapsang-42."))
    out = io.StringIO()
    a.export_jsonl(out, user_id="alice")
    a.close()
    b = MemoryStore(StoreSettings(home=tmp_path / "b"), embedder=embedder, clock=clock)
    b.import_jsonl(io.StringIO(out.getvalue()))
    assert b.search_episodes("Which tea do I like?", "alice", mode="dense")[0].turn.content.startswith("My favourite")
    assert b.search_episodes("Lapsang", "alice", mode="keyword")
    assert b.check().ok
    b.close()


def test_a_store_from_before_episodes_is_migrated_and_its_turns_become_searchable(tmp_path, embedder):
    home = tmp_path / "old"
    home.mkdir()
    db = sqlite_utils.Database(sqlite3.connect(home / "memory.db"))
    m001_initial(db)
    db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    db["_migrations"].insert({"name": "m001_initial", "applied_at": 0.0})
    db["turns"].insert(
        {"id": "t1", "user_id": "alice", "role": "user", "content": "My bike is a blue Bianchi.", "created_at": 1.0}
    )
    db.conn.commit()
    db.conn.close()
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    try:
        assert store.settings.db_path == home / "memory.db"
        assert [h.turn.id for h in store.search_episodes("Bianchi", "alice", mode="keyword")] == ["t1"]
        assert store.embed_missing_turns() == 1
        assert store.search_episodes("What bicycle do I ride?", "alice", mode="dense")[0].turn.id == "t1"
        assert store.check().ok
    finally:
        store.close()


def test_history_size_counts_only_the_users_turns(store):
    say(store, "alice", "s1", ("user", "abcd"), ("assistant", "efghij"))
    say(store, "bob", "s1", ("user", "x" * 100))
    assert store.history_size("alice") == (2, 10)


def test_source_round_trips(store):
    (t,) = say(store, "alice", "s1", ("user", "I am allergic to peanuts."))
    m = store.add("The user is allergic to peanuts.", "alice", source={"turn_ids": [t.id]})
    assert store.get(m.id, "alice").source == Source(turn_ids=[t.id])
