"""Regression tests for the store breaks of issue 8, on the real store (SQLite, chromadb, the embedding model).

Each break is reproduced as found; the fix holds the rule: a clear error (InvalidInput for bad input), nothing
stored lost, nothing wedged.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import numpy as np
import pytest

from memory_store import InvalidInput, MemoryStore, StoreError, StoreSettings
from memory_store.files import private_output
from memory_store.importing import EXPORT_FORMAT
from memory_store.validation import user_key
from tests.memory_store.engines import row_counts, table
from tests.memory_store.wedge import legacy_wedge

HEADER = json.dumps({"type": "header", "format": EXPORT_FORMAT, "version": 1})
FOUR_FLOATS = "AAAAAAAAAAAAAAAAAAAAAA=="  # the embedding: 16 zero bytes, 4 float32 values


def memory_line(embedder, *, mid: str = "m-mallory", user: str = "mallory", embedding: str | None = FOUR_FLOATS) -> str:
    rec = {
        "type": "memory",
        "id": mid,
        "user_id": user,
        "kind": "user_question",
        "text": "I keep a spare key under the mat.",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "valid_from": "2026-01-01T00:00:00Z",
        "embedding_model": embedder.model_id,
    }
    if embedding is not None:
        rec["embedding"] = embedding
    return json.dumps(rec)


def turn_line(**fields: object) -> str:
    rec = {
        "type": "turn",
        "id": "t1",
        "user_id": "alice",
        "session_id": "s1",
        "role": "user",
        "content": "hello",
        "created_at": "2026-01-01T00:00:00Z",
    }
    rec.update(fields)
    return json.dumps(rec)


snapshot = row_counts  # what is stored, per table: nothing may change when an import is refused


# -- 1. one import line wedged every user ----------------------------------------------------------------------


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")


@pytest.mark.parametrize(
    "embedding, message",
    [
        (FOUR_FLOATS, "4 dimensions"),
        ("nan", "NaN"),
        ("long", "not unit length"),
        ("not base64!", "base64"),
        (base64.b64encode(b"12345").decode(), "whole number of float32"),
    ],
)
def test_import_refuses_an_embedding_that_does_not_fit_the_model(store, embedder, embedding, message):
    if embedding == "nan":
        embedding = _b64(np.full(embedder.dim, np.nan))
    elif embedding == "long":
        embedding = _b64(np.ones(embedder.dim))
    store.add("Alice likes green tea.", "alice")
    before = snapshot(store)
    good = memory_line(embedder, mid="m-ok", user="mallory", embedding=None)
    with pytest.raises(InvalidInput, match=message) as err:
        store.import_jsonl(io.StringIO("\n".join([HEADER, good, memory_line(embedder, embedding=embedding)]) + "\n"))
    assert "line 3" in str(err.value)
    assert snapshot(store) == before  # refused whole: not even the good line was written
    assert store.list("mallory").total == 0 and store.list("alice").total == 1
    assert store.check().ok


def test_import_recomputes_embeddings_of_another_model(store, embedder):
    line = memory_line(embedder, embedding=FOUR_FLOATS).replace(embedder.model_id, "some-other-model")
    assert store.import_jsonl(io.StringIO(HEADER + "\n" + line + "\n")) == 1
    assert store.search("where is the spare key?", "mallory")[0].memory.embedding_model == embedder.model_id
    assert store.check().ok


def test_a_vector_write_the_index_refuses_blocks_nobody_and_is_repaired(tmp_path, embedder):
    home = tmp_path / "home"
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    alice = store.add("Alice likes green tea.", "alice")
    coffee = legacy_wedge(store)
    assert store.search("what does alice drink?", "alice")[0].memory.id == alice.id
    report = store.check()
    assert not report.ok and report.set_aside == 1 and len(report.unusable_embeddings) == 1
    assert any("dimension" in p and "check --repair" in p for p in report.problems)
    store.close()

    store = MemoryStore(StoreSettings(home=home), embedder=embedder)  # an open replays nothing that can fail
    assert store.list("alice").total == 1 and store.list("mallory").total == 2
    store.add("Alice also likes oolong.", "alice")
    assert {h.memory.text for h in store.search("tea", "alice")} >= {"Alice likes green tea."}
    store.reconcile()  # `mark memory check --repair`
    report = store.check()
    assert report.ok, report.problems
    assert report.set_aside == 0 and report.memories == report.vectors == 4
    assert store.search("what does mallory drink?", "mallory", mode="dense")[0].memory.id == coffee
    store.close()


def test_rebuild_index_and_purge_work_with_a_set_aside_write(tmp_path, embedder):
    store = MemoryStore(StoreSettings(home=tmp_path / "home"), embedder=embedder)
    store.add("Alice likes green tea.", "alice")
    legacy_wedge(store)
    assert store.check().set_aside == 1
    assert store.rebuild() == 3  # `mark memory rebuild-index`: the bad embedding is computed again
    assert store.check().ok
    legacy_wedge(store)
    assert store.check().set_aside == 1
    assert store.purge_user("mallory").memories == 4
    assert store.db.query("SELECT count(*) AS n FROM vector_quarantine")[0]["n"] == 0  # no trace of mallory
    assert user_key("mallory") not in store.index.user_keys()
    assert store.list("alice").total == 1 and store.check().ok
    store.close()


# -- 4. duplicate lines -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "turn", "history"])
def test_import_refuses_a_repeated_line_by_number(store, embedder, kind):
    store.add("Keep me.", "alice")
    buf = io.StringIO()
    store.add_turns([{"user_id": "alice", "role": "user", "content": "hello"}])
    store.export_jsonl(buf, user_id="alice")
    lines = buf.getvalue().splitlines()
    line = next(x for x in lines if json.loads(x)["type"] == kind)
    first = lines.index(line) + 1
    fresh = MemoryStore(StoreSettings(home=store.home.parent / "other"), embedder=embedder)
    fresh.add("Already here.", "bob")
    before = snapshot(fresh)
    with pytest.raises(InvalidInput, match=rf"line {len(lines) + 1}: {kind} .* twice \(first on line {first}\)"):
        fresh.import_jsonl(io.StringIO("\n".join([*lines, line]) + "\n"))
    assert snapshot(fresh) == before
    fresh.close()


def test_an_import_that_conflicts_with_stored_rows_is_invalid_input(store, embedder):
    """A database constraint is the last guard (a turn id clash no check foresaw): still bad input, not a crash."""
    store.add_turns([{"id": "t1", "user_id": "alice", "role": "user", "content": "hello"}])
    store.db.query(f"CREATE UNIQUE INDEX IF NOT EXISTS test_turn_content ON {table(store, 'turns')}(content)")
    before = snapshot(store)
    with pytest.raises(InvalidInput, match="conflicts with what is stored"):
        store.import_jsonl(io.StringIO(HEADER + "\n" + turn_line(id="t2") + "\n"))
    assert snapshot(store) == before


# -- 5. imported turns pass the same validation as every write ----------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"user_id": ""}, "user id is empty"),
        ({"content": "nul \x00 byte"}, "NUL"),
        ({"content": "   "}, "message is empty"),
        ({"content": "x" * 200_001}, "limit"),
        ({"role": "wizard"}, "role must be"),
        ({"session_id": "a\x07b"}, "session id contains control characters"),
        ({"user_id": 7}, "must be a string"),
        ({"extraction_status": "eaten"}, "extraction status"),
        ({"id": ""}, "turn id is empty"),
    ],
)
def test_imported_turns_are_validated_like_add_turns(store, fields, message):
    before = snapshot(store)
    line = turn_line(**fields)
    with pytest.raises(InvalidInput, match=message) as err:
        store.import_jsonl(io.StringIO(HEADER + "\n" + line + "\n"))
    assert "line 2" in str(err.value)
    assert snapshot(store) == before
    direct = {k: v for k, v in json.loads(line).items() if k not in ("type", "created_at")}
    if fields != {"id": ""}:  # add_turns makes an id when none is given
        with pytest.raises(InvalidInput, match=message):
            store.add_turns([direct])


def test_imported_history_and_feedback_need_a_user_id(store):
    event = {"type": "history", "id": "h1", "memory_id": "m1", "user_id": "", "event": "add"}
    event["created_at"] = "2026-01-01T00:00:00Z"
    with pytest.raises(InvalidInput, match="line 2: user id is empty"):
        store.import_jsonl(io.StringIO(HEADER + "\n" + json.dumps(event) + "\n"))
    fb = {"type": "feedback", "id": "f1", "user_id": "alice", "response_id": "r", "value": 5}
    fb["created_at"] = "2026-01-01T00:00:00Z"
    with pytest.raises(InvalidInput, match="line 2: feedback value"):
        store.import_jsonl(io.StringIO(HEADER + "\n" + json.dumps(fb) + "\n"))


# -- 7. disk full at the SQLite boundary ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["database or disk is full", "disk I/O error"])
def test_disk_full_simulated_at_commit_is_one_store_error_and_nothing_is_lost(tmp_path, embedder, error):
    """Simulated: SQLite's COMMIT fails as on a full disk (a real full disk is tested through the CLI in a tmpfs)."""
    store = MemoryStore(StoreSettings(home=tmp_path / "home"), embedder=embedder)
    kept = store.add("Acknowledged before the disk filled.", "alice")

    class FullDisk(sqlite3.Connection):
        """A real connection to the same database whose COMMIT fails as SQLite's does on a full disk."""

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT":
                raise sqlite3.OperationalError(error)
            return super().execute(sql, *args)

    real = store.db.conn
    full = sqlite3.connect(store.db.path, factory=FullDisk, isolation_level=None, check_same_thread=False)
    full.row_factory = sqlite3.Row
    store.db._local.conn = full
    with pytest.raises(StoreError, match="nothing was written"):
        store.add("Never acknowledged.", "alice")
    assert not full.in_transaction  # rolled back, the database is not left locked
    store.db._local.conn = real
    full.close()
    assert [m.id for m in store.list("alice").items] == [kept.id]
    assert store.check().ok
    store.close()


# -- 9. an export never leaves a temporary file with user data behind ---------------------------------------------


def test_private_output_refuses_a_directory_and_cleans_up_after_a_failure(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(InvalidInput, match="is a directory"), private_output(target) as fh:
        fh.write("never")
    with pytest.raises(RuntimeError), private_output(tmp_path / "alice.jsonl") as fh:
        fh.write("alice's secret memories\n")
        raise RuntimeError("the export failed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary file, no half-written export
    with private_output(tmp_path / "alice.jsonl") as fh:
        fh.write("done\n")
    assert (tmp_path / "alice.jsonl").read_text() == "done\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.jsonl", "out"]


def test_vectors_of_two_widths_in_a_small_group_block_no_search_and_are_repaired(tmp_path, embedder):
    """A small group lives in SQLite only (no chroma collection): an old row of another width in it must not make
    the user's searches fail; check reports it and --repair embeds it again."""
    store = MemoryStore(StoreSettings(home=tmp_path / "home"), embedder=embedder)
    first = store.add("Mallory's first note.", "mallory")
    store.add("Mallory likes strong coffee.", "mallory")
    with store.db.write() as w:
        w.execute("UPDATE memories SET embedding = ? WHERE id = ?", [np.zeros(4, np.float32).tobytes(), first.id])
    store.index.refresh()  # as when another process wrote it: the group is read from SQLite again
    assert store.search("strong coffee", "mallory")[0].memory.text == "Mallory likes strong coffee."
    report = store.check()
    assert not report.ok and len(report.unusable_embeddings) == 1
    store.reconcile()
    assert store.check().ok
    dense = store.search("what does mallory drink?", "mallory", mode="dense")
    assert dense[0].memory.text == "Mallory likes strong coffee." and len(dense) == 2
    store.close()
