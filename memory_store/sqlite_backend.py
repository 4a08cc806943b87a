"""Every SQL statement of the store, in one place. SQLite (through sqlite-utils) is the source of truth.

One connection per thread (sqlite3 objects are not shared across threads), WAL journal, a long busy
timeout, and ``BEGIN IMMEDIATE`` for every write so that concurrent writers queue instead of failing
with "database is locked". A write the disk refuses (full, failing, read-only) is rolled back and reported as
one StoreError; a data directory that cannot be written is opened read-only (``mode=ro``) for reading.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils
from filelock import FileLock

from memory_store.backend import Candidate, MemoryFilter
from memory_store.errors import StoreError
from memory_store.ids import like_escape
from memory_store.keywords import query_words
from memory_store.migrations import apply_migrations
from memory_store.models import Feedback, HistoryEvent, Memory, Turn
from memory_store.rows import RowDecoder
from memory_store.validation import episode_key, episode_key_of, is_episode_key, user_key, user_key_of
from memory_store.wal import BACKSTOP_PAGES, Checkpointer, truncate_wal

MEMORY_COLUMNS = (
    "id, user_id, agent_id, session_id, kind, text, status, created_at, updated_at, last_confirmed_at, "
    "confirm_count, last_recalled_at, recall_count, trust, valid_from, valid_until, superseded_by, source, "
    "metadata, embedding_model"
)
_BUSY_RETRIES = 8
#: What SQLite says when the disk, not the statement, is the problem.
_DISK_FULL = ("database or disk is full",)
_DISK_FAILED = ("disk i/o error",)
_READ_ONLY = ("readonly database", "read-only")


def environment_error(exc: sqlite3.Error, path: Path, *, writing: bool = True) -> StoreError | None:
    """A StoreError in words for an error of the disk under ``path`` (full, failing, read-only), else None."""
    text = str(exc).lower()
    where = path.parent
    outcome = "nothing was written" if writing else "the database cannot be opened"
    if any(k in text for k in _DISK_FULL):
        return StoreError(f"the disk holding {where} is full: {outcome} (free some space and retry)")
    if any(k in text for k in _DISK_FAILED):
        return StoreError(f"the disk holding {where} failed (disk I/O error: full or failing?): {outcome}")
    if any(k in text for k in _READ_ONLY):
        return StoreError(f"the data directory {where} is read-only: {outcome}")
    return None


def ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _json(value: Any) -> str:
    if value == {}:  # most memories' metadata: a constant, not a json.dumps call per row
        return "{}"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _insert_statement(table: str, columns: Sequence[str]) -> str:
    """A plain INSERT of these columns, for one executemany of tuples (sqlite-utils' insert_all inspects every
    value in Python: a third of the store's own cost of a bulk add)."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _json_column(text: str | None) -> Any:
    """A JSON text column, decoded; None when it is empty."""
    return json.loads(text) if text else None


#: SQLite rows as the store's models (``decode.memory(row)``, ...): times are epoch seconds, JSON columns text.
decode = RowDecoder(time=dt, json=_json_column)


#: The columns a new memory row fills, in the order `memory_row` gives them.
MEMORY_INSERT_COLUMNS = (
    "id", "user_id", "user_key", "agent_id", "session_id", "kind", "text", "status", "created_at", "updated_at",
    "last_confirmed_at", "confirm_count", "last_recalled_at", "recall_count", "trust", "valid_from", "valid_until",
    "superseded_by", "source", "metadata", "embedding_model", "embedding",
)  # fmt: skip
INSERT_MEMORY = _insert_statement("memories", MEMORY_INSERT_COLUMNS)


def memory_row(m: Memory, user_key: str, embedding: np.ndarray | None) -> tuple[Any, ...]:
    """A new memory as the values of `INSERT_MEMORY` (a tuple: a bulk add builds one per memory)."""
    return (
        m.id,
        m.user_id,
        user_key,
        m.agent_id,
        m.session_id,
        m.kind.value,
        m.text,
        m.status.value,
        ts(m.created_at),
        ts(m.updated_at),
        ts(m.last_confirmed_at),
        m.confirm_count,
        ts(m.last_recalled_at),
        m.recall_count,
        m.trust,
        ts(m.valid_from),
        ts(m.valid_until),
        m.superseded_by,
        m.source.model_dump_json(),
        _json(m.metadata),
        m.embedding_model,
        None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes(),
    )


HISTORY_INSERT_COLUMNS = (
    "id", "memory_id", "user_id", "event", "old_text", "new_text", "reason", "actor", "created_at", "metadata",
)  # fmt: skip
INSERT_HISTORY = _insert_statement("history", HISTORY_INSERT_COLUMNS)


def history_row(e: HistoryEvent) -> tuple[Any, ...]:
    """A history event as the values of `INSERT_HISTORY`."""
    return (
        e.id, e.memory_id, e.user_id, e.event, e.old_text, e.new_text, e.reason, e.actor, ts(e.created_at),
        _json(e.metadata),
    )  # fmt: skip


#: Keyword search ranks (BM25) every row that matches one of the query's words. Past this many matches in the
#: user's rows, the query's most common words are left out (the rarest kept) until the matches fit: ranking stays a
#: few milliseconds on a history of 50,000 turns, and the best matches barely move, because a word in thousands of
#: rows adds little to BM25 (low IDF). Below the cap the ranking is exact.
KEYWORD_RANK_CAP = 2000


def fts_phrases(text: str, max_terms: int = 24) -> list[str]:
    """The query's words as quoted FTS5 phrases (no operator injection)."""
    return ['"' + w.replace('"', '""') + '"' for w in query_words(text, max_terms)]


class SQLiteDB:
    """The SQL side of the store. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._ro_uri: str | None = None
        self._checkpointer = Checkpointer(path)
        if read_only:
            if not path.is_file():
                raise StoreError(f"the data directory {path.parent} is read-only and holds no memory store")
            return  # migrations need a writable file; reads of the tables they created still work
        path.parent.mkdir(parents=True, exist_ok=True)
        # Migrations run under a cross-process lock so two processes opening a new home don't race.
        with FileLock(str(path) + ".migrate.lock", timeout=60), self.write() as db:
            apply_migrations(db)

    # -- connections and transactions -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.read_only:
                conn = self._connect_read_only()
            else:
                try:
                    conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA busy_timeout=30000")
                    conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.Error as exc:
                    env = environment_error(exc, self.path, writing=False)
                    raise env or StoreError(f"cannot open {self.path}: {exc}") from exc
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")  # memory_store.wal checkpoints
                conn.execute("PRAGMA foreign_keys=ON")
                # Deleted content is overwritten with zeros: a purged user leaves no readable trace.
                conn.execute("PRAGMA secure_delete=ON")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """Open for reading only. A WAL database needs its -shm file: when none exists and none can be created
        (a read-only directory after a clean close), the file is opened as immutable, which is exact then."""
        base = "file:" + urllib.parse.quote(str(self.path))
        uris = [self._ro_uri] if self._ro_uri else [base + "?mode=ro", base + "?mode=ro&immutable=1"]
        last: sqlite3.Error | None = None
        for uri in uris:
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as exc:
                last = exc
                continue
            self._ro_uri = uri
            return conn
        raise StoreError(f"cannot read {self.path} (read-only data directory): {last}")

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction (BEGIN IMMEDIATE), retried if the database stays busy.

        All or nothing: if the disk refuses any part (full, I/O error, read-only), even the COMMIT, the
        transaction is rolled back and one StoreError says so; nothing was acknowledged, nothing is lost.
        """
        if self.read_only:
            raise StoreError(f"the data directory {self.path.parent} is read-only: nothing can be written")
        conn = self._conn()
        for attempt in range(_BUSY_RETRIES):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    env = environment_error(exc, self.path)
                    if env is None:
                        raise
                    raise env from exc
                if attempt == _BUSY_RETRIES - 1:
                    raise StoreError(f"the database at {self.path} stayed locked; another process holds it") from exc
                time.sleep(0.05 * (2**attempt) * random.uniform(0.5, 1.5))
        try:
            yield sqlite_utils.Database(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                env = environment_error(exc, self.path)
                if env is not None:
                    raise env from exc
            raise
        self._checkpointer.poke()

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        self._checkpointer.close()
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- memories ----------------------------------------------------------------------------------

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None:
        rows = self.query(f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ? AND user_id = ?", (memory_id, user_id))
        return decode.memory(rows[0]) if rows else None

    def resolve_short_id(self, short: str, user_id: str) -> list[str]:
        """Ids in the user's scope that end or start with ``short`` (the CLI accepts unambiguous short ids)."""
        pattern = like_escape(short)
        rows = self.query(
            "SELECT id FROM memories WHERE user_id = ? AND (id LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\') LIMIT 3",
            (user_id, "%" + pattern, pattern + "%"),
        )
        return [r["id"] for r in rows]

    def candidates_by_ids(
        self, ids: Sequence[str], user_id: str, query: np.ndarray | None = None
    ) -> dict[str, tuple[Candidate, float | None]]:
        out: dict[str, tuple[Candidate, float | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.query(
                # `+user_id`: look the ids up by their unique index; the user's index would scan every row of theirs.
                f"SELECT {MEMORY_COLUMNS}, embedding FROM memories WHERE +user_id = ? AND id IN ({marks})",
                [user_id, *chunk],
            )
            for row, sim in zip(rows, _similarities([r["embedding"] for r in rows], query), strict=True):
                out[row["id"]] = (decode.candidate(row), sim)
        return out

    def filtered_vectors(self, user_id: str, flt: MemoryFilter) -> list[tuple[str, np.ndarray | None]]:
        where, params = filter_sql(flt)
        return [
            (r["id"], np.frombuffer(r["embedding"], dtype=np.float32) if r["embedding"] else None)
            for r in self.query(f"SELECT id, embedding FROM memories WHERE user_id = ? AND {where}", [user_id, *params])
        ]

    def count_memories(self, user_id: str, flt: MemoryFilter) -> int:
        where, params = filter_sql(flt)
        return self.query(f"SELECT count(*) AS n FROM memories WHERE user_id = ? AND {where}", [user_id, *params])[0][
            "n"
        ]

    def keyword_search(self, user_key: str, text: str, limit: int) -> list[tuple[str, float]]:
        """BM25 over the user's memories: (memory id, bm25) best first (SQLite's bm25 is lower = better)."""
        return self._bm25_top("memories_fts", "memories", user_key, text, limit)

    def _bm25_top(self, fts: str, rows: str, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        """The ids of the best `limit` BM25 matches of `text` among the rows of user key `key`, best first."""
        phrases = fts_phrases(text)
        if not phrases:
            return []
        scope = f'user_key:"{key}"'
        try:
            kept, mine = self._rankable(fts, scope, phrases)
            words = f"({' OR '.join(kept)})"
            # At most, how many of the table's matches are other users' (counted no further than the point where
            # they are too many: a small user's common words match a large table's rows by the thousand).
            others = self._fts_count(fts, words, upto=mine + limit + 1) - mine if mine else limit + 1
            if others <= limit:
                # The user has nearly all the matches in the table: rank the table's best `limit + others` and keep
                # the user's (the user's best `limit` are among them). The scores are those of a query with the
                # scope (the user_key column weighs 0), but bm25 no longer counts the user's whole posting list for
                # an IDF nobody uses (~3 ms for a user with 50,000 turns).
                found = self.query(
                    f"SELECT x.id AS id, k.score AS score FROM (SELECT rowid AS r, bm25({fts}, 1.0, 0.0) AS score "
                    f"FROM {fts} WHERE {fts} MATCH ? ORDER BY score, rowid LIMIT ?) k JOIN {rows} x ON x.seq = k.r "
                    "WHERE x.user_key = ? ORDER BY k.score, k.r LIMIT ?",
                    (words, limit + others, key, limit),
                )
            else:
                # The ids of the best `limit` matches only (a join before the LIMIT reads a row for every match).
                found = self.query(
                    f"SELECT x.id AS id, k.score AS score FROM (SELECT rowid AS r, bm25({fts}, 1.0, 0.0) AS score "
                    f"FROM {fts} WHERE {fts} MATCH ? ORDER BY score, rowid LIMIT ?) k "
                    f"JOIN {rows} x ON x.seq = k.r ORDER BY k.score, k.r",
                    (f"{scope} AND {words}", limit),
                )
        except sqlite3.OperationalError:
            return []
        return [(r["id"], r["score"]) for r in found]

    def _fts_count(self, fts: str, match: str, upto: int | None = None) -> int:
        """Rows that match an FTS5 expression (counted up to `upto`, if given)."""
        if upto is None:
            return self.query(f"SELECT count(*) AS n FROM {fts} WHERE {fts} MATCH ?", (match,))[0]["n"]
        sql = f"SELECT count(*) AS n FROM (SELECT 1 FROM {fts} WHERE {fts} MATCH ? LIMIT ?)"
        return self.query(sql, (match, upto))[0]["n"]

    def _rankable(self, fts: str, scope: str, phrases: list[str]) -> tuple[list[str], int]:
        """The phrases to rank with, and at least how many of the user's rows match one of them (0: not counted):
        all of them for a user with at most `KEYWORD_RANK_CAP` rows (not counted) or while their matches fit it, else
        the rarest in the user's rows that fit (at least one). Ranking is what grows with the matches."""
        if len(phrases) < 2:
            return phrases, 0
        # A user with no more rows than the cap is ranked exactly, whatever the words match: nothing to count per
        # word (the counts cost more than the ranking they would spare: ~0.5 ms a search of a 1,000-row user).
        if self._fts_count(fts, scope, upto=KEYWORD_RANK_CAP + 1) <= KEYWORD_RANK_CAP:
            return phrases, 0
        # Counted in the user's rows (an AND seeks through the longer list: cheap for a small user however large
        # the table; counts over every user cost ~1 ms a common word in a large table). Most queries stop here.
        in_scope = {p: self._fts_count(fts, f"{scope} AND {p}") for p in phrases}
        if sum(in_scope.values()) <= KEYWORD_RANK_CAP:
            return phrases, max(in_scope.values())
        # Words that share rows: a user with fewer rows than the cap is always ranked exactly. (No need to ask when
        # one word alone has more matches than the cap: their union has at least as many.)
        if max(in_scope.values()) <= KEYWORD_RANK_CAP:
            union = self._fts_count(fts, f"{scope} AND ({' OR '.join(phrases)})")
            if union <= KEYWORD_RANK_CAP:
                return phrases, union
        kept: list[str] = []
        total = 0
        for p in sorted(phrases, key=in_scope.__getitem__):
            if kept and total + in_scope[p] > KEYWORD_RANK_CAP:
                break
            kept.append(p)
            total += in_scope[p]
        return kept, max(in_scope[p] for p in kept)

    def list_memories(self, user_id: str, flt: MemoryFilter, limit: int, offset: int) -> tuple[list[Memory], int]:
        total = self.count_memories(user_id, flt)
        where, params = filter_sql(flt)
        rows = self.query(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ? AND {where} "
            "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [user_id, *params, limit, offset],
        )
        return [decode.memory(r) for r in rows], total

    def export_memories(self, user_id: str) -> Iterator[tuple[Memory, bytes | None]]:
        for r in self.query(
            f"SELECT {MEMORY_COLUMNS}, embedding FROM memories WHERE user_id = ? ORDER BY created_at, id", (user_id,)
        ):
            yield decode.memory(r), (bytes(r["embedding"]) if r["embedding"] else None)

    def memory_owners(self, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            for r in self.query(f"SELECT id, user_id FROM memories WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[r["id"]] = r["user_id"]
        return out

    def has_memories(self) -> bool:
        return bool(self.query("SELECT 1 FROM memories LIMIT 1"))

    def user_vectors(self, key: str) -> tuple[list[str], np.ndarray]:
        """Every stored embedding of one vector key (a user's notes or episodes): what the exact index loads."""
        if is_episode_key(key):
            return self.turn_vectors(user_key_of(key))
        rows = self.query("SELECT id, embedding FROM memories WHERE user_key = ? AND embedding IS NOT NULL", (key,))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r["id"] for r in rows], np.stack([np.frombuffer(r["embedding"], dtype=np.float32) for r in rows])

    def all_vector_ids(self) -> dict[str, set[str]]:
        """Every id the vector index should hold, by key (notes under the user key, turns under the episode key)."""
        out: dict[str, set[str]] = {}
        for r in self.query("SELECT user_key, id FROM memories"):
            out.setdefault(r["user_key"], set()).add(r["id"])
        for r in self.query("SELECT user_key, id FROM turns WHERE embedding IS NOT NULL"):
            out.setdefault(episode_key_of(r["user_key"]), set()).add(r["id"])
        return out

    def vectors_for(self, key: str, ids: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of some ids under one vector key (a note's or a turn's, by the key's namespace)."""
        table, scope = ("turns", user_key_of(key)) if is_episode_key(key) else ("memories", key)
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(
                # `+user_key`: look the ids up by their unique index; the key's index would scan every row of theirs.
                f"SELECT id, embedding FROM {table} WHERE +user_key = ? AND id IN ({marks}) AND embedding IS NOT NULL",
                [scope, *chunk],
            ):
                out[r["id"]] = np.frombuffer(r["embedding"], dtype=np.float32)
        return out

    def iter_vectors(self, batch: int = 2000) -> Iterator[tuple[str, list[str], np.ndarray]]:
        """(vector key, ids, vectors) in batches, for a rebuild of the vector index: notes, then episodes."""
        for table in ("memories", "turns"):
            yield from self._iter_table_vectors(table, batch)

    def _iter_table_vectors(self, table: str, batch: int) -> Iterator[tuple[str, list[str], np.ndarray]]:
        last = 0
        while True:
            rows = self.query(
                f"SELECT seq, user_key, id, embedding FROM {table} WHERE seq > ? AND embedding IS NOT NULL "
                "ORDER BY seq LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            last = rows[-1]["seq"]
            groups: dict[str, list[sqlite3.Row]] = {}
            for r in rows:
                key = episode_key_of(r["user_key"]) if table == "turns" else r["user_key"]
                groups.setdefault(key, []).append(r)
            for key, group in groups.items():
                yield (
                    key,
                    [r["id"] for r in group],
                    np.stack([np.frombuffer(r["embedding"], dtype=np.float32) for r in group]),
                )

    def missing_embeddings(self, dim: int) -> list[tuple[str, str, str]]:
        """(id, user_key, text) of memories without a usable embedding: none, or not ``dim`` float32 values."""
        return [
            (r["id"], r["user_key"], r["text"])
            for r in self.query(
                "SELECT id, user_key, text FROM memories WHERE embedding IS NULL OR length(embedding) != ?",
                (4 * dim,),
            )
        ]

    def users(self) -> list[str]:
        rows = self.query(
            "SELECT user_id FROM memories UNION SELECT user_id FROM turns UNION SELECT user_id FROM history ORDER BY 1"
        )
        return [r["user_id"] for r in rows]

    # -- history, turns, feedback ------------------------------------------------------------------

    def history(self, user_id: str, memory_id: str | None, limit: int, offset: int) -> list[HistoryEvent]:
        if memory_id is None:
            rows = self.query(
                "SELECT * FROM history WHERE user_id = ? ORDER BY seq LIMIT ? OFFSET ?", (user_id, limit, offset)
            )
        else:
            rows = self.query(
                "SELECT * FROM history WHERE user_id = ? AND memory_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                (user_id, memory_id, limit, offset),
            )
        return [decode.history(r) for r in rows]

    # -- episodes: the raw turns as searchable memory ------------------------------------------------------

    def episode_keyword_search(self, key: str, text: str, limit: int) -> list[tuple[str, float]]:
        """BM25 over the user's turns: (turn id, bm25) best first (lower bm25 = better, as SQLite reports it)."""
        return self._bm25_top("turns_fts", "turns", key, text, limit)

    def turns_by_ids(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[Turn, np.ndarray | None]]:
        """Turns (with their vectors) by id, only this user's: the scope guard of episode search."""
        out: dict[str, tuple[Turn, np.ndarray | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            for r in self.query(
                # `+user_id`: look the ids up by their unique index; the user's index would scan every turn of theirs.
                f"SELECT * FROM turns WHERE +user_id = ? AND id IN ({','.join('?' * len(chunk))})",
                [user_id, *chunk],
            ):
                emb = np.frombuffer(r["embedding"], dtype=np.float32) if r["embedding"] else None
                out[r["id"]] = (decode.turn(r), emb)
        return out

    def turn_neighbours(self, user_id: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """Each turn's (previous, next) turn id in its session; a turn with no session has none."""
        out: dict[str, tuple[str | None, str | None]] = {}
        near = (
            "FROM turns n WHERE n.user_id = t.user_id AND n.session_id = t.session_id AND n.seq {} t.seq "
            "ORDER BY n.seq {}"
        )
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            for r in self.query(
                f"SELECT t.id AS id, (SELECT n.id {near.format('<', 'DESC')} LIMIT 1) AS prev, "
                f"(SELECT n.id {near.format('>', 'ASC')} LIMIT 1) AS next "
                f"FROM turns t WHERE +t.user_id = ? AND t.id IN ({','.join('?' * len(chunk))})",
                [user_id, *chunk],
            ):
                out[r["id"]] = (r["prev"], r["next"])
        return out

    def session_window(self, user_id: str, session_id: str | None, seq: int, before: int, after: int) -> list[Turn]:
        """The turns around one turn in its session, in order (the turn itself included)."""
        same = "session_id IS ?" if session_id is None else "session_id = ?"
        older = self.query(
            f"SELECT * FROM turns WHERE user_id = ? AND {same} AND seq < ? ORDER BY seq DESC LIMIT ?",
            (user_id, session_id, seq, before),
        )
        newer = self.query(
            f"SELECT * FROM turns WHERE user_id = ? AND {same} AND seq >= ? ORDER BY seq LIMIT ?",
            (user_id, session_id, seq, after + 1),
        )
        return [decode.turn(r) for r in reversed(older)] + [decode.turn(r) for r in newer]

    def history_size(self, user_id: str, cap: int | None = None) -> tuple[int, int]:
        """(turns, characters) of a user's conversation history, counting at most `cap` turns (cheap on long ones)."""
        if cap is not None:
            row = self.query(
                "SELECT count(*) AS n, coalesce(sum(length(content)), 0) AS c FROM "
                "(SELECT content FROM turns WHERE user_id = ? LIMIT ?)",
                (user_id, cap),
            )[0]
            return int(row["n"]), int(row["c"])
        row = self.query(
            "SELECT count(*) AS n, coalesce(sum(length(content)), 0) AS c FROM turns WHERE user_id = ?", (user_id,)
        )[0]
        return int(row["n"]), int(row["c"])

    def turn_vectors(self, key: str) -> tuple[list[str], np.ndarray]:
        rows = self.query("SELECT id, embedding FROM turns WHERE user_key = ? AND embedding IS NOT NULL", (key,))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r["id"] for r in rows], np.stack([np.frombuffer(r["embedding"], dtype=np.float32) for r in rows])

    def missing_turn_embeddings(self, limit: int = 100_000) -> list[tuple[str, str, str]]:
        """(turn id, user key, content) of turns stored before episodes had vectors, or whose vector was lost."""
        return [
            (r["id"], r["user_key"], r["content"])
            for r in self.query(
                "SELECT id, user_key, content FROM turns WHERE embedding IS NULL ORDER BY seq LIMIT ?", (limit,)
            )
        ]

    def turns(
        self,
        user_id: str,
        session_id: str | None,
        status: str | None,
        limit: int,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Turn]:
        where, params = ["user_id = ?"], [user_id]
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if status is not None:
            where.append("extraction_status = ?")
            params.append(status)
        order = "DESC" if newest_first else "ASC"
        rows = self.query(
            f"SELECT * FROM turns WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [decode.turn(r) for r in rows]

    def retryable_turns(self, user_id: str, max_attempts: int) -> list[Turn]:
        rows = self.query(
            "SELECT * FROM turns WHERE user_id = ? AND (extraction_status = 'pending' OR "
            "(extraction_status = 'failed' AND attempts < ?)) ORDER BY seq",
            (user_id, max_attempts),
        )
        return [decode.turn(r) for r in rows]

    def pending_turn_users(self, max_attempts: int) -> list[str]:
        rows = self.query(
            "SELECT DISTINCT user_id FROM turns WHERE extraction_status = 'pending' OR "
            "(extraction_status = 'failed' AND attempts < ?)",
            (max_attempts,),
        )
        return [r["user_id"] for r in rows]

    def feedback(self, user_id: str) -> list[Feedback]:
        return [
            decode.feedback(r) for r in self.query("SELECT * FROM feedback WHERE user_id = ? ORDER BY seq", (user_id,))
        ]

    # -- forgetting ------------------------------------------------------------------------------------

    def forget_key(self) -> bytes:
        rows = self.query("SELECT value FROM meta WHERE key = 'forget_key'")
        if not rows:
            raise StoreError("this store has no forget key (a migration did not run)")
        return bytes.fromhex(rows[0]["value"])

    def forgotten(self, user_id: str) -> list[sqlite3.Row]:
        try:
            return self.query("SELECT * FROM forgotten WHERE user_id = ? ORDER BY seq", (user_id,))
        except sqlite3.OperationalError:  # a read-only store from before forgetting existed: nothing forgotten
            return []

    def last_turn_seq(self, user_id: str | None = None) -> int:
        """The last turn position in the whole store (rowids grow across users; ``user_id`` is not needed)."""
        return int(self.query("SELECT coalesce(max(seq), 0) AS n FROM turns")[0]["n"])

    def turn_seqs(self, user_id: str, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            for r in self.query(
                f"SELECT id, seq FROM turns WHERE +user_id = ? AND id IN ({','.join('?' * len(chunk))})",
                [user_id, *chunk],
            ):
                out[r["id"]] = r["seq"]
        return out

    def history_rows(self, user_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT id, memory_id, old_text, new_text, reason, metadata FROM history WHERE user_id = ? ORDER BY seq",
            (user_id,),
        )

    # -- vector outbox and epoch ---------------------------------------------------------------------

    def enqueue_vectors(self, db: sqlite_utils.Database, op: str, user_key: str, ids: Sequence[str]) -> None:
        db.conn.executemany(
            "INSERT INTO vector_outbox (op, user_key, memory_id) VALUES (?, ?, ?)", [(op, user_key, i) for i in ids]
        )

    def outbox(self, limit: int = 20_000) -> list[sqlite3.Row]:
        return self.query("SELECT seq, op, user_key, memory_id FROM vector_outbox ORDER BY seq LIMIT ?", (limit,))

    def pending_vector_ops(self, key: str, limit: int) -> list[tuple[str, str]]:
        """One vector key's pending outbox ops, oldest first, at most `limit`: (memory id, op)."""
        return [
            (r["memory_id"], r["op"])
            for r in self.query(
                "SELECT memory_id, op FROM vector_outbox WHERE user_key = ? ORDER BY seq LIMIT ?", (key, limit)
            )
        ]

    def outbox_count(self) -> int:
        return self.query("SELECT count(*) AS n FROM vector_outbox")[0]["n"]

    def vectors_settled(self, epoch: int) -> bool:
        """True when no other process moved the vector epoch since ``epoch`` and no vector write is pending."""
        row = self.query(
            "SELECT (SELECT value FROM meta WHERE key='vector_epoch') AS e, EXISTS(SELECT 1 FROM vector_outbox) AS p"
        )[0]
        return int(row["e"]) == epoch and not row["p"]

    def vectors_left(self, key: str) -> bool:
        """Does a vector write of this key still wait (in the outbox or set aside)?"""
        return bool(
            self.query(
                "SELECT EXISTS(SELECT 1 FROM vector_quarantine WHERE user_key = ?) "
                "OR EXISTS(SELECT 1 FROM vector_outbox WHERE user_key = ?) AS n",
                [key, key],
            )[0]["n"]
        )

    def clear_outbox(self, db: sqlite_utils.Database, upto_seq: int | None = None, user_key: str | None = None) -> None:
        if user_key is not None:
            db.execute("DELETE FROM vector_outbox WHERE user_key = ?", [user_key])
        elif upto_seq is None:
            db.execute("DELETE FROM vector_outbox")
        else:
            db.execute("DELETE FROM vector_outbox WHERE seq <= ?", [upto_seq])

    def quarantine(self, db: sqlite_utils.Database, failed: Sequence[tuple[Any, str]], now: float) -> None:
        """Set aside outbox ops the vector index refused, with the reason (reported by check, fixed by repair)."""
        db["vector_quarantine"].insert_all(
            [
                {
                    "op": op["op"],
                    "user_key": op["user_key"],
                    "memory_id": op["memory_id"],
                    "error": err,
                    "created_at": now,
                }
                for op, err in failed
            ]
        )

    def quarantined(self) -> list[sqlite3.Row]:
        return self.query("SELECT seq, op, user_key, memory_id, error FROM vector_quarantine ORDER BY seq")

    def clear_quarantine(self, db: sqlite_utils.Database, user_key: str | None = None) -> None:
        if user_key is None:
            db.execute("DELETE FROM vector_quarantine")
        else:
            db.execute("DELETE FROM vector_quarantine WHERE user_key = ?", [user_key])

    def vector_epoch(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key = 'vector_epoch'")[0]["value"])

    def bump_vector_epoch(self, db: sqlite_utils.Database) -> int:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vector_epoch'")
        return int(db.execute("SELECT value FROM meta WHERE key = 'vector_epoch'").fetchone()[0])

    # -- keyword index ---------------------------------------------------------------------------------

    def rebuild_fts(self, db: sqlite_utils.Database) -> None:
        db.execute("INSERT INTO memories_fts(memories_fts) VALUES('rebuild')")
        db.execute("INSERT INTO turns_fts(turns_fts) VALUES('rebuild')")

    def scrub(self) -> bool:
        """After a purge: merge the keyword index (dropping deleted tokens) and empty the WAL file; False if a
        reader elsewhere kept the WAL from being emptied."""
        conn = self._conn()
        conn.execute("INSERT INTO memories_fts(memories_fts) VALUES('optimize')")
        conn.execute("INSERT INTO turns_fts(turns_fts) VALUES('optimize')")
        return truncate_wal(conn)

    def check_fts(self) -> bool:
        try:
            for table in ("memories_fts", "turns_fts"):
                self._conn().execute(f"INSERT INTO {table}({table}, rank) VALUES('integrity-check', 1)")
            return True
        except sqlite3.DatabaseError:
            return False


def filter_sql(flt: MemoryFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (after ``user_id = ?``) of a memory filter, with its parameters."""
    where = [f"status IN ({','.join('?' * len(flt.statuses))})"]
    params: list[Any] = list(flt.statuses)
    if flt.kinds:
        where.append(f"kind IN ({','.join('?' * len(flt.kinds))})")
        params += flt.kinds
    if flt.session_id is not None:
        where.append("session_id = ?")
        params.append(flt.session_id)
    if flt.agent_id is not None:
        where.append("agent_id = ?")
        params.append(flt.agent_id)
    if flt.since is not None:
        where.append("created_at >= ?")
        params.append(ts(flt.since))
    if flt.until is not None:
        where.append("created_at <= ?")
        params.append(ts(flt.until))
    if flt.ids is not None:
        where.append(f"id IN ({','.join('?' * len(flt.ids))})" if flt.ids else "0")
        params += flt.ids
    return " AND ".join(where), params


def _similarities(blobs: Sequence[bytes | None], query: np.ndarray | None) -> list[float | None]:
    """Each stored vector's dot product with the (unit) query, in one product; None for a missing vector or one of
    another dimension."""
    sims: list[float | None] = [None] * len(blobs)
    if query is None:
        return sims
    q = np.asarray(query, dtype=np.float32)
    found = [(i, b) for i, b in enumerate(blobs) if b and len(b) == q.nbytes]
    if found:
        matrix = np.frombuffer(b"".join(b for _, b in found), dtype=np.float32).reshape(len(found), -1)
        for (i, _), sim in zip(found, (matrix @ q).tolist(), strict=True):
            sims[i] = sim
    return sims


def _vector_bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _encode(column: str, value: Any) -> Any:
    """A Python value of a memory/history column as SQLite stores it."""
    if isinstance(value, datetime):
        return ts(value)
    if column == "embedding":
        return _vector_bytes(value)
    if column == "metadata" and isinstance(value, dict):
        return _json(value)
    return value


class SQLiteTx:
    """One SQLite write transaction (BEGIN IMMEDIATE, see `SQLiteDB.write`).

    Each write that changes a vector queues it in the outbox in the same transaction: the vector index follows
    after the commit, and a crash in between is repaired from the outbox on the next open.
    """

    def __init__(self, db: SQLiteDB, w: sqlite_utils.Database) -> None:
        self.db = db
        self.w = w
        self.vector_writes = 0

    def _enqueue(self, op: str, key: str, ids: Sequence[str]) -> None:
        if ids:
            self.db.enqueue_vectors(self.w, op, key, ids)
            self.vector_writes += len(ids)

    # -- memories ------------------------------------------------------------------------------------------

    def get_memory(self, memory_id: str, user_id: str) -> Memory | None:
        return self.db.get_memory(memory_id, user_id)  # the same connection: inside the transaction

    def insert_memories(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> None:
        keys = {u: user_key(u) for u in {m.user_id for m in memories}}
        rows = [memory_row(m, keys[m.user_id], v) for m, v in zip(memories, vectors, strict=True)]
        self.w.conn.executemany(INSERT_MEMORY, rows)
        by_key: dict[str, list[str]] = {}
        for m in memories:
            by_key.setdefault(keys[m.user_id], []).append(m.id)
        for key, ids in by_key.items():
            self._enqueue("upsert", key, ids)

    def update_memory(self, user_id: str, memory_id: str, changes: Mapping[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in changes)
        values = [_encode(k, v) for k, v in changes.items()]
        self.w.execute(f"UPDATE memories SET {sets} WHERE id = ? AND user_id = ?", [*values, memory_id, user_id])
        if "embedding" in changes:
            self._enqueue("upsert", user_key(user_id), [memory_id])

    def confirm_memory(self, user_id: str, memory_id: str, trust: float, now: datetime) -> None:
        self.w.execute(
            "UPDATE memories SET confirm_count = confirm_count + 1, last_confirmed_at = ?, trust = ?, "
            "updated_at = ? WHERE id = ? AND user_id = ?",
            [ts(now), trust, ts(now), memory_id, user_id],
        )

    def mark_recalled(self, user_id: str, memory_ids: Sequence[str], now: datetime) -> None:
        marks = ",".join("?" * len(memory_ids))
        self.w.execute(
            f"UPDATE memories SET recall_count = recall_count + 1, last_recalled_at = ? "
            f"WHERE +user_id = ? AND id IN ({marks})",  # by the ids' unique index, not a scan of the user's
            [ts(now), user_id, *memory_ids],
        )

    def delete_memory(self, user_id: str, memory_id: str) -> None:
        self.w.execute("DELETE FROM memories WHERE id = ? AND user_id = ?", [memory_id, user_id])
        self._enqueue("delete", user_key(user_id), [memory_id])

    def set_memory_embedding(self, key: str, memory_id: str, vector: np.ndarray, model: str) -> None:
        # No outbox op: the caller refills the user's vector group from the rows.
        self.w.execute(
            "UPDATE memories SET embedding = ?, embedding_model = ? WHERE id = ?",
            [_vector_bytes(vector), model, memory_id],
        )

    # -- history -------------------------------------------------------------------------------------------

    def add_history(self, events: Iterable[HistoryEvent]) -> None:
        self.w.conn.executemany(INSERT_HISTORY, map(history_row, events))

    def delete_history(self, events: Sequence[HistoryEvent]) -> None:
        if events:
            self.w.execute(f"DELETE FROM history WHERE id IN ({','.join('?' * len(events))})", [e.id for e in events])

    def rewrite_history(self, user_id: str, event_id: str, fields: Mapping[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [_encode(k, v) for k, v in fields.items()]
        self.w.execute(f"UPDATE history SET {sets} WHERE id = ? AND user_id = ?", [*values, event_id, user_id])

    # -- turns -----------------------------------------------------------------------------------------------

    def add_turns(self, turns: Sequence[Turn], vectors: np.ndarray | None, model: str | None) -> None:
        self.w["turns"].insert_all(
            [
                {
                    "id": t.id,
                    "user_id": t.user_id,
                    "user_key": user_key(t.user_id),
                    "agent_id": t.agent_id,
                    "session_id": t.session_id,
                    "role": t.role,
                    "content": t.content,
                    "created_at": ts(t.created_at),
                    "extraction_status": t.extraction_status,
                    "attempts": t.attempts,
                    "last_error": t.last_error,
                    "metadata": _json(t.metadata),
                    "outdated_by": t.outdated_by,
                    "embedding": None if vectors is None else _vector_bytes(vectors[n]),
                    "embedding_model": None if vectors is None else model,
                }
                for n, t in enumerate(turns)
            ]
        )
        if vectors is not None:
            by_key: dict[str, list[str]] = {}
            for t in turns:
                by_key.setdefault(episode_key(t.user_id), []).append(t.id)
            for key, ids in by_key.items():
                self._enqueue("upsert", key, ids)

    def delete_turns(self, turns: Sequence[Turn]) -> None:
        if turns:
            self.w.execute(f"DELETE FROM turns WHERE id IN ({','.join('?' * len(turns))})", [t.id for t in turns])

    def mark_turns_outdated(self, user_id: str, turn_ids: Sequence[str], note_id: str) -> None:
        if turn_ids:
            self.w.execute(
                f"UPDATE turns SET outdated_by = ? WHERE +user_id = ? AND id IN ({','.join('?' * len(turn_ids))})",
                [note_id, user_id, *turn_ids],
            )

    def set_turns_status(self, turn_ids: Sequence[str], status: str, error: str | None, bump: bool) -> None:
        ids = list(turn_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.w.execute(
                "UPDATE turns SET extraction_status = ?, last_error = ?, attempts = attempts + ? "
                f"WHERE id IN ({','.join('?' * len(chunk))})",
                [status, error, 1 if bump else 0, *chunk],
            )

    def rewrite_turn(
        self, user_id: str, turn_id: str, content: str, last_error: str | None, vector: np.ndarray
    ) -> None:
        """A turn's text redacted where a forgotten fact stood; its vector follows (the FTS index by trigger)."""
        self.w.execute(
            "UPDATE turns SET content = ?, last_error = ?, embedding = ? WHERE id = ? AND user_id = ?",
            [content, last_error, _vector_bytes(vector), turn_id, user_id],
        )
        self._enqueue("upsert", episode_key(user_id), [turn_id])

    def set_turn_embedding(self, key: str, turn_id: str, vector: np.ndarray, model: str) -> None:
        self.w.execute(
            "UPDATE turns SET embedding = ?, embedding_model = ? WHERE id = ?", [_vector_bytes(vector), model, turn_id]
        )
        self._enqueue("upsert", episode_key_of(key), [turn_id])

    # -- feedback and forgetting ---------------------------------------------------------------------------

    def add_feedback(self, fb: Feedback) -> None:
        self.w["feedback"].insert(
            {
                "id": fb.id,
                "user_id": fb.user_id,
                "response_id": fb.response_id,
                "memory_ids": _json(fb.memory_ids),
                "value": fb.value,
                "comment": fb.comment,
                "created_at": ts(fb.created_at),
            }
        )

    def delete_feedback(self, fb: Feedback) -> None:
        self.w.execute("DELETE FROM feedback WHERE id = ?", [fb.id])

    def redact_feedback(self, user_id: str, feedback_id: str, comment: str) -> None:
        self.w.execute("UPDATE feedback SET comment = ? WHERE id = ? AND user_id = ?", [comment, feedback_id, user_id])

    def add_forgotten(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.w["forgotten"].insert_all([{k: _encode(k, v) for k, v in r.items()} for r in rows])

    def purge_user(self, user_id: str) -> dict[str, int]:
        """Every row of the user; their pending and set-aside vector writes give way to one drop per vector key."""
        counts = {}
        for table in ("memories", "turns", "history", "feedback", "forgotten"):
            counts[table] = self.w.execute(f"DELETE FROM {table} WHERE user_id = ?", [user_id]).rowcount
        for key in (user_key(user_id), episode_key(user_id)):
            self.db.clear_outbox(self.w, user_key=key)
            self.db.clear_quarantine(self.w, key)
            self._enqueue("drop", key, [""])
        return counts
