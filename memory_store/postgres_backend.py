"""The Postgres engine: rows, pgvector vectors (HNSW, cosine) and full-text keywords (tsvector + GIN) in one
database, for chatbot backends that run on more than one machine. Chosen by ``MARK_STORE_URL=postgresql://...``.

psycopg 3 with a connection pool: every app server (process) opens its own pool on the same database, and
Postgres serialises their writes; there is no file lock, outbox or second index to keep in step (a vector is a
column of its row, written in the same transaction). Every query names the user key (the shard key of every user
table, see memory_store.pg_migrations) except the admin ones (users, export of all users, check, rebuild) and
`set_turns_status`, whose public API takes turn ids only.

Purge deletes every row of the user and VACUUMs the tables, so the dead rows' space is reclaimed for reuse; the
bytes stay in the database files until overwritten, and WAL segments, replicas and backups keep them until they
are recycled or expire (see the README).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from memory_store import pg_migrations
from memory_store import postgres_rows as pgrows
from memory_store.backend import (
    Candidate,
    HybridRead,
    MemoryFilter,
    VectorState,
    hybrid_candidates_in_three_reads,
)
from memory_store.errors import Conflict, StoreError
from memory_store.ids import like_escape
from memory_store.keywords import query_words
from memory_store.models import CheckReport, Feedback, HistoryEvent, Memory, Turn
from memory_store.validation import is_episode_key, user_key, user_key_of

log = logging.getLogger(__name__)

MEMORY_COLUMNS, TURN_COLUMNS = pgrows.MEMORY_COLUMNS, pgrows.TURN_COLUMNS
#: pgvector's HNSW search keeps this many candidates at most (hnsw.ef_search's ceiling).
MAX_EF_SEARCH = 1000
POOL_SIZE = 8
#: A user with at most this many vectors is searched exactly (a scan of their rows through the user key index);
#: past it their rows enter the HNSW index (`IndexUpkeep`), which holds no smaller user's rows.
EXACT_ROWS = pg_migrations.LARGE_USER_ROWS
#: Rows a promotion moves into the HNSW index per transaction (each HNSW insert takes ~2 ms: short row locks).
PROMOTE_CHUNK = 500
#: Rows written to a vector table by this process after which it is vacuumed in the background (`IndexUpkeep`).
VACUUM_AFTER_ROWS = 2_000
#: How long a user's vector count is trusted to choose between the exact scan and the HNSW index (seconds).
SIZE_TTL = 30.0


class PgTx:
    """One Postgres transaction on one pooled connection (READ COMMITTED; rows read for an update are locked)."""

    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection) -> None:
        self.backend = backend
        self.conn = conn
        self.rows_written: Counter[str] = Counter()  # vector table -> rows inserted (`IndexUpkeep.wrote`)

    def _x(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(sql, params)

    # -- memories ------------------------------------------------------------------------------------------

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None:
        row = self._x(
            f"SELECT {MEMORY_COLUMNS} FROM mark_memories WHERE user_key = %s AND user_id = %s AND id = %s FOR UPDATE",
            [user_key(user_id), user_id, memory_id],
        ).fetchone()
        return pgrows.decode.memory(row) if row else None

    def _copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Rows written with a binary COPY: a vector goes as its float32 bytes (as text, formatting its 384
        numbers took ~0.4 ms per row in Python, more than the rest of the write)."""
        types = self.backend.column_types(self.conn, table)
        with self.conn.cursor() as cur, cur.copy(pgrows.copy_sql(table, columns)) as copy:
            copy.set_types([types[c] for c in columns])
            for row in rows:
                copy.write_row(row)

    def indexed_keys(self, table: str, keys: Iterable[str]) -> set[str]:
        """The user keys among ``keys`` whose new rows of ``table`` enter the HNSW index as written. Read in the
        write's transaction: rows of a user whose move into the index commits after this read are scored exactly
        by the next search and moved by it, like any straggler."""
        rows = self._x(
            "SELECT user_key FROM mark_indexed_users WHERE tbl = %s AND user_key = ANY(%s)", [table, sorted(set(keys))]
        ).fetchall()
        return {r["user_key"] for r in rows}

    def insert_memories(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> None:
        if memories:
            self.backend.ensure_dim(self.conn, vectors)
            indexed = self.indexed_keys("mark_memories", (user_key(m.user_id) for m in memories))
            self._copy(
                "mark_memories",
                pgrows.insert_columns("mark_memories", ["embedding", "ann"]),
                (
                    pgrows.values("mark_memories", m, pgrows.f32(v), user_key(m.user_id) in indexed)
                    for m, v in zip(memories, vectors, strict=True)
                ),
            )
            self.rows_written["mark_memories"] += len(memories)

    def update_memory(self, user_id: str, memory_id: str, changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - pgrows.UPDATABLE
        if unknown:
            raise ValueError(f"not an updatable memory column: {sorted(unknown)}")
        if "embedding" in changes:
            self.backend.ensure_dim(self.conn, [changes["embedding"]])
        sets = ", ".join(f"{k} = %s" for k in changes)
        self._x(
            f"UPDATE mark_memories SET {sets} WHERE user_key = %s AND user_id = %s AND id = %s",
            [*(pgrows.encode(k, v) for k, v in changes.items()), user_key(user_id), user_id, memory_id],
        )

    def confirm_memory(self, user_id: str, memory_id: str, trust: float, now: datetime) -> None:
        self._x(
            "UPDATE mark_memories SET confirm_count = confirm_count + 1, last_confirmed_at = %s, trust = %s, "
            "updated_at = %s WHERE user_key = %s AND user_id = %s AND id = %s",
            [now, trust, now, user_key(user_id), user_id, memory_id],
        )

    def mark_recalled(self, user_id: str, memory_ids: Sequence[str], now: datetime) -> None:
        self._x(
            "UPDATE mark_memories SET recall_count = recall_count + 1, last_recalled_at = %s "
            "WHERE user_key = %s AND user_id = %s AND id = ANY(%s)",
            [now, user_key(user_id), user_id, list(memory_ids)],
        )

    def delete_memory(self, user_id: str, memory_id: str) -> None:
        self._x(
            "DELETE FROM mark_memories WHERE user_key = %s AND user_id = %s AND id = %s",
            [user_key(user_id), user_id, memory_id],
        )

    def set_memory_embedding(self, key: str, memory_id: str, vector: np.ndarray, model: str) -> None:
        self.backend.ensure_dim(self.conn, [vector])
        self._x(
            "UPDATE mark_memories SET embedding = %s, embedding_model = %s WHERE user_key = %s AND id = %s",
            [pgrows.f32(vector), model, key, memory_id],
        )

    # -- history -------------------------------------------------------------------------------------------

    def add_history(self, events: Iterable[HistoryEvent]) -> None:
        events = iter(events)
        first = next(events, None)
        if first is not None:
            self._copy(
                "mark_history",
                pgrows.insert_columns("mark_history"),
                (pgrows.values("mark_history", e) for e in itertools.chain([first], events)),
            )

    def delete_history(self, events: Sequence[HistoryEvent]) -> None:
        for key, ids in _by_key((e.user_id, e.id) for e in events).items():
            self._x("DELETE FROM mark_history WHERE user_key = %s AND id = ANY(%s)", [key, ids])

    def rewrite_history(self, user_id: str, event_id: str, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - pgrows.HISTORY_UPDATABLE
        if unknown:
            raise ValueError(f"not an updatable history column: {sorted(unknown)}")
        sets = ", ".join(f"{k} = %s" for k in fields)
        self._x(
            f"UPDATE mark_history SET {sets} WHERE user_key = %s AND user_id = %s AND id = %s",
            [*(pgrows.encode(k, v) for k, v in fields.items()), user_key(user_id), user_id, event_id],
        )

    # -- turns -----------------------------------------------------------------------------------------------

    def add_turns(self, turns: Sequence[Turn], vectors: np.ndarray | None, model: str | None) -> None:
        if not turns:
            return
        if vectors is not None:
            self.backend.ensure_dim(self.conn, list(vectors))
        indexed = self.indexed_keys("mark_turns", (user_key(t.user_id) for t in turns))
        self._copy(
            "mark_turns",
            pgrows.insert_columns("mark_turns", ["embedding", "embedding_model", "ann"]),
            (
                pgrows.values(
                    "mark_turns",
                    t,
                    *((None, None) if vectors is None else (pgrows.f32(vectors[n]), model)),
                    user_key(t.user_id) in indexed,
                )
                for n, t in enumerate(turns)
            ),
        )
        self.rows_written["mark_turns"] += len(turns)

    def delete_turns(self, turns: Sequence[Turn]) -> None:
        for key, ids in _by_key((t.user_id, t.id) for t in turns).items():
            self._x("DELETE FROM mark_turns WHERE user_key = %s AND id = ANY(%s)", [key, ids])

    def mark_turns_outdated(self, user_id: str, turn_ids: Sequence[str], note_id: str) -> None:
        if turn_ids:
            self._x(
                "UPDATE mark_turns SET outdated_by = %s WHERE user_key = %s AND user_id = %s AND id = ANY(%s)",
                [note_id, user_key(user_id), user_id, list(turn_ids)],
            )

    def set_turns_status(self, turn_ids: Sequence[str], status: str, error: str | None, bump: bool) -> None:
        if turn_ids:
            self._x(
                "UPDATE mark_turns SET extraction_status = %s, last_error = %s, attempts = attempts + %s "
                "WHERE id = ANY(%s)",
                [status, error, 1 if bump else 0, list(turn_ids)],
            )

    def rewrite_turn(
        self, user_id: str, turn_id: str, content: str, last_error: str | None, vector: np.ndarray
    ) -> None:
        self._x(
            "UPDATE mark_turns SET content = %s, last_error = %s, embedding = %s "
            "WHERE user_key = %s AND user_id = %s AND id = %s",
            [content, last_error, pgrows.f32(vector), user_key(user_id), user_id, turn_id],
        )

    def set_turn_embedding(self, key: str, turn_id: str, vector: np.ndarray, model: str) -> None:
        self.backend.ensure_dim(self.conn, [vector])
        self._x(
            "UPDATE mark_turns SET embedding = %s, embedding_model = %s WHERE user_key = %s AND id = %s",
            [pgrows.f32(vector), model, key, turn_id],
        )

    # -- feedback and forgetting ---------------------------------------------------------------------------

    def add_feedback(self, fb: Feedback) -> None:
        self._x(pgrows.insert_sql("mark_feedback"), pgrows.values("mark_feedback", fb))

    def delete_feedback(self, fb: Feedback) -> None:
        self._x("DELETE FROM mark_feedback WHERE user_key = %s AND id = %s", [user_key(fb.user_id), fb.id])

    def redact_feedback(self, user_id: str, feedback_id: str, comment: str) -> None:
        self._x(
            "UPDATE mark_feedback SET comment = %s WHERE user_key = %s AND user_id = %s AND id = %s",
            [comment, user_key(user_id), user_id, feedback_id],
        )

    def add_forgotten(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            with self.conn.cursor() as cur:
                cur.executemany(
                    pgrows.insert_sql("mark_forgotten"), [pgrows.values("mark_forgotten", r) for r in records]
                )

    def purge_user(self, user_id: str) -> dict[str, int]:
        key = user_key(user_id)
        counts = {}
        for table in pg_migrations.USER_TABLES:
            cur = self._x(f"DELETE FROM {table} WHERE user_key = %s AND user_id = %s", [key, user_id])
            counts[table.removeprefix("mark_")] = cur.rowcount
        self._x("DELETE FROM mark_indexed_users WHERE user_key = %s", [key])
        return counts


def _by_key(pairs: Iterator[tuple[str, str]] | Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for uid, rid in pairs:
        out.setdefault(user_key(uid), []).append(rid)
    return out


class IndexUpkeep:
    """Index work kept off the callers, on one background thread.

    - **Promotion**: moves the rows of users who outgrew the exact scan into the HNSW index. The search that finds
      a user past `EXACT_ROWS` answers exactly meanwhile, and a promotion of 5,000 rows (~10 s of HNSW inserts)
      never lands on a caller. The user is recorded first, so rows written from then on enter the index as they
      are written; rows of a write that raced the promotion stay outside it, are scanned exactly by the user's
      searches (`PostgresBackend.nearest`) and are moved by the next promotion.
    - **Vacuum after bulk writes** (`VACUUM_AFTER_ROWS`): marks the new rows' pages all-visible, so an exact scan
      reads the user's vectors from the exact-scan index alone (`pg_migrations.create_exact_index`) instead of
      visiting each row (and gives the planner the count of such pages). Autovacuum does the same, but only
      after its nap (a minute by default). Insert-only pages cost little to vacuum; ANALYZE, which samples the
      whole table, is left to autovacuum. SKIP_LOCKED: when another process is vacuuming the table, that is
      enough.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self._queue: dict[tuple[str, str, str], None] = {}  # (job, table, user key)
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._written: Counter[str] = Counter()  # table -> rows committed since its last vacuum was asked for

    def request(self, table: str, key: str) -> None:
        """Move a large user's rows into the HNSW index."""
        self._put(("promote", table, key))

    def wrote(self, table: str, rows: int) -> None:
        """Rows this process committed to a table: vacuum it once they add up to `VACUUM_AFTER_ROWS`."""
        with self._cond:
            self._written[table] += rows
            if self._written[table] < VACUUM_AFTER_ROWS:
                return
            del self._written[table]
        self._put(("vacuum", table, ""))

    def _put(self, job: tuple[str, str, str]) -> None:
        with self._cond:
            if self._closed or job in self._queue:
                return
            self._queue[job] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mark-index-upkeep", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self) -> None:
        """Until every requested job is done."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()

    def close(self) -> None:
        """Stop after the chunk in progress (the rest is moved by a later search's promotion)."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                job = next(iter(self._queue))
                self._busy = True
            kind, table, key = job
            try:
                if kind == "promote":
                    self._promote(table, key)
                else:
                    self._vacuum(table)
            except (psycopg.Error, StoreError) as exc:  # a promotion: the next search of the user asks again
                log.warning("background index work (%s of %s) failed: %s", kind, table, _one_line(exc))
            with self._cond:
                self._queue.pop(job, None)
                self._busy = False
                self._cond.notify_all()

    def _vacuum(self, table: str) -> None:
        self.backend.query(f"VACUUM (SKIP_LOCKED) {table}")  # pooled connections are autocommit

    def _promote(self, table: str, key: str) -> None:
        # Only while the user has rows: a purge between the request and now leaves no mark of the user behind.
        self.backend.query(
            f"INSERT INTO mark_indexed_users (user_key, tbl) SELECT %s, %s WHERE EXISTS (SELECT 1 FROM {table} "
            "WHERE user_key = %s) ON CONFLICT DO NOTHING",
            [key, table, key],
        )
        while not self._closed:
            moved = self.backend.query(
                f"UPDATE {table} SET ann = true WHERE user_key = %s AND id IN (SELECT id FROM {table} "
                "WHERE user_key = %s AND NOT ann AND embedding IS NOT NULL LIMIT %s) RETURNING 1 AS one",
                [key, key, PROMOTE_CHUNK],
            )
            if len(moved) < PROMOTE_CHUNK:
                return


class RowVectors:
    """The vector-index view of the rows' vectors (the `VectorIndex` reads), for tests and admin tools: writes
    go through the store, a row and its vector are one."""

    persistent = True

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    def query(self, user_key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.backend.nearest(user_key, vector, k)

    def count(self, user_key: str) -> int:
        return self.backend.vector_count(user_key)

    def ids(self, user_key: str) -> set[str]:
        table, scope = self.backend.vector_table(user_key)
        rows = self.backend.query(f"SELECT id FROM {table} WHERE user_key = %s AND embedding IS NOT NULL", [scope])
        return {r["id"] for r in rows}

    def user_keys(self) -> set[str]:
        rows = self.backend.query(
            "SELECT DISTINCT user_key FROM mark_memories WHERE embedding IS NOT NULL UNION "
            "SELECT DISTINCT 'e' || substr(user_key, 2) FROM mark_turns WHERE embedding IS NOT NULL"
        )
        return {r["user_key"] for r in rows}

    def _refuse(self, *args: object) -> None:
        raise StoreError("Postgres keeps each vector in its row: write through the store")

    upsert = delete = drop_user = _refuse

    def follows_rows(self, user_key: str) -> bool:
        return True  # every read is of the rows

    def refresh(self) -> None:
        pass

    def reset(self) -> None:
        self._refuse()

    def close(self) -> None:
        pass


class PostgresBackend:
    """Postgres + pgvector behind the `Backend` protocol (memory_store.backend)."""

    engine = "postgres"
    read_only = False

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.where = pgrows.describe(url)
        self._dim: int | None = None
        self._dim_tx: int | None = None
        self._ef: weakref.WeakKeyDictionary[psycopg.Connection, int] = weakref.WeakKeyDictionary()
        self._sizes: dict[str, tuple[int, float]] = {}  # vector key -> (count, when counted)
        self._column_types: dict[str, dict[str, int]] = {}  # table -> column -> type oid (binary COPY)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                pg_migrations.apply_migrations(conn)
                self._dim = pg_migrations.vector_dim(conn)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot reach {self.where}: {_one_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot prepare {self.where}: {_one_line(exc)}") from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            configure=self._configure,
            kwargs={"row_factory": dict_row, "autocommit": True},  # a read is one statement; writes BEGIN
            open=True,
            name="mark",
        )
        self.index = RowVectors(self)
        self.upkeep = IndexUpkeep(self)

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        register_vector(conn)
        conn.execute("SET TIME ZONE 'UTC'")
        # psycopg prepares a statement run 5 times, and Postgres then may switch it to a generic plan, one that
        # cannot see which user it scopes: the notes search's plan went from 8 to 16-19 ms that way. Every query
        # here is scoped by a user whose size matters to the plan, so each gets a plan for its own values.
        conn.execute("SET plan_cache_mode = force_custom_plan")

    def _ef_search(self, conn: psycopg.Connection, k: int) -> None:
        """Let the HNSW scan keep at least k candidates (pgvector's default is 40); set once per connection."""
        ef = min(MAX_EF_SEARCH, max(40, int(k)))
        if self._ef.get(conn) != ef:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            self._ef[conn] = ef

    # -- connections -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(_one_line(exc)) from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"{self.where}: {_one_line(exc)}") from exc

    def query(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False) -> list[dict[str, Any]]:
        with self._conn() as conn, conn.cursor(binary=binary) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def start(self, reconcile: Callable[[], CheckReport]) -> None:
        pass  # a row and its vector commit together: an unclean shutdown leaves nothing to reconcile

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgTx]:
        try:
            with self._conn() as conn, conn.transaction():
                tx = PgTx(self, conn)
                yield tx
        except BaseException:
            if self._dim_tx is not None:  # the vector columns were sized in the transaction that failed
                self._dim, self._dim_tx = None, None
            raise
        self._dim_tx = None
        for table, rows in tx.rows_written.items():
            self.upkeep.wrote(table, rows)

    def close(self) -> None:
        self.upkeep.close()
        self.pool.close()

    def column_types(self, conn: psycopg.Connection, table: str) -> dict[str, int]:
        """A table's column types (oids), read once: a binary COPY must name them."""
        if table not in self._column_types:
            rows = conn.execute(
                "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped",
                [table],
            ).fetchall()
            self._column_types[table] = {r["attname"]: r["atttypid"] for r in rows}
        return self._column_types[table]

    def ensure_dim(self, conn: psycopg.Connection, vectors: Sequence[np.ndarray | None]) -> None:
        """Before the first vector is written: size the vector columns and build their HNSW index, in the writing
        transaction (a rollback undoes it; a concurrent first writer waits, then finds it done)."""
        dims = {len(v) for v in vectors if v is not None}
        if not dims:
            return
        if self._dim is None:
            self._dim = pg_migrations.ensure_vector_dim(conn, min(dims))
            self._dim_tx = id(conn)
        if dims != {self._dim}:
            raise StoreError(
                f"this database holds {self._dim}-dimensional vectors; the embedding model makes {sorted(dims)[0]} "
                "(use the model the store was built with)"
            )

    def vector_table(self, key: str) -> tuple[str, str]:
        """(table, user key) of a vector key: a user's notes or episodes."""
        return ("mark_turns", user_key_of(key)) if is_episode_key(key) else ("mark_memories", key)

    # -- memories ----------------------------------------------------------------------------------------

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None:
        rows = self.query(
            f"SELECT {MEMORY_COLUMNS} FROM mark_memories WHERE user_key = %s AND user_id = %s AND id = %s",
            [user_key(user_id), user_id, memory_id],
        )
        return pgrows.decode.memory(rows[0]) if rows else None

    def resolve_short_id(self, short: str, user_id: str) -> list[str]:
        """As SQLite's: ILIKE, because SQLite's LIKE ignores ASCII case and Postgres's does not."""
        pattern = like_escape(short)
        rows = self.query(
            "SELECT id FROM mark_memories WHERE user_key = %s AND user_id = %s AND (id ILIKE %s OR id ILIKE %s) "
            "LIMIT 3",
            [user_key(user_id), user_id, "%" + pattern, pattern + "%"],
        )
        return [r["id"] for r in rows]

    def candidates_by_ids(
        self, ids: Sequence[str], user_id: str, query: np.ndarray | None = None
    ) -> dict[str, tuple[Candidate, float | None]]:
        if not ids:
            return {}
        sim, params = ("NULL", []) if query is None else ("1 - (embedding <=> %s)", [pgrows.f32(query)])
        rows = self.query(
            f"SELECT {pgrows.CANDIDATE_COLUMNS}, {sim} AS sim FROM mark_memories "
            "WHERE user_key = %s AND user_id = %s AND id = ANY(%s)",
            [*params, user_key(user_id), user_id, list(ids)],
            binary=True,
        )
        decode = pgrows.candidate_decode
        return {r["id"]: (decode.candidate(r), None if r["sim"] is None else float(r["sim"])) for r in rows}

    def filtered_vectors(self, user_id: str, flt: MemoryFilter) -> list[tuple[str, np.ndarray | None]]:
        where, params = pgrows.filter_sql(flt)
        rows = self.query(
            f"SELECT id, embedding FROM mark_memories WHERE user_key = %s AND user_id = %s AND {where}",
            [user_key(user_id), user_id, *params],
            binary=True,
        )
        return [(r["id"], pgrows.vec(r["embedding"])) for r in rows]

    def count_memories(self, user_id: str, flt: MemoryFilter) -> int:
        where, params = pgrows.filter_sql(flt)
        return self.query(
            f"SELECT count(*) AS n FROM mark_memories WHERE user_key = %s AND user_id = %s AND {where}",
            [user_key(user_id), user_id, *params],
        )[0]["n"]

    def list_memories(self, user_id: str, flt: MemoryFilter, limit: int, offset: int) -> tuple[list[Memory], int]:
        where, params = pgrows.filter_sql(flt)
        rows = self.query(
            f"SELECT {MEMORY_COLUMNS}, count(*) OVER () AS total FROM mark_memories "
            f"WHERE user_key = %s AND user_id = %s AND {where} ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
            [user_key(user_id), user_id, *params, limit, offset],
        )
        total = rows[0]["total"] if rows else (self.count_memories(user_id, flt) if offset else 0)
        return [pgrows.decode.memory(r) for r in rows], total

    def _keywords(self, table: str, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        words = query_words(text)
        if not words:
            return []
        rows = self.query(
            f"SELECT t.id, ts_rank(t.tsv, q.q) AS score FROM {table} t, (SELECT {pgrows.tsquery_sql(words)} AS q) q "
            "WHERE t.user_key = %s AND t.tsv @@ q.q ORDER BY score DESC, t.seq LIMIT %s",
            [*words, key, limit],
        )
        return [(r["id"], float(r["score"])) for r in rows]

    def keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        """Full-text search in the user's notes: (id, ts_rank) best first (higher = better)."""
        return self._keywords("mark_memories", key, text, limit)

    def nearest(self, key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The user's rows scored exactly when they are few (`EXACT_ROWS`; the count is remembered for a while),
        else their rows in the HNSW index through it, beside any of their rows outside it scored exactly (written
        while the user was being moved into the index). When the user's rows are a small part of the index, its
        candidates may hold fewer than k of them, and the user's rows are then scored exactly.

        Exact first for a small user: pgvector 0.6 filters after the index scan, so with many users the index's
        candidates rarely hold k of one user's rows and the index scan is a wasted round trip (and the index holds
        no small user's rows: `pg_migrations.LARGE_USER_ROWS`)."""
        table, scope = self.vector_table(key)
        q = pgrows.f32(vector)
        scoped = f"FROM {table} WHERE user_key = %s AND embedding IS NOT NULL"
        # The distance once per row, and only (id, distance) sorted: sorting whole rows (their vectors) took
        # twice as long. "+ 0" keeps the HNSW index out of an exact scan.
        exact = (
            f"SELECT id, 1 - d AS sim FROM (SELECT id, (embedding <=> %s) + 0 AS d {scoped} ORDER BY d LIMIT %s) s "
            "ORDER BY d"
        )
        both = (
            f"SELECT id, sim, indexed FROM ((SELECT id, 1 - (embedding <=> %s) AS sim, true AS indexed {scoped} "
            "AND ann ORDER BY embedding <=> %s LIMIT %s) UNION ALL (SELECT id, 1 - d AS sim, false AS indexed FROM "
            f"(SELECT id, (embedding <=> %s) + 0 AS d {scoped} AND NOT ann ORDER BY d LIMIT %s) s)) u "
            "ORDER BY sim DESC LIMIT %s"
        )
        both_params = [q, scope, q, k, q, scope, k, k]
        known = self._sizes.get(key)
        fresh = known is not None and time.monotonic() - known[1] < SIZE_TTL
        with self._conn() as conn:
            if fresh and known[0] <= EXACT_ROWS:
                rows = conn.execute(exact, [q, scope, k], prepare=True).fetchall()
                return [(r["id"], float(r["sim"])) for r in rows]
            self._ef_search(conn, k)
            if fresh:  # a large user: no count (it reads all their rows: 17 ms at 12,000)
                total = known[0]
                rows = conn.execute(both, both_params).fetchall()
                unindexed = any(not r["indexed"] for r in rows)
            else:
                found = conn.execute(
                    "SELECT c.total, c.unindexed, a.id, a.sim FROM (SELECT count(*) AS total, "
                    f"count(*) FILTER (WHERE NOT ann) AS unindexed {scoped}) c LEFT JOIN LATERAL ({both}) a ON true "
                    "ORDER BY a.sim DESC",
                    [scope, *both_params],
                ).fetchall()
                if len(self._sizes) > 100_000:
                    self._sizes.clear()
                total, unindexed = found[0]["total"], found[0]["unindexed"]
                self._sizes[key] = (total, time.monotonic())
                rows = [r for r in found if r["id"] is not None]
            if total > EXACT_ROWS and unindexed:
                self.upkeep.request(table, scope)
            if len(rows) < min(k, total):
                rows = conn.execute(exact, [q, scope, k]).fetchall()
        return [(r["id"], float(r["sim"])) for r in rows]

    def hybrid_candidates(self, user_id: str, vector: np.ndarray, k: int, text: str, limit: int) -> HybridRead:
        """Dense and keyword candidates of a user's notes with their rows and similarities, and whether the user
        forgot nothing, in one round trip when the user is known to be small (each round trip waits for a server
        process: on a busy machine that wait is most of a search); otherwise the three reads."""
        key = user_key(user_id)
        known = self._sizes.get(key)
        if known is None or known[0] > EXACT_ROWS or time.monotonic() - known[1] >= SIZE_TTL:
            return hybrid_candidates_in_three_reads(self, user_id, vector, k, text, limit)
        words = query_words(text)
        q = pgrows.f32(vector)
        # As in `nearest`: the distance once, only (id, distance) sorted; "+ 0" keeps the HNSW index out.
        ctes = [
            "d AS (SELECT id, (embedding <=> %s) + 0 AS dist FROM mark_memories "
            "WHERE user_key = %s AND embedding IS NOT NULL ORDER BY dist LIMIT %s)"
        ]
        params: list[Any] = [q, key, k]
        found = "SELECT id, dist, NULL::real AS r, NULL::bigint AS seq FROM d"
        if words:
            ctes.append(
                f"kw AS (SELECT t.id, ts_rank(t.tsv, q.q) AS r, t.seq FROM mark_memories t, "
                f"(SELECT {pgrows.tsquery_sql(words)} AS q) q WHERE t.user_key = %s AND t.tsv @@ q.q "
                "ORDER BY r DESC, t.seq LIMIT %s)"
            )
            params += [*words, key, limit]
            found = "SELECT coalesce(d.id, kw.id) AS id, d.dist, kw.r, kw.seq FROM d FULL JOIN kw ON kw.id = d.id"
        columns = ", ".join(f"m.{c.strip()}" for c in pgrows.CANDIDATE_COLUMNS.split(","))
        # The two lists joined first, then each row fetched once by its key: joining the lists to the rows (an
        # IN over their union) filtered every row against both lists, ~10% of the whole read. LATERAL ... LIMIT 1
        # (the key is unique; the LIMIT keeps the planner from flattening the subquery): a lookup by the primary
        # key per candidate whatever the statistics say. Without them, after a bulk load, a plain join read all
        # the user's rows once per candidate (16 ms).
        sql = (
            f"WITH {', '.join(ctes)} SELECT {columns}, 1 - (m.embedding <=> %s) AS sim, c.dist, c.r AS kw, "
            "c.seq AS kw_seq, NOT EXISTS (SELECT 1 FROM mark_forgotten f WHERE f.user_key = %s AND f.user_id = %s) "
            f"AS forgot_nothing FROM ({found}) c CROSS JOIN LATERAL (SELECT * FROM mark_memories m "
            "WHERE m.user_key = %s AND m.id = c.id AND m.user_id = %s LIMIT 1) m"
        )
        rows = self.query(sql, [*params, q, key, user_id, key, user_id], binary=True)
        dense = [r["id"] for r in sorted((r for r in rows if r["dist"] is not None), key=lambda r: r["dist"])]
        keyword = [
            r["id"] for r in sorted((r for r in rows if r["kw"] is not None), key=lambda r: (-r["kw"], r["kw_seq"]))
        ]
        decode = pgrows.candidate_decode
        out = {r["id"]: (decode.candidate(r), None if r["sim"] is None else float(r["sim"])) for r in rows}
        return HybridRead(dense, keyword, out, forgot_nothing=bool(rows) and rows[0]["forgot_nothing"])

    def vector_count(self, key: str) -> int:
        table, scope = self.vector_table(key)
        return self.query(f"SELECT count(*) AS n FROM {table} WHERE user_key = %s AND embedding IS NOT NULL", [scope])[
            0
        ]["n"]

    def export_memories(self, user_id: str) -> Iterator[tuple[Memory, bytes | None]]:
        rows = self.query(
            f"SELECT {MEMORY_COLUMNS}, embedding FROM mark_memories WHERE user_key = %s AND user_id = %s "
            "ORDER BY created_at, id",
            [user_key(user_id), user_id],
            binary=True,
        )
        for r in rows:
            v = pgrows.vec(r["embedding"])
            yield pgrows.decode.memory(r), (None if v is None else v.astype(np.float32).tobytes())

    def memory_owners(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = self.query("SELECT id, user_id FROM mark_memories WHERE id = ANY(%s)", [list(ids)])
        return {r["id"]: r["user_id"] for r in rows}

    def missing_embeddings(self, dim: int) -> list[tuple[str, str, str]]:
        rows = self.query(
            "SELECT id, user_key, text FROM mark_memories WHERE embedding IS NULL OR vector_dims(embedding) <> %s",
            [dim],
        )
        return [(r["id"], r["user_key"], r["text"]) for r in rows]

    def has_memories(self) -> bool:
        return bool(self.query("SELECT 1 FROM mark_memories LIMIT 1"))

    def users(self) -> list[str]:
        rows = self.query(
            "SELECT user_id FROM mark_memories UNION SELECT user_id FROM mark_turns "
            "UNION SELECT user_id FROM mark_history ORDER BY 1"
        )
        return [r["user_id"] for r in rows]

    def history(self, user_id: str, memory_id: str | None, limit: int, offset: int) -> list[HistoryEvent]:
        scope = [user_key(user_id), user_id]
        if memory_id is None:
            rows = self.query(
                "SELECT * FROM mark_history WHERE user_key = %s AND user_id = %s ORDER BY seq LIMIT %s OFFSET %s",
                [*scope, limit, offset],
            )
        else:
            rows = self.query(
                "SELECT * FROM mark_history WHERE user_key = %s AND user_id = %s AND memory_id = %s "
                "ORDER BY seq LIMIT %s OFFSET %s",
                [*scope, memory_id, limit, offset],
            )
        return [pgrows.decode.history(r) for r in rows]

    def history_rows(self, user_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, memory_id, old_text, new_text, reason, metadata FROM mark_history "
            "WHERE user_key = %s AND user_id = %s ORDER BY seq",
            [user_key(user_id), user_id],
        )

    # -- turns, feedback, forgetting ----------------------------------------------------------------------

    def turns(
        self,
        user_id: str,
        session_id: str | None,
        status: str | None,
        limit: int,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Turn]:
        where, params = ["user_key = %s", "user_id = %s"], [user_key(user_id), user_id]
        if session_id is not None:
            where.append("session_id = %s")
            params.append(session_id)
        if status is not None:
            where.append("extraction_status = %s")
            params.append(status)
        order = "DESC" if newest_first else "ASC"
        rows = self.query(
            f"SELECT {TURN_COLUMNS} FROM mark_turns WHERE {' AND '.join(where)} ORDER BY seq {order} "
            "LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [pgrows.decode.turn(r) for r in rows]

    def turns_by_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[Turn, np.ndarray | None]]:
        if not ids:
            return {}
        rows = self.query(
            f"SELECT {TURN_COLUMNS}, embedding FROM mark_turns WHERE user_key = %s AND user_id = %s AND id = ANY(%s)",
            [user_key(user_id), user_id, list(ids)],
            binary=True,
        )
        return {r["id"]: (pgrows.decode.turn(r), pgrows.vec(r["embedding"])) for r in rows}

    def episode_keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        return self._keywords("mark_turns", key, text, limit)

    def turn_neighbours(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        if not ids:
            return {}
        near = (
            "FROM mark_turns n WHERE n.user_key = t.user_key AND n.user_id = t.user_id "
            "AND n.session_id = t.session_id AND n.seq {} t.seq ORDER BY n.seq {} LIMIT 1"
        )
        rows = self.query(
            f"SELECT t.id, (SELECT n.id {near.format('<', 'DESC')}) AS prev, (SELECT n.id {near.format('>', 'ASC')}) "
            "AS next FROM mark_turns t WHERE t.user_key = %s AND t.user_id = %s AND t.id = ANY(%s)",
            [user_key(user_id), user_id, list(ids)],
        )
        return {r["id"]: (r["prev"], r["next"]) for r in rows}

    def session_window(self, user_id: str, session_id: str | None, seq: int, before: int, after: int) -> list[Turn]:
        same = "session_id IS NOT DISTINCT FROM %s"
        scope = [user_key(user_id), user_id, session_id, seq]
        older = self.query(
            f"SELECT {TURN_COLUMNS} FROM mark_turns WHERE user_key = %s AND user_id = %s AND {same} AND seq < %s "
            "ORDER BY seq DESC LIMIT %s",
            [*scope, before],
        )
        newer = self.query(
            f"SELECT {TURN_COLUMNS} FROM mark_turns WHERE user_key = %s AND user_id = %s AND {same} AND seq >= %s "
            "ORDER BY seq LIMIT %s",
            [*scope, after + 1],
        )
        return [pgrows.decode.turn(r) for r in reversed(older)] + [pgrows.decode.turn(r) for r in newer]

    def history_size(self, user_id: str, cap: int | None = None) -> tuple[int, int]:
        limit = "" if cap is None else f" LIMIT {int(cap)}"
        row = self.query(
            "SELECT count(*) AS n, coalesce(sum(length(content)), 0) AS c FROM "
            f"(SELECT content FROM mark_turns WHERE user_key = %s AND user_id = %s{limit}) t",
            [user_key(user_id), user_id],
        )[0]
        return int(row["n"]), int(row["c"])

    def retryable_turns(self, user_id: str, max_attempts: int) -> list[Turn]:
        rows = self.query(
            f"SELECT {TURN_COLUMNS} FROM mark_turns WHERE user_key = %s AND user_id = %s AND "
            "(extraction_status = 'pending' OR (extraction_status = 'failed' AND attempts < %s)) ORDER BY seq",
            [user_key(user_id), user_id, max_attempts],
        )
        return [pgrows.decode.turn(r) for r in rows]

    def pending_turn_users(self, max_attempts: int) -> list[str]:
        rows = self.query(
            "SELECT DISTINCT user_id FROM mark_turns WHERE extraction_status = 'pending' OR "
            "(extraction_status = 'failed' AND attempts < %s)",
            [max_attempts],
        )
        return [r["user_id"] for r in rows]

    def missing_turn_embeddings(self, limit: int = 100_000) -> list[tuple[str, str, str]]:
        rows = self.query(
            "SELECT id, user_key, content FROM mark_turns WHERE embedding IS NULL ORDER BY seq LIMIT %s", [limit]
        )
        return [(r["id"], r["user_key"], r["content"]) for r in rows]

    def feedback(self, user_id: str) -> list[Feedback]:
        rows = self.query(
            "SELECT * FROM mark_feedback WHERE user_key = %s AND user_id = %s ORDER BY seq",
            [user_key(user_id), user_id],
        )
        return [pgrows.decode.feedback(r) for r in rows]

    def forget_key(self) -> bytes:
        rows = self.query("SELECT value FROM mark_meta WHERE key = 'forget_key'")
        if not rows:
            raise StoreError("this store has no forget key (a migration did not run)")
        return bytes.fromhex(rows[0]["value"])

    def forgotten(self, user_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM mark_forgotten WHERE user_key = %s AND user_id = %s ORDER BY seq",
            [user_key(user_id), user_id],
        )

    def last_turn_seq(self, user_id: str) -> int:
        """The user's last turn position: turn positions come from one sequence, so later turns are higher."""
        return int(
            self.query(
                "SELECT coalesce(max(seq), 0) AS n FROM mark_turns WHERE user_key = %s AND user_id = %s",
                [user_key(user_id), user_id],
            )[0]["n"]
        )

    def turn_seqs(self, user_id: str, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = self.query(
            "SELECT id, seq FROM mark_turns WHERE user_key = %s AND user_id = %s AND id = ANY(%s)",
            [user_key(user_id), user_id, list(ids)],
        )
        return {r["id"]: r["seq"] for r in rows}

    # -- vectors and maintenance --------------------------------------------------------------------------

    def flush_vectors(self) -> None:
        """Vectors are written with their rows; what may be in flight is a large user's move into the HNSW index, or
        a vacuum after a bulk write."""
        self.upkeep.wait()

    def vector_state(self) -> VectorState:
        """A vector is a column of its row, so none can be missing from an index or left without a row; what can
        be wrong is a row without a vector (counted as missing)."""
        missing = [r["id"] for r in self.query("SELECT id FROM mark_memories WHERE embedding IS NULL ORDER BY id")]
        row = self.query(
            "SELECT (SELECT count(*) FROM mark_memories) + "
            "(SELECT count(*) FROM mark_turns WHERE embedding IS NOT NULL) AS expected, "
            "(SELECT count(*) FROM mark_memories WHERE embedding IS NOT NULL) + "
            "(SELECT count(*) FROM mark_turns WHERE embedding IS NOT NULL) AS vectors"
        )[0]
        return VectorState(expected=row["expected"], vectors=row["vectors"], missing=missing)

    def repair_vectors(self, missing: Sequence[str], orphans: Sequence[str], refill: set[str]) -> None:
        pass  # the core re-embedded what lacked a vector, in the rows themselves: nothing else can differ

    def rebuild_indexes(self, progress: Callable[[int], None] | None = None) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for table in ("mark_memories", "mark_turns"):
                conn.execute(f"REINDEX TABLE {table}")
        n = self.query(
            "SELECT (SELECT count(*) FROM mark_memories WHERE embedding IS NOT NULL) + "
            "(SELECT count(*) FROM mark_turns WHERE embedding IS NOT NULL) AS n"
        )[0]["n"]
        if progress:
            progress(n)
        return n

    def scrub_user(self, user_id: str, *, refill: bool) -> None:
        """VACUUM the user tables: the deleted rows' space (and their index entries) is reclaimed for reuse."""
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for table in pg_migrations.USER_TABLES:
                    conn.execute(f"VACUUM {table}")
        except psycopg.Error as exc:
            log.warning("VACUUM after removing a user's data failed (run it later): %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["PostgresBackend"]
