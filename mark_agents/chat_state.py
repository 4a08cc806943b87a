"""The checkpointed chat state (LangGraph, `<home>/chat_state.db`) after a forget.

Every thread of the user is rewritten: its latest state is kept with the forgotten fact's text removed from the
messages (the session's chat history) and the last reply, and with the derived fields (memory block, recalled
notes and turns: recomputed at every turn) emptied; its older checkpoints and pending writes, which all hold the
text, are deleted (`adelete_thread`), and the cleaned state is put back as the thread's only checkpoint. The
file uses secure delete and its WAL is truncated, so the old bytes are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from memory_store.forgetting import redact_value
from memory_store.validation import user_key

#: Channels recomputed at every turn: emptied rather than redacted.
DERIVED = {"memory_block": "", "recalled": [], "recalled_turns": []}


async def rewrite_chat_state(
    home: Path, user_id: str, redact: Callable[[str], str], saver: AsyncSqliteSaver | None = None
) -> int:
    """Rewrite every checkpointed thread of a user through `redact`; returns how many threads were rewritten."""
    path = home / "chat_state.db"
    if saver is None and not path.exists():
        return 0
    conn: aiosqlite.Connection | None = None
    if saver is None:
        conn = await aiosqlite.connect(str(path))
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA secure_delete=ON")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
    try:
        prefix = user_key(user_id) + ":"
        async with saver.conn.execute(
            "SELECT DISTINCT thread_id, checkpoint_ns FROM checkpoints WHERE substr(thread_id, 1, ?) = ?",
            (len(prefix), prefix),
        ) as cur:
            rows = await cur.fetchall()
        threads: dict[str, list[str]] = {}
        for thread_id, ns in rows:
            threads.setdefault(thread_id, []).append(ns)
        for thread_id, namespaces in threads.items():
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
        await saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(threads)
    finally:
        if conn is not None:
            await conn.close()
