"""Rows of the Postgres engine: the columns, Python values to parameters and back, and the SQL of filters and
keyword queries (memory_store.postgres_backend runs them)."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from memory_store.backend import MemoryFilter
from memory_store.rows import RowDecoder
from memory_store.validation import user_key

MEMORY_COLUMNS = (
    "id, user_id, agent_id, session_id, kind, text, status, created_at, updated_at, last_confirmed_at, "
    "confirm_count, last_recalled_at, recall_count, trust, valid_from, valid_until, superseded_by, source, "
    "metadata, embedding_model"
)
#: A memory row as search reads its candidates: the JSON columns as text, parsed only for the hits returned
#: (`candidate_decode`; decoding them for the ~50 candidates of a search cost more than the rest of their row).
CANDIDATE_COLUMNS = MEMORY_COLUMNS.replace("source,", "source::text AS source,").replace(
    "metadata,", "metadata::text AS metadata,"
)
TURN_COLUMNS = (
    "id, seq, user_id, agent_id, session_id, role, content, created_at, extraction_status, attempts, last_error, "
    "metadata, outdated_by"
)
#: Columns of a memory the core may set (`Transaction.update_memory`); anything else is a programming error.
UPDATABLE = frozenset(
    {"text", "embedding", "embedding_model", "trust", "metadata", "status", "valid_until", "superseded_by"}
    | {"updated_at"}
)
HISTORY_UPDATABLE = frozenset({"old_text", "new_text", "reason", "metadata"})


def describe(url: str) -> str:
    """Where a URL points, without its password: host (or socket directory), port and database."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the Postgres server named by MARK_STORE_URL"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"Postgres (database {info.get('dbname') or info.get('user') or '?'} at {host}{port})"


def vec(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, Vector):
        return value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def f32(vector: np.ndarray | None) -> np.ndarray | None:
    return None if vector is None else np.ascontiguousarray(vector, dtype=np.float32)


def _as_read(value: Any) -> Any:
    return value


#: Postgres rows as the store's models (``decode.memory(row)``, ...): psycopg already hands timestamptz over as
#: datetime and jsonb as Python values, so nothing is left to convert.
decode = RowDecoder(time=_as_read, json=_as_read)


def _json_text(value: str | None) -> Any:
    return None if value is None else json.loads(value)


#: Rows read with `CANDIDATE_COLUMNS`: the same, but the JSON columns arrive as text.
candidate_decode = RowDecoder(time=_as_read, json=_json_text)


def filter_sql(flt: MemoryFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (after the user scope) of a memory filter, with its parameters."""
    where = ["status = ANY(%s)"]
    params: list[Any] = [list(flt.statuses)]
    if flt.kinds:
        where.append("kind = ANY(%s)")
        params.append(list(flt.kinds))
    if flt.session_id is not None:
        where.append("session_id = %s")
        params.append(flt.session_id)
    if flt.agent_id is not None:
        where.append("agent_id = %s")
        params.append(flt.agent_id)
    if flt.since is not None:
        where.append("created_at >= %s")
        params.append(flt.since)
    if flt.until is not None:
        where.append("created_at <= %s")
        params.append(flt.until)
    if flt.ids is not None:
        where.append("id = ANY(%s)")
        params.append(list(flt.ids))
    return " AND ".join(where), params


def tsquery_sql(words: Sequence[str]) -> str:
    """A tsquery matching any of the words, each stemmed as the index stems ('english'); words are parameters."""
    return " || ".join(["plainto_tsquery('english', %s)"] * len(words))


def encode(column: str, value: Any) -> Any:
    if column in ("metadata", "source", "memory_ids") and not isinstance(value, str | type(None)):
        return Jsonb(value)
    if column == "embedding":
        return f32(value)
    return value


#: Fields written by an insert, after ``user_key`` (each table's vector, if any, comes last, from elsewhere).
INSERT_FIELDS = {
    "mark_memories": (
        "id user_id agent_id session_id kind text status created_at updated_at last_confirmed_at confirm_count "
        "last_recalled_at recall_count trust valid_from valid_until superseded_by source metadata embedding_model"
    ).split(),
    "mark_turns": (
        "id user_id agent_id session_id role content created_at extraction_status attempts last_error metadata "
        "outdated_by"
    ).split(),
    "mark_history": "id memory_id user_id event old_text new_text reason actor created_at metadata".split(),
    "mark_feedback": "id user_id response_id memory_ids value comment created_at".split(),
    "mark_forgotten": ("id user_id memory_id kind fingerprint text_hash before_seq reason actor created_at".split()),
}


def insert_columns(table: str, extra: Sequence[str] = ()) -> list[str]:
    """The columns a record's insert writes: its user key, its fields (`INSERT_FIELDS`), then ``extra``."""
    return ["user_key", *INSERT_FIELDS[table], *extra]


def insert_sql(table: str, extra: Sequence[str] = ()) -> str:
    """INSERT of one record, columns as `insert_columns`."""
    columns = insert_columns(table, extra)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"


def copy_sql(table: str, columns: Sequence[str]) -> str:
    """A binary COPY of records into ``columns`` (a bulk write: less time per row than pipelined INSERTs; the
    writer sets the columns' types)."""
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"


def _as_json_text(text: str) -> str:
    return text


#: Empty containers as jsonb parameters whose JSON text is written already.
_EMPTY_OBJECT, _EMPTY_ARRAY = Jsonb("{}", _as_json_text), Jsonb("[]", _as_json_text)


def param(value: Any) -> Any:
    """A field's value as a parameter: enums by value, models and containers as jsonb.

    A model's JSON is written by pydantic (`model_dump_json`, in Rust) and an empty container's is a constant: a bulk
    write dumped three of them per memory with `json.dumps`, ~6 µs: a fifth of its Python time per memory."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return Jsonb(value.model_dump_json(), _as_json_text)
    if isinstance(value, dict | list):
        if value:
            return Jsonb(value)
        return _EMPTY_OBJECT if isinstance(value, dict) else _EMPTY_ARRAY
    return value


#: Values passed to psycopg as they are (`param` would return them unchanged): checked by exact type first, so a bulk
#: write's rows skip `param`'s isinstance chain for nearly every field.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), datetime, bytes})


@functools.cache
def _fields_of(table: str, mapping: bool) -> Callable[[Any], tuple[Any, ...]]:
    """One C-level call that reads every `INSERT_FIELDS` value of a record (a model's attributes or a mapping's
    keys), ``user_id`` first."""
    names = ("user_id", *INSERT_FIELDS[table])
    return operator.itemgetter(*names) if mapping else operator.attrgetter(*names)


def values(table: str, record: BaseModel | Mapping[str, Any], *extra: Any) -> list[Any]:
    """The parameters of `insert_sql(table)` for one record (a model or a mapping with a ``user_id``)."""
    user_id, *fields = _fields_of(table, isinstance(record, Mapping))(record)
    return [user_key(user_id), *(v if type(v) in _PLAIN_TYPES else param(v) for v in fields), *extra]
