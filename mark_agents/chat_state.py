"""The checkpointed chat state (LangGraph, `<home>/chat_state.db`): opening it, and what forget and purge do to it.

After a forget, every thread of the user is rewritten: its latest state is kept with the forgotten fact's text
removed from the messages (the session's chat history), the turn's message and the last reply, and with the derived
fields (memory block, recalled notes and turns: recomputed at every turn) emptied; its older checkpoints and pending
writes, which all hold the text, are deleted (`adelete_thread`), and the cleaned state is put back as the thread's
only checkpoint. A purge deletes every thread of the user with `adelete_thread`. The file uses secure delete and
its WAL is truncated after both, so the old bytes are gone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from memory_store.forgetting import redact_value
from memory_store.validation import user_key
from memory_store.wal import wal_kept_warning

log = logging.getLogger(__name__)

#: Channels recomputed at every turn: emptied rather than redacted.
DERIVED = {"memory_block": "", "recalled": [], "recalled_turns": []}


async def open_checkpointer(home: Path) -> AsyncSqliteSaver:
    """The chat state's checkpointer (its connection is ``saver.conn``): WAL, and secure delete so that deleted
    checkpoints leave no bytes behind."""
    connecting = aiosqlite.connect(str(home / "chat_state.db"))
    # aiosqlite's worker thread is not a daemon: an agent never closed would keep the process alive at exit. Every
    # write is committed as it happens, so a daemon thread loses nothing.
    connecting._thread.daemon = True
    conn = await connecting
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA secure_delete=ON")
    saver = AsyncSqliteSaver(conn)
    await saver.setup()
    return saver


def close_from_sync(saver: AsyncSqliteSaver) -> None:
    """Close the checkpointer's connection from sync code, whatever loop this thread has (running, closed or none).

    aiosqlite answers on the loop that asked: left to the garbage collector, a connection opened by async code is
    stopped from whichever loop is current then (often one already closed), and its worker thread fails with "Event
    loop is closed". So the close is asked from a fresh loop in a short-lived thread.
    """
    thread = threading.Thread(target=lambda: asyncio.run(saver.conn.close()), name="mark-close-chat-state")
    thread.start()
    thread.join(timeout=30)


async def user_threads(saver: AsyncSqliteSaver, user_id: str) -> list[str]:
    """Every checkpointed thread of a user, found by its id prefix (the user's key), so sessions no turn names any
    more are found too. (LangGraph lists checkpoints, not threads: this one read goes to its table.)"""
    prefix = user_key(user_id) + ":"
    async with saver.conn.execute(
        "SELECT DISTINCT thread_id FROM checkpoints WHERE substr(thread_id, 1, ?) = ?", (len(prefix), prefix)
    ) as cur:
        return [row[0] for row in await cur.fetchall()]


async def purge_threads(saver: AsyncSqliteSaver, user_id: str) -> int:
    """Delete every checkpointed thread of a user (`adelete_thread`) and truncate the WAL; returns how many."""
    threads = await user_threads(saver, user_id)
    for thread_id in threads:
        await saver.adelete_thread(thread_id)
    await _truncate_wal(saver)
    return len(threads)


async def rewrite_chat_state(saver: AsyncSqliteSaver, user_id: str, redact: Callable[[str], str]) -> int:
    """Rewrite every checkpointed thread of a user through `redact`; returns how many threads were rewritten."""
    threads = await user_threads(saver, user_id)
    for thread_id in threads:
        namespaces = await _namespaces(saver, thread_id)
        cleaned = []
        for ns in namespaces:
            found = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}})
            if found is None:
                continue
            checkpoint = dict(found.checkpoint)
            values = redact_value(dict(checkpoint.get("channel_values", {})), redact)
            values.update({k: v for k, v in DERIVED.items() if k in values})
            checkpoint["channel_values"] = values
            cleaned.append((ns, checkpoint, redact_value(dict(found.metadata), redact)))
        await saver.adelete_thread(thread_id)
        for ns, checkpoint, metadata in cleaned:
            await saver.aput(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}},
                checkpoint,
                metadata,
                dict(checkpoint.get("channel_versions", {})),
            )
    await _truncate_wal(saver)
    return len(threads)


async def _namespaces(saver: AsyncSqliteSaver, thread_id: str) -> list[str]:
    async with saver.conn.execute(
        "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ?", (thread_id,)
    ) as cur:
        return [row[0] for row in await cur.fetchall()]


async def _truncate_wal(saver: AsyncSqliteSaver) -> None:
    """Empty the chat state's WAL, which holds earlier copies of the deleted checkpoints' pages; warn if a reader in
    another connection kept it from being emptied (after SQLite's busy timeout)."""
    async with saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
        row = await cur.fetchone()  # (busy, log pages, pages copied)
    if row is not None and row[0]:
        log.warning(wal_kept_warning("chat_state.db", "chat threads"))
