"""Export/import: an exact round trip, and a bad file changes nothing."""

from __future__ import annotations

import io

import pytest

from memory_store import InvalidInput, MemoryStore, NewMemory, StoreSettings


def fill(store: MemoryStore) -> None:
    old = store.add("I live in Denver.", "alice", session_id="s1", metadata={"source": "chat"})
    store.supersede(old.id, "alice", NewMemory(text="I moved to Lisbon.", user_id="alice"))
    m = store.add("Answer with tables.", "alice", kind="llm_response")
    store.confirm(m.id, "alice")
    store.add_turns([{"user_id": "alice", "session_id": "s1", "role": "user", "content": "I moved to Lisbon."}])
    store.add_feedback("alice", "r1", [m.id], 1)
    store.add("Bob's fact.", "bob")


def test_round_trip_is_exact(tmp_path, embedder, clock):
    a = MemoryStore(StoreSettings(home=tmp_path / "a"), embedder=embedder, clock=clock)
    fill(a)
    first = io.StringIO()
    n = a.export_jsonl(first, user_id="alice")
    b = MemoryStore(StoreSettings(home=tmp_path / "b"), embedder=embedder, clock=clock)
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
def test_bad_import_is_rejected_whole(tmp_path, embedder, bad, message):
    store = MemoryStore(StoreSettings(home=tmp_path / "h"), embedder=embedder)
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
