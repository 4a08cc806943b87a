"""What the conformance tests look at below the API, on either engine: row counts, keyword-index rows, where a
text is still stored, and a simulated loss of vectors."""

from __future__ import annotations

import re

from memory_store import MemoryStore

#: Ids, keys, hashes and written-out times: where a short token of digits ("8841") can occur by chance.
NOT_TEXT = r"[0-9a-f]{16,}|[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.+-]+"


def table(store: MemoryStore, name: str) -> str:
    """The engine's name of a table (Postgres prefixes them: they may share a database with the application)."""
    return f"mark_{name}" if store.engine == "postgres" else name


def row_counts(store: MemoryStore, tables: tuple[str, ...] = ("memories", "turns", "history")) -> dict[str, int]:
    """What is stored, per table: nothing may change when an import is refused."""
    return {t: store.db.query(f"SELECT count(*) AS n FROM {table(store, t)}")[0]["n"] for t in tables}


def turns_matching(store: MemoryStore, word: str) -> int:
    """Rows of the turns' keyword index that match a word (any user)."""
    if store.engine == "postgres":
        sql = "SELECT count(*) AS n FROM mark_turns WHERE tsv @@ plainto_tsquery('english', %s)"
    else:
        sql, word = "SELECT count(*) AS n FROM turns_fts WHERE turns_fts MATCH ?", f'"{word}"'
    return store.db.query(sql, [word])[0]["n"]


def stored_anywhere(store: MemoryStore, token: bytes) -> list[str]:
    """Where the store still holds ``token``: the files of its home (SQLite, chroma), or the tables with a row
    holding it (Postgres: live rows; the server's files are its own, see the README on purge)."""
    # A token that is itself an id is looked for as it is; any other is looked for outside ids, hashes and times.
    strip = not re.fullmatch(NOT_TEXT, token.decode())
    if store.engine != "postgres":
        files = [p for p in store.home.rglob("*") if p.is_file()]
        pattern = re.compile(NOT_TEXT.encode())
        return [
            str(p.relative_to(store.home))
            for p in files
            if token in (pattern.sub(b"#", p.read_bytes()) if strip else p.read_bytes())
        ]
    import psycopg

    found = []
    with psycopg.connect(store.settings.store_url) as conn:
        for t in ("memories", "turns", "history", "feedback", "forgotten", "meta"):
            # Every column but the vector (whose digits could hold any number).
            text = "(to_jsonb(r) - 'embedding')::text"
            if strip:
                text = f"regexp_replace({text}, %s, '#', 'g')"
            sql = f"SELECT count(*) FROM mark_{t} r WHERE strpos({text}, %s) > 0"
            if conn.execute(sql, [*([NOT_TEXT] if strip else []), token.decode()]).fetchone()[0]:
                found.append(f"mark_{t}")
    return found


def groups_in_chroma(monkeypatch) -> None:
    """Every vector group is written to chroma (a small one otherwise stays in SQLite, where nothing can lose it):
    for the tests of a lost or refused index."""
    from memory_store.vectors import chroma

    monkeypatch.setattr(chroma, "HOT_GROUP_LIMIT", 0)


def lose_note_vectors(store: MemoryStore) -> None:
    """The notes' vectors are lost: the embedded engine's index is emptied; in Postgres, where a vector is a column
    of its row, the rows lose their vectors."""
    if store.engine == "postgres":
        store.db.query("UPDATE mark_memories SET embedding = NULL")
    else:
        store.index.reset()
