"""Named, ordered schema migrations of the Postgres engine, each applied once and recorded in `mark_migrations`.

Every table carries ``user_key`` (a hash of the user id) and leads its primary key with it, so the schema can be
sharded by user (Citus: ``SELECT create_distributed_table(t, 'user_key')`` for each `USER_TABLES` table and
``create_reference_table('mark_meta')``; see the README). Vectors are a pgvector column of their row; keywords
a generated tsvector with a GIN index. The vector column gets its dimension and its HNSW index (cosine) when the
first vector is written (`ensure_vector_dim`): the dimension is the embedding model's, unknown before.

The HNSW index holds only the rows of users with more than `LARGE_USER_ROWS` vectors (``ann``, a partial index):
a smaller user is searched exactly through the user key, so indexing their rows would only slow every write (an
HNSW insert took ~2.2 ms of the ~2.5 ms a memory's row cost). A user enters `mark_indexed_users` when the engine
finds them past the limit; from then on their new rows are indexed as they are written. The exact scan of a
smaller user reads a btree of (user_key) carrying each row's id and vector (`create_exact_index`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import psycopg

Migration = Callable[[psycopg.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []
#: Tables holding user data, each with ``user_key`` first in its primary key (the shard key).
USER_TABLES = ("mark_memories", "mark_turns", "mark_history", "mark_feedback", "mark_forgotten")
#: Tables with a vector column (and its HNSW index).
VECTOR_TABLES = ("mark_memories", "mark_turns")
#: A user with more vectors than this in a table has them in its HNSW index; fewer are scanned exactly.
LARGE_USER_ROWS = 5_000
#: The widest vector the exact-scan index holds: a btree entry must fit in a third of a page (2,704 bytes), and a
#: vector takes 4 bytes a dimension (the 384 of the default model: 1,544 bytes). Wider vectors go without it.
EXACT_INDEX_MAX_DIM = 600
#: Serialises migrations and the vector-dimension step across processes (any fixed 64-bit number).
MIGRATION_LOCK = 0x6D61726B  # "mark"


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(conn: psycopg.Connection) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(
        """
        CREATE TABLE mark_memories (
            user_key text NOT NULL,
            id text NOT NULL,
            seq bigserial,
            user_id text NOT NULL,
            agent_id text,
            session_id text,
            kind text NOT NULL,
            text text NOT NULL,
            status text NOT NULL DEFAULT 'active',
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            last_confirmed_at timestamptz,
            confirm_count integer NOT NULL DEFAULT 0,
            last_recalled_at timestamptz,
            recall_count integer NOT NULL DEFAULT 0,
            trust double precision NOT NULL,
            valid_from timestamptz NOT NULL,
            valid_until timestamptz,
            superseded_by text,
            source jsonb NOT NULL DEFAULT '{}',
            metadata jsonb NOT NULL DEFAULT '{}',
            embedding_model text,
            embedding vector,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
            PRIMARY KEY (user_key, id)
        )
        """
    )
    conn.execute("CREATE INDEX mark_memories_scope ON mark_memories (user_key, status, kind)")
    conn.execute("CREATE INDEX mark_memories_created ON mark_memories (user_key, created_at)")
    conn.execute("CREATE INDEX mark_memories_id ON mark_memories (id)")  # import: which ids exist (admin)
    conn.execute("CREATE INDEX mark_memories_tsv ON mark_memories USING gin (tsv)")

    conn.execute(
        """
        CREATE TABLE mark_turns (
            user_key text NOT NULL,
            id text NOT NULL,
            seq bigserial,
            user_id text NOT NULL,
            agent_id text,
            session_id text,
            role text NOT NULL,
            content text NOT NULL,
            created_at timestamptz NOT NULL,
            extraction_status text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            metadata jsonb NOT NULL DEFAULT '{}',
            outdated_by text,
            embedding_model text,
            embedding vector,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            PRIMARY KEY (user_key, id)
        )
        """
    )
    conn.execute("CREATE INDEX mark_turns_session ON mark_turns (user_key, session_id, seq)")
    conn.execute("CREATE INDEX mark_turns_order ON mark_turns (user_key, seq)")
    conn.execute("CREATE INDEX mark_turns_id ON mark_turns (id)")  # the extraction queue updates turns by id
    conn.execute(
        "CREATE INDEX mark_turns_queue ON mark_turns (extraction_status) "
        "WHERE extraction_status IN ('pending', 'failed')"
    )
    conn.execute("CREATE INDEX mark_turns_tsv ON mark_turns USING gin (tsv)")

    conn.execute(
        """
        CREATE TABLE mark_history (
            user_key text NOT NULL,
            id text NOT NULL,
            seq bigserial,
            memory_id text NOT NULL,
            user_id text NOT NULL,
            event text NOT NULL,
            old_text text,
            new_text text,
            reason text,
            actor text,
            created_at timestamptz NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}',
            PRIMARY KEY (user_key, id)
        )
        """
    )
    conn.execute("CREATE INDEX mark_history_order ON mark_history (user_key, seq)")
    conn.execute("CREATE INDEX mark_history_memory ON mark_history (user_key, memory_id, seq)")

    conn.execute(
        """
        CREATE TABLE mark_feedback (
            user_key text NOT NULL,
            id text NOT NULL,
            seq bigserial,
            user_id text NOT NULL,
            response_id text,
            memory_ids jsonb NOT NULL DEFAULT '[]',
            value integer NOT NULL,
            comment text,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (user_key, id)
        )
        """
    )
    conn.execute("CREATE INDEX mark_feedback_order ON mark_feedback (user_key, seq)")

    conn.execute(
        """
        CREATE TABLE mark_forgotten (
            user_key text NOT NULL,
            id text NOT NULL,
            seq bigserial,
            user_id text NOT NULL,
            memory_id text,
            kind text NOT NULL,
            fingerprint text NOT NULL,
            text_hash text,
            before_seq bigint NOT NULL,
            reason text,
            actor text,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (user_key, id)
        )
        """
    )
    conn.execute("CREATE INDEX mark_forgotten_order ON mark_forgotten (user_key, seq)")

    conn.execute("CREATE TABLE mark_meta (key text PRIMARY KEY, value text NOT NULL)")
    # The key that hashes forgotten facts' tokens (memory_store.forgetting): random per store.
    conn.execute("INSERT INTO mark_meta (key, value) VALUES ('forget_key', %s)", [secrets.token_hex(32)])


@migration
def m002_vector_index_for_large_users(conn: psycopg.Connection) -> None:
    """The HNSW index becomes partial (``WHERE ann``): only the rows of users past `LARGE_USER_ROWS` vectors."""
    conn.execute(
        "CREATE TABLE mark_indexed_users (user_key text NOT NULL, tbl text NOT NULL, PRIMARY KEY (user_key, tbl))"
    )
    sized = vector_dim(conn) is not None
    for table in VECTOR_TABLES:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN ann boolean NOT NULL DEFAULT false")
        # The rows a large user's search scans exactly besides the index: written before the user was indexed.
        conn.execute(f"CREATE INDEX {table}_unindexed ON {table} (user_key) WHERE NOT ann AND embedding IS NOT NULL")
        if not sized:
            continue  # `ensure_vector_dim` creates the partial index with the first vector
        conn.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
        conn.execute(
            f"INSERT INTO mark_indexed_users (user_key, tbl) SELECT user_key, %s FROM {table} "
            "WHERE embedding IS NOT NULL GROUP BY user_key HAVING count(*) > %s",
            [table, LARGE_USER_ROWS],
        )
        conn.execute(
            f"UPDATE {table} t SET ann = true FROM mark_indexed_users i "
            "WHERE i.tbl = %s AND t.user_key = i.user_key AND t.embedding IS NOT NULL",
            [table],
        )
        conn.execute(hnsw_index_sql(table))


@migration
def m003_exact_scan_index(conn: psycopg.Connection) -> None:
    """A small user's vectors scanned from an index of their own: see `create_exact_index`."""
    dim = vector_dim(conn)
    if dim is not None:
        for table in VECTOR_TABLES:
            create_exact_index(conn, table, dim)


def hnsw_index_sql(table: str) -> str:
    return f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops) WHERE ann"


def create_exact_index(conn: psycopg.Connection, table: str, dim: int) -> None:
    """The index an exact scan of one user's vectors reads instead of their rows: (user_key) carrying the id and
    the vector. A user's rows are spread over as many pages as they have rows (users write in turn); their index
    entries sit together, so the scan reads ~5x fewer pages and the dense part of a search takes half the time
    (0.8 -> 0.4 ms at 1,000 rows). Postgres reads it alone once vacuum has marked the pages all-visible (autovacuum
    does), and checks the rows of pages written since. Not created for vectors too wide for a btree entry.

    IF NOT EXISTS: on a large database, build it first with CREATE INDEX CONCURRENTLY (the README shows how), and
    the migration, which would hold off writes while it builds, finds it there."""
    if dim <= EXACT_INDEX_MAX_DIM:
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_exact ON {table} (user_key) INCLUDE (id, embedding) "
            "WHERE embedding IS NOT NULL"
        )


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations in order, in one transaction under an advisory lock (two processes opening a
    new database do not race); returns the names applied."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS mark_migrations (name text PRIMARY KEY, applied_at timestamptz)")
        done = {r[0] for r in conn.execute("SELECT name FROM mark_migrations").fetchall()}
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            fn(conn)
            conn.execute("INSERT INTO mark_migrations (name, applied_at) VALUES (%s, now())", [name])
            applied.append(name)
    return applied


def vector_dim(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT value FROM mark_meta WHERE key = 'vector_dim'").fetchone()
    return None if row is None else int(row[0] if isinstance(row, tuple) else row["value"])


def ensure_vector_dim(conn: psycopg.Connection, dim: int) -> int:
    """Give the vector columns their dimension and an HNSW cosine index (partial: large users' rows), once per
    database (the first vector written decides), inside the caller's transaction. Returns the database's dimension,
    which may differ from ``dim``: the caller refuses then."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    have = vector_dim(conn)
    if have is not None:
        return have
    for table in VECTOR_TABLES:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({int(dim)})")
        conn.execute(hnsw_index_sql(table))
        create_exact_index(conn, table, dim)
    conn.execute("INSERT INTO mark_meta (key, value) VALUES ('vector_dim', %s)", [str(dim)])
    conn.execute("INSERT INTO mark_migrations (name, applied_at) VALUES (%s, now())", [f"m100_vector_dim_{int(dim)}"])
    return dim
