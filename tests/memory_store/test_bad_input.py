"""Bad input gets a clear error, and nothing already stored is lost or half-written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from memory_store import InvalidInput, NewMemory


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 1_048_576, "limit"),
        ("bad \ud800 surrogate", "unicode"),
        ("nul \x00 byte", "NUL"),
        (None, "string"),
    ],
)
def test_bad_memory_text(store, text, message):
    keep = store.add("I already know this.", "alice")
    with pytest.raises(InvalidInput, match=message):
        store.add(text, "alice")
    assert [m.id for m in store.list("alice").items] == [keep.id]
    assert store.check().ok


@pytest.mark.parametrize("user", ["../x", "'; DROP TABLE memories; --", "u/../../etc/passwd", "名前", "a" * 256])
def test_odd_user_ids_are_opaque_and_isolated(store, user):
    m = store.add("My odd-user secret is 42.", user)
    store.add("A normal user's note.", "alice")
    assert store.search("secret", user)[0].memory.id == m.id
    assert all(h.memory.user_id == "alice" for h in store.search("odd-user secret", "alice"))
    assert store.list("alice").total == 1
    assert store.purge_user(user).memories == 1
    assert store.list("alice").total == 1 and store.check().ok


@pytest.mark.parametrize(
    "user, message", [("", "empty"), ("  ", "empty"), ("a\x07b", "control"), ("x" * 257, "limit"), (42, "string")]
)
def test_invalid_user_ids(store, user, message):
    with pytest.raises(InvalidInput, match=message):
        store.add("text", user)
    with pytest.raises(InvalidInput):
        store.search("text", user)


def test_a_batch_with_one_bad_item_stores_nothing(store):
    store.add("Existing.", "alice")
    with pytest.raises(InvalidInput, match="item 2"):
        store.add_many(
            [
                NewMemory(text="ok one", user_id="alice"),
                NewMemory(text="ok two", user_id="alice"),
                NewMemory(text="  ", user_id="alice"),
            ]
        )
    assert [m.text for m in store.list("alice").items] == ["Existing."]


def test_bad_search_arguments(store):
    with pytest.raises(InvalidInput):
        store.search("", "alice")
    with pytest.raises(InvalidInput):
        store.search("q", "alice", mode="psychic")
    with pytest.raises(InvalidInput):
        store.search("q", "alice", kinds=["gossip"])


def test_texts_with_tabs_backslashes_and_line_breaks_come_back_exactly(store):
    """What a bulk write must escape (Postgres writes notes with COPY, whose text format gives tab, newline,
    backslash and `\\N` a meaning) is stored and read back as written, with its metadata and history."""
    texts = ["tab\there", "back\\slash \\N end", "line\nbreak\r\nx", "\\N", "emoji 🐶 ünïcode", "quote \" and ' x"]
    user = "odd user \\N"
    added = store.add_many([NewMemory(text=t, user_id=user, metadata={"k": "v\t\\N\n"}) for t in texts])
    assert [store.get(m.id, user).text for m in added] == texts
    assert all(store.get(m.id, user).metadata == {"k": "v\t\\N\n"} for m in added)
    assert [e.memory_id for e in store.history(user, added[1].id)] == [added[1].id]
    assert store.search("emoji", user)[0].memory.id == added[4].id
    assert store.check().ok


def test_naive_and_non_utc_times_are_stored_as_the_same_instant_on_every_engine(store):
    """A caller's time without a zone is taken as UTC, one with a zone keeps its instant, and both come back in
    UTC (Postgres's binary COPY refused a naive time with a TypeError)."""
    naive = datetime(2024, 1, 1, 12)
    lisbon_summer = datetime(2024, 7, 1, 14, tzinfo=timezone(timedelta(hours=1)))
    a, b = store.add_many(
        [
            NewMemory(text="I started running in January.", user_id="alice", valid_from=naive),
            NewMemory(text="I moved to Lisbon in July.", user_id="alice", valid_from=lisbon_summer),
        ]
    )
    assert store.get(a.id, "alice").valid_from == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert store.get(b.id, "alice").valid_from == datetime(2024, 7, 1, 13, tzinfo=UTC)
    (turn,) = store.add_turns([{"user_id": "alice", "role": "user", "content": "Hello there.", "created_at": naive}])
    assert [t.created_at for t in store.turns("alice")] == [datetime(2024, 1, 1, 12, tzinfo=UTC)]
    assert turn.created_at.tzinfo is not None
    # A naive bound of a search is UTC too (it raised a TypeError, compared with the records' aware times).
    assert {h.memory.id for h in store.search("Lisbon running", "alice", since=datetime(2020, 1, 1))} == {a.id, b.id}
    assert store.search("Lisbon running", "alice", until=datetime(2020, 1, 1)) == []
    assert store.check().ok
