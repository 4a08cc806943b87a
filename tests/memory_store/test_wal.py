"""WAL checkpoints off the writer's path (memory_store.wal), on the real SQLite file."""

from __future__ import annotations

import sqlite3
import time

from memory_store import MemoryStore, NewMemory, StoreSettings
from memory_store.wal import BACKSTOP_PAGES


def _db_size(store: MemoryStore) -> int:
    return store.settings.db_path.stat().st_size


def test_commits_reach_the_database_file_in_the_background_and_close_stops_the_thread(tmp_path, embedder):
    store = MemoryStore(StoreSettings(home=tmp_path / "home", vector_backend="exact"), embedder=embedder)
    before = _db_size(store)
    store.add_many([NewMemory(text=f"The user noted fact number {n} today.", user_id="alice") for n in range(400)])
    # Far below the backstop: only the background checkpoint copies these pages into the file before close.
    assert store.backend.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    deadline = time.monotonic() + 20
    while _db_size(store) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _db_size(store) > before
    assert store.backend._checkpointer.checkpoints >= 1
    thread = store.backend._checkpointer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()
    with sqlite3.connect(store.settings.db_path) as conn:  # everything committed is in the file
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 400
