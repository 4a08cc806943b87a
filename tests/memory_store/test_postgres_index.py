"""Postgres keeps only large users' rows in its HNSW index: smaller users are scanned exactly, so their writes skip
the index's cost, and a user who outgrows the exact scan is moved into the index in the background."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from memory_store import MemoryStore, NewMemory, StoreSettings, pg_migrations
from memory_store import postgres_backend as pb
from memory_store.validation import user_key

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(tmp_path, embedder, clock, pg_url, monkeypatch):
    monkeypatch.setattr(pb, "EXACT_ROWS", 30)
    monkeypatch.setattr(pb, "PROMOTE_CHUNK", 7)  # several chunks per promotion
    s = MemoryStore(StoreSettings(home=tmp_path / "home", store_url=pg_url), embedder=embedder, clock=clock)
    yield s
    s.close()


def indexed(store: MemoryStore, user: str) -> tuple[int, int]:
    """(rows in the HNSW index, rows outside it) of a user's notes."""
    row = store.backend.query(
        "SELECT count(*) FILTER (WHERE ann) AS a, count(*) FILTER (WHERE NOT ann) AS b FROM mark_memories "
        "WHERE user_key = %s",
        [user_key(user)],
    )[0]
    return row["a"], row["b"]


def notes(user: str, n: int, start: int = 0) -> list[NewMemory]:
    return [
        NewMemory(text=f"Note {i} of {user}: I keep jar {i} of honey on shelf {i % 7}.", user_id=user)
        for i in range(start, start + n)
    ]


def test_only_a_user_past_the_exact_limit_enters_the_vector_index_and_both_find_their_notes(pg_store):
    pg_store.add_many(notes("big", 45) + notes("small", 12))
    assert indexed(pg_store, "big") == (0, 45) and indexed(pg_store, "small") == (0, 12)  # written unindexed

    first = pg_store.search("jar 3 of honey", "big", mode="dense", limit=5)  # exact meanwhile; asks for the move
    pg_store.flush_vectors()
    assert indexed(pg_store, "big") == (45, 0)
    assert indexed(pg_store, "small") == (0, 12)
    again = pg_store.search("jar 3 of honey", "big", mode="dense", limit=5)  # through the index now
    assert [h.memory.id for h in again] == [h.memory.id for h in first]
    assert again[0].memory.text.startswith("Note 3 of big")
    assert pg_store.search("jar 3 of honey", "small", mode="dense", limit=1)[0].memory.text.startswith(
        "Note 3 of small"
    )

    later = pg_store.add_many(notes("big", 2, start=100))  # an indexed user's new rows enter the index at once
    assert indexed(pg_store, "big") == (47, 0)
    assert pg_store.search("jar 101 of honey", "big", mode="dense", limit=1)[0].memory.id == later[1].id


def test_rows_written_while_a_user_was_moved_are_still_found_and_moved_by_the_next_search(pg_store):
    """A write that raced the move leaves rows outside the index: searches scan them exactly, then move them."""
    pg_store.add_many(notes("big", 40))
    pg_store.search("honey", "big", mode="dense")
    pg_store.flush_vectors()
    straggler = pg_store.add("I hid the spare key under the blue flowerpot.", "big")
    pg_store.backend.query("UPDATE mark_memories SET ann = false WHERE id = %s", [straggler.id])
    pg_store.backend._sizes.clear()  # the user's size is read again, as after the cache's lifetime

    hits = pg_store.search("where is the spare key", "big", mode="dense", limit=3)
    assert hits[0].memory.id == straggler.id
    pg_store.flush_vectors()
    assert indexed(pg_store, "big") == (41, 0)


def test_purge_forgets_that_a_user_was_indexed(pg_store):
    pg_store.add_many(notes("big", 40))
    pg_store.search("honey", "big", mode="dense")
    pg_store.flush_vectors()
    pg_store.purge_user("big")
    assert pg_store.backend.query("SELECT count(*) AS n FROM mark_indexed_users")[0]["n"] == 0
    pg_store.add_many(notes("big", 3))  # a new user of the same id starts unindexed
    assert indexed(pg_store, "big") == (0, 3)


def test_a_database_with_a_whole_table_index_is_migrated_to_the_large_users_index(
    pg_server, embedder, tmp_path, monkeypatch
):
    """A database made before the index was partial: the migration drops the whole-table index and indexes only
    the users past the limit."""
    from tests.pg_fixtures import drop_database

    name = "mark_old_schema"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.get_uri(name)
    dim = len(embedder.embed(["x"])[0])
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE mark_migrations (name text PRIMARY KEY, applied_at timestamptz)")
        pg_migrations.m001_initial(conn)
        conn.execute("INSERT INTO mark_migrations (name, applied_at) VALUES ('m001_initial', now())")
        for table in pg_migrations.VECTOR_TABLES:  # as the first vector sized the columns before
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dim})")
            conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)")
        conn.execute("INSERT INTO mark_meta (key, value) VALUES ('vector_dim', %s)", [str(dim)])
        for user, n in (("big", 9), ("small", 3)):
            for i in range(n):
                conn.execute(
                    "INSERT INTO mark_memories (user_key, id, user_id, kind, text, created_at, updated_at, trust, "
                    "valid_from, embedding_model, embedding) "
                    "VALUES (%s, %s, %s, 'residual', %s, now(), now(), 0.5, now(), %s, %s)",
                    [
                        user_key(user),
                        f"{user}-{i}",
                        user,
                        f"note {i}",
                        embedder.model_id,
                        str([float(x) for x in embedder.embed([f"note {i}"])[0]]),
                    ],
                )
    monkeypatch.setattr(pg_migrations, "LARGE_USER_ROWS", 5)
    try:
        store = MemoryStore(StoreSettings(home=tmp_path / "home", store_url=url), embedder=embedder)
        try:
            definition = store.backend.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'mark_memories_hnsw'")[
                0
            ]["indexdef"]
            assert "WHERE ann" in definition
            exact = store.backend.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'mark_memories_exact'")
            assert "INCLUDE (id, embedding)" in exact[0]["indexdef"]  # m003 on a database already sized
            assert indexed(store, "big") == (9, 0) and indexed(store, "small") == (0, 3)
            assert store.search("note 2", "small", mode="dense", limit=1)[0].memory.id == "small-2"
        finally:
            store.close()
    finally:
        drop_database(pg_server, url)


def exact_scan_plan(store: MemoryStore, user: str, vector: np.ndarray) -> dict:
    """The scan node of `nearest`'s exact query, run."""
    from pgvector.psycopg import register_vector

    with psycopg.connect(store.backend.url, autocommit=True) as conn:
        register_vector(conn)
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id, (embedding <=> %s::vector) + 0 AS d FROM mark_memories "
            "WHERE user_key = %s AND embedding IS NOT NULL ORDER BY d LIMIT 5",
            [np.asarray(vector, dtype=np.float32), user_key(user)],
        ).fetchone()[0][0]["Plan"]
    while plan.get("Plans"):  # Limit -> Sort -> the scan
        plan = plan["Plans"][0]
    return plan


def visibility(store: MemoryStore) -> tuple[int, int]:
    """(pages, pages all-visible) of the notes table, as its last vacuum or analyze left them."""
    row = store.backend.query("SELECT relpages, relallvisible FROM pg_class WHERE relname = 'mark_memories'")[0]
    return row["relpages"], row["relallvisible"]


def test_a_bulk_write_is_vacuumed_in_the_background_so_the_exact_scan_reads_its_index_alone(
    pg_store, embedder, monkeypatch
):
    monkeypatch.setattr(pb, "VACUUM_AFTER_ROWS", 400)
    others = [m for u in range(6) for m in notes(f"other-{u}", 50)]
    pg_store.add_many(notes("small", 12) + others)
    pg_store.flush_vectors()  # waits for the background work: none yet (312 rows written)
    assert visibility(pg_store)[1] == 0

    pg_store.add_many(notes("other-0", 100, start=50))  # 412 rows written by this process: past the limit
    pg_store.flush_vectors()
    # The pages of the earlier write are all-visible now (those of the write that just committed may not be yet:
    # vacuum counts them only once no snapshot could predate it; autovacuum or the next bulk write gets them).
    assert visibility(pg_store)[1] > 0
    scan = exact_scan_plan(pg_store, "small", embedder.embed(["jar 3 of honey"])[0])
    assert (scan["Node Type"], scan["Index Name"], scan["Heap Fetches"]) == (
        "Index Only Scan",
        "mark_memories_exact",
        0,
    )
    assert pg_store.search("jar 3 of honey", "small", mode="dense", limit=1)[0].memory.text.startswith(
        "Note 3 of small"
    )


class DoubledEmbedder:
    """The real model's vectors written twice over (768 dimensions, the same cosines): too wide for a btree entry."""

    def __init__(self, inner) -> None:
        self.inner, self.model_id, self.dim = inner, inner.model_id + "-doubled", inner.dim * 2

    def embed(self, texts: list[str]) -> np.ndarray:
        v = self.inner.embed(texts)
        return np.concatenate([v, v], axis=1) / np.sqrt(2.0)


def test_vectors_too_wide_for_the_exact_scan_index_go_without_it(tmp_path, embedder, pg_url):
    wide = DoubledEmbedder(embedder)
    assert wide.dim > pg_migrations.EXACT_INDEX_MAX_DIM
    store = MemoryStore(StoreSettings(home=tmp_path / "home", store_url=pg_url), embedder=wide)
    try:
        store.add_many(notes("small", 12))
        store.add_turns([{"user_id": "small", "role": "user", "content": "I keep the honey on shelf 3."}])
        names = {r["indexname"] for r in store.backend.query("SELECT indexname FROM pg_indexes")}
        assert "mark_memories_hnsw" in names and not {"mark_memories_exact", "mark_turns_exact"} & names
        assert store.search("jar 3 of honey", "small", mode="dense", limit=1)[0].memory.text.startswith(
            "Note 3 of small"
        )
    finally:
        store.close()
