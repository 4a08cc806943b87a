"""Privacy: one user's memories never reach another; purging a user leaves no trace on disk."""

from __future__ import annotations

import io
import logging
import sqlite3
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_store import MemoryStore, NewMemory, StoreSettings
from memory_store.validation import user_key
from tests.memory_store.engines import stored_anywhere
from tests.pg_fixtures import new_database

WORDS = ["dog", "cat", "Lisbon", "Denver", "nurse", "law", "school", "tea", "coffee", "jazz", "bike", "May", "peanuts"]
texts = st.lists(st.sampled_from(WORDS), min_size=2, max_size=6).map(lambda ws: "I like " + " and ".join(ws) + ".")
user_ids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(
    lambda s: s.strip()
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(tmp_path_factory, embedder, request):
    settings = StoreSettings(home=tmp_path_factory.mktemp("iso"))
    if request.param == "postgres":
        settings = settings.model_copy(update={"store_url": new_database(request.getfixturevalue("pg_server"))})
    s = MemoryStore(settings, embedder=embedder)
    yield s
    s.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a_texts=st.lists(texts, min_size=1, max_size=4),
    b_texts=st.lists(texts, min_size=0, max_size=3),
    a_name=user_ids,
    b_name=user_ids,
)
def test_nothing_of_user_a_reaches_user_b(shared_store, a_texts, b_texts, a_name, b_name):
    run = uuid.uuid4().hex[:8]
    a, b = f"{a_name}#{run}a", f"{b_name}#{run}b"  # unique per example; arbitrary unicode kept
    tag = f"secret{run}"
    a_mems = shared_store.add_many([NewMemory(text=f"{t} {tag}", user_id=a) for t in a_texts])
    shared_store.add_many([NewMemory(text=t, user_id=b) for t in b_texts])
    a_ids = {m.id for m in a_mems}
    for q in [*a_texts, tag]:
        for mode in ("hybrid", "dense", "keyword"):
            hits = shared_store.search(q, b, mode=mode, limit=50)
            assert all(h.memory.user_id == b for h in hits)
            assert not a_ids & {h.memory.id for h in hits}
    assert all(m.user_id == b for m in shared_store.list(b, limit=1000).items)
    assert all(e.user_id == b for e in shared_store.history(b))
    buf = io.StringIO()
    shared_store.export_jsonl(buf, user_id=b)
    assert tag not in buf.getvalue() and a not in buf.getvalue()
    for mid in a_ids:
        with pytest.raises(KeyError):
            shared_store.get(mid, b)


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_purge_leaves_no_trace_in_any_file(tmp_path, embedder):
    home = tmp_path / "home"
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    victim, other = "victim-7f3a9c", "bystander"
    secrets = [f"zebracode{n} is my locker combination" for n in range(30)]
    mems = store.add_many([NewMemory(text=s, user_id=victim, session_id="sess-victim") for s in secrets])
    store.add_many([NewMemory(text=f"bystander fact {n}", user_id=other) for n in range(30)])
    store.update(mems[0].id, victim, text="zebracode-updated is the new combination")
    store.supersede(mems[1].id, victim, NewMemory(text="zebracode-superseding value", user_id=victim))
    store.delete(mems[2].id, victim)
    store.add_turns([{"user_id": victim, "session_id": "sess-victim", "role": "user", "content": "zebracode chat"}])
    store.add_feedback(victim, "resp-zebracode", [mems[3].id], -1, comment="zebracode feedback")
    store.search("zebracode", victim)
    store.close()
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)  # reopen: data now also in main db file
    assert _files_containing(home, b"zebracode")  # the check below is meaningful

    assert user_key.cache_info().currsize > 0  # the store's writes named users by their cached keys
    report = store.purge_user(victim)
    assert report.memories >= 29 and report.turns == 1 and report.feedback == 1 and report.history > 30
    assert user_key.cache_info().currsize == 0  # nor is the purged id left in the process's key cache
    store.close()
    for needle in (b"zebracode", victim.encode(), b"sess-victim", mems[4].id.encode()):
        assert _files_containing(home, needle) == [], needle
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    assert store.list(other).total == 30 and store.check().ok
    assert store.search("bystander fact", other)
    store.close()


@pytest.mark.postgres
def test_purge_on_postgres_removes_every_row_of_the_user(tmp_path, embedder, pg_url):
    """Postgres: no row of any table holds the user any more (the tables are vacuumed: their space is reused; the
    README says what WAL and backups keep), and the other users are untouched."""
    store = MemoryStore(StoreSettings(home=tmp_path / "home", store_url=pg_url), embedder=embedder)
    victim, other = "victim-7f3a9c", "bystander"
    mems = store.add_many([NewMemory(text=f"zebracode{n} is my locker", user_id=victim) for n in range(5)])
    store.add_many([NewMemory(text=f"bystander fact {n}", user_id=other) for n in range(5)])
    store.supersede(mems[1].id, victim, NewMemory(text="zebracode-superseding value", user_id=victim))
    store.add_turns([{"user_id": victim, "session_id": "sess-victim", "role": "user", "content": "zebracode chat"}])
    store.add_feedback(victim, "resp-zebracode", [mems[3].id], -1, comment="zebracode feedback")
    store.forget(victim, mems[4].id)
    assert stored_anywhere(store, b"zebracode")  # the check below is meaningful
    report = store.purge_user(victim)
    assert report.memories == 5 and report.turns == 1 and report.feedback == 1 and report.history >= 7
    for needle in (b"zebracode", victim.encode(), b"sess-victim", mems[0].id.encode()):
        assert stored_anywhere(store, needle) == [], needle
    assert store.list(other).total == 5 and store.check().ok
    assert store.search("bystander fact", other)
    store.close()


def test_purge_while_another_connection_reads_warns_and_the_next_purge_empties_the_wal(tmp_path, embedder, caplog):
    """A reader in another connection keeps SQLite from emptying the WAL, which still holds earlier copies of the
    purged rows' pages: the purge says so, and the next purge (or forget) empties it once the reader is gone."""
    home = tmp_path / "home"
    store = MemoryStore(StoreSettings(home=home, vector_backend="exact"), embedder=embedder)
    wal = Path(f"{store.settings.db_path}-wal")
    store.add_many([NewMemory(text=f"zebracode{n} is my locker", user_id="victim") for n in range(5)])
    store.add_many([NewMemory(text=f"bystander fact {n}", user_id="bystander") for n in range(5)])
    reader = sqlite3.connect(store.settings.db_path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM memories").fetchone()[0] == 10  # holds this snapshot of the WAL
    store.backend._conn().execute("PRAGMA busy_timeout=0")  # this thread's connection; SQLite would wait 30 s

    with caplog.at_level(logging.WARNING, logger="memory_store.sqlite_engine"):
        assert store.purge_user("victim").memories == 5
    assert f"{wal.name}) still holds" in caplog.text
    assert wal.stat().st_size > 0

    reader.execute("ROLLBACK")
    reader.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory_store.sqlite_engine"):
        store.purge_user("nobody")
    assert caplog.text == ""
    assert wal.stat().st_size == 0
    assert stored_anywhere(store, b"zebracode") == []
    assert store.list("bystander").total == 5
    store.close()
