"""The chat state's file after a purge (mark_agents.chat_state), on the real SQLite file LangGraph writes."""

from __future__ import annotations

import logging
import sqlite3

from langgraph.checkpoint.base import empty_checkpoint

from mark_agents.chat_state import open_checkpointer, purge_threads
from memory_store.validation import user_key


async def _put_thread(saver, user_id: str, text: str) -> None:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"message": text}
    config = {"configurable": {"thread_id": f"{user_key(user_id)}:s1", "checkpoint_ns": ""}}
    await saver.aput(config, checkpoint, {}, {})


async def test_a_reader_keeping_the_wal_is_warned_about_and_the_next_purge_empties_it(tmp_path, caplog):
    saver = await open_checkpointer(tmp_path)
    wal = tmp_path / "chat_state.db-wal"
    await _put_thread(saver, "alice", "quokkasecret is my hint")
    await _put_thread(saver, "bob", "bob's own chat")
    reader = sqlite3.connect(tmp_path / "chat_state.db", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 2  # holds this snapshot of the WAL
    await saver.conn.execute("PRAGMA busy_timeout=0")  # SQLite would wait 5 s for the reader first

    with caplog.at_level(logging.WARNING, logger="mark_agents.chat_state"):
        assert await purge_threads(saver, "alice") == 1
    assert "chat_state.db-wal" in caplog.text and "still holds" in caplog.text
    assert wal.stat().st_size > 0  # not emptied while the reader holds it

    reader.execute("ROLLBACK")
    reader.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mark_agents.chat_state"):
        assert await purge_threads(saver, "nobody") == 0
    assert caplog.text == ""
    assert wal.stat().st_size == 0
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("chat_state.db*"))
    assert b"quokkasecret" not in raw and b"bob's own chat" in raw
    await saver.conn.close()
