"""Named, ordered schema migrations, each applied once and recorded in `_migrations` (as in simonw/llm)."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db["memories"].create(
        {
            "seq": int,
            "id": str,
            "user_id": str,
            "user_key": str,
            "agent_id": str,
            "session_id": str,
            "kind": str,
            "text": str,
            "status": str,
            "created_at": float,
            "updated_at": float,
            "last_confirmed_at": float,
            "confirm_count": int,
            "last_recalled_at": float,
            "recall_count": int,
            "trust": float,
            "valid_from": float,
            "valid_until": float,
            "superseded_by": str,
            "source": str,
            "metadata": str,
            "embedding_model": str,
            "embedding": bytes,
        },
        pk="seq",
        not_null={"id", "user_id", "user_key", "kind", "text", "status", "created_at"},
        defaults={"confirm_count": 0, "recall_count": 0, "status": "active"},
    )
    db["memories"].create_index(["id"], unique=True)
    db["memories"].create_index(["user_id", "status", "kind"])
    db["memories"].create_index(["user_id", "created_at"])
    # Keyword index over the text, scoped by the hashed user key (an FTS column, so a MATCH can require it).
    db["memories"].enable_fts(["text", "user_key"], tokenize="porter", create_triggers=True)

    db["turns"].create(
        {
            "seq": int,
            "id": str,
            "user_id": str,
            "agent_id": str,
            "session_id": str,
            "role": str,
            "content": str,
            "created_at": float,
            "extraction_status": str,
            "attempts": int,
            "last_error": str,
            "metadata": str,
        },
        pk="seq",
        not_null={"id", "user_id", "role", "content", "created_at"},
        defaults={"extraction_status": "pending", "attempts": 0},
    )
    db["turns"].create_index(["id"], unique=True)
    db["turns"].create_index(["user_id", "session_id", "seq"])
    db["turns"].create_index(["extraction_status"])

    db["history"].create(
        {
            "seq": int,
            "id": str,
            "memory_id": str,
            "user_id": str,
            "event": str,
            "old_text": str,
            "new_text": str,
            "reason": str,
            "actor": str,
            "created_at": float,
            "metadata": str,
        },
        pk="seq",
        not_null={"id", "memory_id", "user_id", "event", "created_at"},
    )
    db["history"].create_index(["user_id", "memory_id"])

    db["feedback"].create(
        {
            "seq": int,
            "id": str,
            "user_id": str,
            "response_id": str,
            "memory_ids": str,
            "value": int,
            "comment": str,
            "created_at": float,
        },
        pk="seq",
        not_null={"id", "user_id", "value", "created_at"},
    )
    db["feedback"].create_index(["user_id"])

    # Transactional outbox: vector-index operations written in the same transaction as the rows,
    # applied to the vector index afterwards. A crash between the two is repaired on the next open.
    db["vector_outbox"].create(
        {"seq": int, "op": str, "user_key": str, "memory_id": str}, pk="seq", not_null={"op", "user_key"}
    )
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["meta"].insert_all([{"key": "vector_epoch", "value": "0"}])


@migration
def m002_vector_quarantine(db: sqlite_utils.Database) -> None:
    """Vector writes the index refused, set aside so they never block other users (see MemoryStore.reconcile)."""
    db["vector_quarantine"].create(
        {"seq": int, "op": str, "user_key": str, "memory_id": str, "error": str, "created_at": float},
        pk="seq",
        not_null={"op", "user_key"},
    )
    db["vector_quarantine"].create_index(["user_key"])


@migration
def m003_episodes(db: sqlite_utils.Database) -> None:
    """Raw turns become the episodic memory layer: searchable by keyword (FTS5) and by vector, in the user's scope.

    ``user_key`` scopes the keyword index as it does for memories; ``embedding`` is the turn's vector (the source
    of truth for the vector index's episode collection); ``outdated_by`` names the note that superseded a fact
    this turn stated, so recall can say the turn is no longer current.
    """
    from memory_store.validation import user_key

    turns = db["turns"]
    turns.add_column("user_key", str)
    turns.add_column("embedding", bytes)
    turns.add_column("embedding_model", str)
    turns.add_column("outdated_by", str)
    for (user_id,) in db.execute("SELECT DISTINCT user_id FROM turns").fetchall():
        db.execute("UPDATE turns SET user_key = ? WHERE user_id = ?", [user_key(user_id), user_id])
    turns.create_index(["user_key"])
    turns.enable_fts(["content", "user_key"], tokenize="porter", create_triggers=True)


@migration
def m004_forgetting(db: sqlite_utils.Database) -> None:
    """What each user asked to forget, kept without its text: hashed-token fingerprints (memory_store.forgetting)
    that extraction, rebuilds and recall consult, so a forgotten fact is never re-derived from what was said
    before. ``before_seq`` is the last turn position at the time: later turns are new statements. The key that
    hashes the tokens is random per store (``meta.forget_key``)."""
    import secrets

    db["forgotten"].create(
        {
            "seq": int,
            "id": str,
            "user_id": str,
            "memory_id": str,
            "kind": str,
            "fingerprint": str,
            "text_hash": str,
            "before_seq": int,
            "reason": str,
            "actor": str,
            "created_at": float,
        },
        pk="seq",
        not_null={"id", "user_id", "kind", "fingerprint", "before_seq", "created_at"},
    )
    db["forgotten"].create_index(["user_id"])
    db["meta"].insert({"key": "forget_key", "value": secrets.token_hex(32)}, replace=True)


@migration
def m005_keyword_index_follows_its_columns(db: sqlite_utils.Database) -> None:
    """The keyword index is rewritten only when a row's indexed columns change.

    sqlite-utils' update triggers fire on any UPDATE: each recall count a chat turn bumps, each confirmation and
    each turn's extraction status deleted the row's text from FTS5 and indexed it again. That is work on the
    writer's path and churn in the index's segments, for nothing. The new triggers name their columns.
    """
    for table, text in (("memories", "text"), ("turns", "content")):
        db.execute(f'DROP TRIGGER IF EXISTS "{table}_au"')
        db.execute(
            f'CREATE TRIGGER "{table}_au" AFTER UPDATE OF "{text}", "user_key" ON "{table}" BEGIN\n'
            f'  INSERT INTO "{table}_fts" ("{table}_fts", rowid, "{text}", "user_key") '
            f'VALUES(\'delete\', old.rowid, old."{text}", old."user_key");\n'
            f'  INSERT INTO "{table}_fts" (rowid, "{text}", "user_key") '
            f'VALUES (new.rowid, new."{text}", new."user_key");\n'
            "END"
        )


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations in order; returns the names applied. The caller holds a write lock."""
    if "_migrations" not in db.table_names():
        db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        fn(db)
        db["_migrations"].insert({"name": name, "applied_at": time.time()})
        applied.append(name)
    return applied
