"""The rules that keep search fast on a long history change nothing a user can see: a large user's keyword search
ranks with its rarest words, a small user's stays exact, a query vector still being computed gives the same hits,
a single query embedded on one thread gets the same vector, and a search that merges pending vector writes instead
of writing the index first finds what it would find after; an update that changes no words leaves the keyword
index alone. Real SQLite, chroma and embedding model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from memory_store import sqlite_backend
from memory_store.validation import user_key


def say(store, user: str, texts: list[str]) -> list:
    return store.add_turns([{"user_id": user, "session_id": "s", "role": "user", "content": t} for t in texts])


def test_a_large_users_keyword_search_ranks_with_its_rarest_words_and_a_small_users_stays_exact(
    chroma_store, monkeypatch
):
    say(chroma_store, "alice", [f"I walked the dog in the park on day {i}." for i in range(30)])
    (zebra,) = say(chroma_store, "alice", ["My zebra is called Stripes."])
    say(chroma_store, "bob", [f"Bob walked his dog to the park, trip {i}." for i in range(5)])

    exact = chroma_store.search_episodes("dog park zebra", "alice", mode="keyword", limit=50)
    assert exact[0].turn.id == zebra.id and len(exact) == 31  # below the cap every match is ranked

    monkeypatch.setattr(sqlite_backend, "KEYWORD_RANK_CAP", 10)
    capped = chroma_store.search_episodes("dog park zebra", "alice", mode="keyword", limit=50)
    assert [h.turn.id for h in capped] == [zebra.id]  # "dog" and "park" (31 matches each) are left out
    small = chroma_store.search_episodes("dog park zebra", "bob", mode="keyword", limit=50)
    assert len(small) == 5 and {h.turn.user_id for h in small} == {"bob"}  # bob's 5 matches fit: exact


def test_a_user_with_most_of_the_matches_is_ranked_over_the_table_with_the_same_hits_as_in_scope(
    chroma_store, monkeypatch
):
    """Ranking the table's matches and keeping the user's (it spares bm25 counting the user's whole posting list)
    returns what ranking in the user's scope returns, even when another user's rows rank above theirs. (Only a user
    with more rows than the ranking cap has their matches counted, so the cap is lowered to reach that path.)"""
    monkeypatch.setattr(sqlite_backend, "KEYWORD_RANK_CAP", 10)
    say(chroma_store, "alice", [f"I had lunch at noon on day {i}." for i in range(30)])
    say(chroma_store, "alice", [f"I walked the dog in the park on day {i}, the weather was fine." for i in range(10)])
    say(chroma_store, "bob", ["dog park", "dog", "park park"])  # short rows: bm25 ranks them above alice's
    backend = chroma_store.backend
    key = user_key("alice")

    def in_scope(limit: int) -> list[str]:
        rows = backend.query(
            "SELECT x.id AS id FROM turns_fts k JOIN turns x ON x.seq = k.rowid WHERE turns_fts MATCH ? "
            "ORDER BY bm25(turns_fts, 1.0, 0.0), k.rowid LIMIT ?",
            (f'user_key:"{key}" AND ("dog" OR "park")', limit),
        )
        return [r["id"] for r in rows]

    for limit in (1, 3, 10, 50):
        found = [i for i, _ in backend.episode_keyword_search(key, "dog park", limit)]
        assert found == in_scope(limit)
    assert len(found) == 10


def test_a_query_vector_still_being_computed_gives_the_same_hits(store):
    from memory_store import NewMemory

    store.add_many([NewMemory(text=t, user_id="alice") for t in ("Alice lives in Lisbon.", "Alice is a nurse.")])
    say(store, "alice", ["I moved to Lisbon last month.", "Night shifts at the hospital are hard."])
    query = "Where does she live and work?"
    vector = store.embed([query])[0]
    with ThreadPoolExecutor(1) as pool:
        notes = store.search(query, "alice", query_embedding=vector)
        pending_notes = store.search(query, "alice", query_embedding=pool.submit(lambda: store.embed([query])[0]))
        episodes = store.search_episodes(query, "alice", query_embedding=vector)
        pending_episodes = store.search_episodes(
            query, "alice", query_embedding=pool.submit(lambda: store.embed([query])[0])
        )
    assert [(h.memory.id, round(h.score, 6)) for h in pending_notes] == [
        (h.memory.id, round(h.score, 6)) for h in notes
    ]
    assert [(h.turn.id, h.score) for h in pending_episodes] == [(h.turn.id, h.score) for h in episodes]
    assert len(notes) == 2 and len(episodes) == 2


def test_a_single_query_is_embedded_on_one_thread_with_the_same_vector(embedder):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    alone = embedder.embed(["Which note-taking method did you recommend?"])[0]
    batch = embedder.embed(["Which note-taking method did you recommend?", *[f"filler {i}" for i in range(8)]])[0]
    assert np.allclose(alone, batch, atol=1e-5)
    assert torch.get_num_threads() == threads  # the one-thread setting is put back


@pytest.mark.parametrize("vectors", ["chroma", "exact"])
def test_a_search_sees_pending_vector_writes_exactly_without_writing_the_index_first(
    tmp_path, embedder, clock, vectors, monkeypatch
):
    from memory_store import MemoryStore, NewMemory, StoreSettings, sqlite_engine
    from memory_store.validation import episode_key, user_key

    store = MemoryStore(StoreSettings(home=tmp_path / "home", vector_backend=vectors), embedder=embedder, clock=clock)
    try:
        old = store.add_many(
            [
                NewMemory(text=t, user_id="alice")
                for t in ("Alice lives in Lisbon.", "Alice is a nurse.", "Alice likes tea.")
            ]
        )
        say(store, "alice", ["I work night shifts.", "Tea helps me stay awake."])
        store.flush_vectors()
        # Pending: a new note, a changed one, a deleted one and a new turn.
        new = store.add("Alice's cat is called Mochi.", "alice")
        store.update(old[0].id, "alice", text="Alice moved to Porto.")
        store.delete(old[2].id, "alice")
        (turn,) = say(store, "alice", ["My cat Mochi sleeps all day."])
        backend = store.backend
        assert len(backend.pending_vector_ops(user_key("alice"), 100)) == 3
        assert len(backend.pending_vector_ops(episode_key("alice"), 100)) == 1

        def snapshot():
            notes = {
                q: [(h.memory.id, round(h.score, 6)) for h in store.search(q, "alice", mode="dense")]
                for q in ("What is the cat's name?", "Where does Alice live?", "What does Alice drink?")
            }
            episodes = [(h.turn.id, round(h.score, 6)) for h in store.search_episodes("cat", "alice", mode="dense")]
            return notes, episodes

        merged = snapshot()
        assert backend.outbox_count() == 4  # the searches wrote nothing to the index
        assert merged[0]["What is the cat's name?"][0][0] == new.id
        assert merged[0]["Where does Alice live?"][0][0] == old[0].id  # ranked by its new text's vector
        assert all(old[2].id not in [i for i, _ in hits] for hits in merged[0].values())
        assert merged[1][0][0] == turn.id
        store.flush_vectors()
        assert backend.outbox_count() == 0
        assert snapshot() == merged  # the same hits, in the same order, as once the index is written

        monkeypatch.setattr(sqlite_engine, "PENDING_MERGE_LIMIT", 1)
        store.add_many([NewMemory(text=t, user_id="alice") for t in ("Alice has a bike.", "Alice reads a lot.")])
        assert store.search("bike", "alice", mode="dense")[0].memory.text == "Alice has a bike."
        assert backend.outbox_count() == 0  # more pending than a search merges: the index was written first
    finally:
        store.close()


def test_a_small_group_stays_out_of_chroma_until_it_outgrows_the_limit(tmp_path, embedder, monkeypatch):
    from memory_store import MemoryStore, NewMemory, StoreSettings
    from memory_store.validation import user_key
    from memory_store.vectors import chroma

    monkeypatch.setattr(chroma, "HOT_GROUP_LIMIT", 5)
    settings = StoreSettings(home=tmp_path / "home")
    texts = [f"Alice's note {i}: {w}." for i, w in enumerate(["tea", "chess", "Lisbon", "cats", "jazz", "rowing"])]

    def brute_force(store, query):
        ids, vectors = store.backend.user_vectors(user_key("alice"))
        sims = vectors @ store.embed([query])[0]
        return [ids[i] for i in np.argsort(-sims)]

    store = MemoryStore(settings, embedder=embedder)
    try:
        store.add_many([NewMemory(text=t, user_id="alice") for t in texts[:4]])
        store.flush_vectors()
        assert user_key("alice") not in store.index.user_keys()  # SQLite holds the small group; chroma has nothing
        assert [h.memory.id for h in store.search("music", "alice", mode="dense")] == brute_force(store, "music")
        assert store.check().ok
        store.add_many([NewMemory(text=t, user_id="alice") for t in texts[4:]])
        store.flush_vectors()
        assert user_key("alice") in store.index.user_keys()  # 6 > 5: written to chroma whole
        assert store.index.count(user_key("alice")) == 6 and store.check().ok
        found = [h.memory.id for h in store.search("music", "alice", mode="dense")]
        assert found == brute_force(store, "music")
    finally:
        store.close()
    again = MemoryStore(settings, embedder=embedder)
    try:
        assert [h.memory.id for h in again.search("music", "alice", mode="dense")] == found
    finally:
        again.close()


def test_stored_vectors_are_scored_in_one_product_and_a_missing_or_foreign_one_gets_no_similarity():
    """Candidates' similarities come from one matrix product (a dot product per row cost ~3 us each): the same
    values, and None for a row without a vector or with one of another model's dimension."""
    rng = np.random.default_rng(3)
    query = rng.standard_normal(8).astype(np.float32)
    a, b = (rng.standard_normal(8).astype(np.float32) for _ in range(2))
    foreign = rng.standard_normal(5).astype(np.float32)
    sims = sqlite_backend._similarities([a.tobytes(), None, b"", foreign.tobytes(), b.tobytes()], query)
    assert sims[1:4] == [None, None, None]
    assert sims[0] == pytest.approx(float(a @ query), rel=1e-6) and sims[4] == pytest.approx(float(b @ query), rel=1e-6)
    assert sqlite_backend._similarities([a.tobytes()], None) == [None]


def fts_data(store, table: str) -> tuple[int, int]:
    """(segment blocks, their bytes) of an FTS5 index: any rewrite of an indexed row changes them."""
    row = store.backend.conn.execute(f"SELECT count(*), sum(length(block)) FROM {table}_fts_data").fetchone()
    return row[0], row[1]


def test_the_keyword_index_is_rewritten_only_when_an_indexed_column_changes(chroma_store):
    """A recall count, a confirmation, a turn's extraction status: none of them touch the words, so none rewrites
    the keyword index (the update triggers name their columns: migration m005). A changed text still does."""
    note = chroma_store.add("My locker code at the gym is 4471.", "alice")
    (turn,) = say(chroma_store, "alice", ["I moved to Lisbon in March."])
    notes_before, turns_before = fts_data(chroma_store, "memories"), fts_data(chroma_store, "turns")

    for _ in range(3):
        chroma_store.mark_recalled([note.id], "alice")
    chroma_store.confirm(note.id, "alice")
    chroma_store.set_turns_status([turn.id], "done")
    assert fts_data(chroma_store, "memories") == notes_before
    assert fts_data(chroma_store, "turns") == turns_before
    assert chroma_store.get(note.id, "alice").recall_count == 3
    assert [h.memory.id for h in chroma_store.search("locker code", "alice", mode="keyword")] == [note.id]

    chroma_store.update(note.id, "alice", text="My locker code at the gym is 9012.")
    assert fts_data(chroma_store, "memories") != notes_before
    assert [h.memory.id for h in chroma_store.search("9012", "alice", mode="keyword")] == [note.id]
    assert chroma_store.search("4471", "alice", mode="keyword") == []
