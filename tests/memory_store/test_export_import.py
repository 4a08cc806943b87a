"""Export/import: an exact round trip, and a bad file changes nothing, on each engine (and from one to the other)."""

from __future__ import annotations

import io

import pytest

from memory_store import InvalidInput, MemoryStore, NewMemory, StoreSettings
from tests.pg_fixtures import new_database


def fill(store: MemoryStore) -> None:
    old = store.add("I live in Denver.", "alice", session_id="s1", metadata={"source": "chat"})
    store.supersede(old.id, "alice", NewMemory(text="I moved to Lisbon.", user_id="alice"))
    m = store.add("Answer with tables.", "alice", kind="llm_response")
    store.confirm(m.id, "alice")
    store.add_turns([{"user_id": "alice", "session_id": "s1", "role": "user", "content": "I moved to Lisbon."}])
    store.add_feedback("alice", "r1", [m.id], 1)
    store.add("Bob's fact.", "bob")


def test_round_trip_is_exact(make_store):
    a = make_store("a")
    fill(a)
    first = io.StringIO()
    n = a.export_jsonl(first, user_id="alice")
    b = make_store("b")
    assert b.import_jsonl(io.StringIO(first.getvalue())) == n
    second = io.StringIO()
    b.export_jsonl(second, user_id="alice")
    assert second.getvalue() == first.getvalue()
    assert "Bob" not in first.getvalue()
    assert b.search("Where do I live?", "alice")[0].memory.text == "I moved to Lisbon."
    assert b.check().ok
    with pytest.raises(InvalidInput, match="already exist"):
        b.import_jsonl(io.StringIO(first.getvalue()))
    assert b.import_jsonl(io.StringIO(first.getvalue()), replace=True) == n
    assert b.list("alice", include_history=True).total == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"type":"header","format":"mark-memory-export","version":1}\n{"type":"memory","id":"x"', "line 2"),
        ('{"type":"memory"}\n', "line 1"),
        ("not json at all\n", "line 1"),
        ('{"type":"header","format":"mark-memory-export","version":1}\n{"type":"alien"}\n', "unknown record"),
        ("", "header"),
    ],
)
def test_bad_import_is_rejected_whole(make_store, bad, message):
    store = make_store("h")
    store.add("Keep me.", "alice")
    buf = io.StringIO()
    store.export_jsonl(buf, user_id="alice")
    good_line = buf.getvalue().splitlines()[1]
    with pytest.raises(InvalidInput, match=message):
        store.import_jsonl(io.StringIO(bad))
    # A file whose first lines are fine but whose last is broken writes nothing at all.
    mixed = (
        buf.getvalue().splitlines()[0]
        + "\n"
        + good_line.replace("Keep me.", "New one.").replace('"id": "', '"id": "new')
        + "\n{broken\n"
    )
    with pytest.raises(InvalidInput):
        store.import_jsonl(io.StringIO(mixed))
    assert [m.text for m in store.list("alice").items] == ["Keep me."]


@pytest.mark.postgres
def test_an_export_moves_from_sqlite_to_postgres_and_back(tmp_path, embedder, clock, pg_server):
    """The way from the embedded engine to Postgres (and back): export, import, the same export again."""
    lite = MemoryStore(StoreSettings(home=tmp_path / "lite"), embedder=embedder, clock=clock)
    fill(lite)
    first = io.StringIO()
    n = lite.export_jsonl(first)
    pg = MemoryStore(StoreSettings(home=tmp_path / "pg", store_url=new_database(pg_server)), embedder=embedder)
    assert pg.import_jsonl(io.StringIO(first.getvalue())) == n
    second = io.StringIO()
    pg.export_jsonl(second)
    assert second.getvalue() == first.getvalue()
    assert pg.search("Where do I live?", "alice")[0].memory.text == "I moved to Lisbon."
    back = MemoryStore(StoreSettings(home=tmp_path / "back"), embedder=embedder, clock=clock)
    assert back.import_jsonl(io.StringIO(second.getvalue())) == n
    third = io.StringIO()
    back.export_jsonl(third)
    assert third.getvalue() == first.getvalue()
    for s in (lite, pg, back):
        s.close()
