"""A stored row as the store's models, written once for both engines: which column fills which field and what an
empty column stands for. How an engine keeps times and JSON (SQLite: epoch seconds and JSON text; Postgres:
timestamptz and jsonb, which the driver already decodes) stays in the engine, which hands it to `RowDecoder`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from memory_store.backend import Candidate
from memory_store.models import Feedback, HistoryEvent, Memory, MemoryKind, MemoryStatus, Source, Turn

#: Enum members by stored value: a dict lookup costs a fraction of the enum's own (search decodes ~50 rows).
_KINDS = {k.value: k for k in MemoryKind}
_STATUSES = {s.value: s for s in MemoryStatus}

#: A row of either engine: a ``sqlite3.Row`` or a psycopg dict row (both index by column name and have ``keys()``).
Row = Any


def _column_or_none(row: Row, column: str) -> Any:
    """A column that rows read before its migration may lack (a read-only SQLite file is never migrated)."""
    return row[column] if column in row.keys() else None  # noqa: SIM118 (sqlite3.Row has no __contains__ of names)


class RowDecoder:
    """Rows of one engine as models: ``time`` reads a timestamp column (None stays None), ``json`` a JSON column
    (an empty one gives None, and the field its default)."""

    __slots__ = ("json", "time")

    def __init__(self, *, time: Callable[[Any], datetime | None], json: Callable[[Any], Any]) -> None:
        self.time = time
        self.json = json

    def memory(self, r: Row) -> Memory:
        time, json = self.time, self.json
        source = json(r["source"])
        return Memory(
            id=r["id"],
            user_id=r["user_id"],
            agent_id=r["agent_id"],
            session_id=r["session_id"],
            kind=MemoryKind(r["kind"]),
            text=r["text"],
            status=MemoryStatus(r["status"]),
            created_at=time(r["created_at"]),
            updated_at=time(r["updated_at"]),
            last_confirmed_at=time(r["last_confirmed_at"]),
            confirm_count=r["confirm_count"] or 0,
            last_recalled_at=time(r["last_recalled_at"]),
            recall_count=r["recall_count"] or 0,
            trust=r["trust"],
            valid_from=time(r["valid_from"]),
            valid_until=time(r["valid_until"]),
            superseded_by=r["superseded_by"],
            source=Source.model_validate(source) if source else Source(),
            metadata=json(r["metadata"]) or {},
            embedding_model=r["embedding_model"] or "",
        )

    def candidate(self, r: Row) -> Candidate:
        """What ranking reads of a memory row; the whole `Memory` is decoded later, for the hits only."""
        time = self.time
        return Candidate(
            r,
            self.memory,
            id=r["id"],
            kind=_KINDS.get(r["kind"]) or MemoryKind(r["kind"]),
            status=_STATUSES.get(r["status"]) or MemoryStatus(r["status"]),
            session_id=r["session_id"],
            agent_id=r["agent_id"],
            created_at=time(r["created_at"]),
            last_confirmed_at=time(r["last_confirmed_at"]),
            last_recalled_at=time(r["last_recalled_at"]),
            confirm_count=r["confirm_count"] or 0,
            recall_count=r["recall_count"] or 0,
            trust=r["trust"],
        )

    def turn(self, r: Row) -> Turn:
        return Turn(
            id=r["id"],
            user_id=r["user_id"],
            agent_id=r["agent_id"],
            session_id=r["session_id"],
            role=r["role"],
            content=r["content"],
            created_at=self.time(r["created_at"]),
            extraction_status=r["extraction_status"],
            attempts=r["attempts"] or 0,
            last_error=r["last_error"],
            metadata=self.json(r["metadata"]) or {},
            outdated_by=_column_or_none(r, "outdated_by"),
            seq=_column_or_none(r, "seq"),
        )

    def history(self, r: Row) -> HistoryEvent:
        return HistoryEvent(
            id=r["id"],
            memory_id=r["memory_id"],
            user_id=r["user_id"],
            event=r["event"],
            old_text=r["old_text"],
            new_text=r["new_text"],
            reason=r["reason"] or "",
            actor=r["actor"] or "api",
            created_at=self.time(r["created_at"]),
            metadata=self.json(r["metadata"]) or {},
        )

    def feedback(self, r: Row) -> Feedback:
        return Feedback(
            id=r["id"],
            user_id=r["user_id"],
            response_id=r["response_id"] or "",
            memory_ids=self.json(r["memory_ids"]) or [],
            value=r["value"],
            comment=r["comment"] or "",
            created_at=self.time(r["created_at"]),
        )
