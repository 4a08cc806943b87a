"""Reading an export file (`mark memory export`): every line parsed and checked before the store writes anything.

A line is checked as the store checks any write (ids, texts, turns through the same `check_turn` as
`add_turns`); a record id given twice is refused by line number. Whether an embedding fits the store's model is
checked by the store (`embedding_problem`), which knows the model.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from memory_store.errors import InvalidInput, first_error
from memory_store.models import Feedback, HistoryEvent, Memory, Turn
from memory_store.validation import check_optional_id, check_scope_id, check_text, check_turn

EXPORT_FORMAT = "mark-memory-export"
EXPORT_VERSION = 1
#: A stored embedding is L2-normalised (a dot product is the cosine); a vector this far from unit length is not one.
UNIT_TOLERANCE = 1e-2


@dataclass
class ImportedMemory:
    memory: Memory
    vector: np.ndarray | None
    line: int


@dataclass
class ExportFile:
    """The records of an export file, all checked, in file order."""

    memories: list[ImportedMemory] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)


def read_export(src: IO[str], name: str) -> ExportFile:
    """Parse and check every line; the first bad one raises InvalidInput naming the file and the line."""
    out = ExportFile()
    seen: dict[tuple[str, str], int] = {}
    seen_header = False
    for lineno, line in enumerate(src, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise InvalidInput("not a JSON object")
            kind = rec.pop("type")
            if kind == "header":
                if rec.get("format") != EXPORT_FORMAT:
                    raise InvalidInput(f"not a {EXPORT_FORMAT} file")
                seen_header = True
                continue
            record_id = _read_record(kind, rec, lineno, out)
            first = seen.setdefault((kind, record_id), lineno)
            if first != lineno:
                raise InvalidInput(f"{kind} {record_id!r} is given twice (first on line {first})")
        except KeyError as exc:
            raise InvalidInput(f"{name}, line {lineno}: missing field {exc.args[0]!r}") from None
        except (ValueError, TypeError, AttributeError) as exc:  # InvalidInput and pydantic's errors are ValueErrors
            msg = first_error(exc) if str(exc) else type(exc).__name__
            raise InvalidInput(f"{name}, line {lineno}: {msg}") from None
    if not seen_header:
        raise InvalidInput(f"{name}: missing the {EXPORT_FORMAT} header line")
    return out


def _read_record(kind: object, rec: dict, lineno: int, out: ExportFile) -> str:
    """Check one record and add it to ``out``; returns its id (for the duplicate check)."""
    if kind == "memory":
        emb = rec.pop("embedding", None)
        m = Memory.model_validate(rec)
        check_scope_id(m.id, "memory id")
        check_scope_id(m.user_id)
        check_optional_id(m.agent_id, "agent id")
        check_optional_id(m.session_id, "session id")
        check_text(m.text)
        out.memories.append(ImportedMemory(m, decode_embedding(emb) if emb is not None else None, lineno))
        return m.id
    if kind == "history":
        e = HistoryEvent.model_validate(rec)
        check_scope_id(e.id, "history id")
        check_scope_id(e.user_id)
        check_scope_id(e.memory_id, "memory id")
        out.events.append(e)
        return e.id
    if kind == "turn":
        if not rec.get("id"):
            raise InvalidInput("turn id is empty")
        t = Turn.model_validate(check_turn(rec))  # the same check as every other write of a turn
        out.turns.append(t)
        return t.id
    if kind == "feedback":
        f = Feedback.model_validate(rec)
        check_scope_id(f.id, "feedback id")
        check_scope_id(f.user_id)
        if f.value not in (1, -1):
            raise InvalidInput("feedback value must be +1 or -1")
        out.feedback.append(f)
        return f.id
    raise InvalidInput(f"unknown record type {kind!r}")


def decode_embedding(text: object) -> np.ndarray:
    """An exported embedding: base64 of float32 values."""
    if not isinstance(text, str):
        raise InvalidInput("embedding must be base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("embedding is not valid base64") from None
    if len(raw) % 4:
        raise InvalidInput(f"embedding is {len(raw)} bytes, not a whole number of float32 values")
    return np.frombuffer(raw, dtype=np.float32)


def embedding_problem(vector: np.ndarray, dim: int) -> str | None:
    """Why a vector cannot stand for a text of a model making ``dim``-dimensional unit vectors (None: it can)."""
    if vector.size != dim:
        return f"the embedding has {vector.size} dimensions"
    if not np.all(np.isfinite(vector)):
        return "the embedding holds NaN or infinite values"
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        return f"the embedding is not unit length (norm {norm:.3g})"
    return None
