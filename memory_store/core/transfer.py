"""Transfer: export a user's (or every user's) data as JSON lines, and import such a file in one transaction."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import IO

from memory_store import forgetter
from memory_store.core.base import StoreBase
from memory_store.errors import Conflict, InvalidInput
from memory_store.importing import EXPORT_FORMAT, EXPORT_VERSION, embedding_problem, read_export
from memory_store.validation import check_scope_id


def _line(record_type: str, record: dict) -> str:
    return json.dumps({"type": record_type, **record}, ensure_ascii=False, sort_keys=True) + "\n"


class TransferOps(StoreBase):
    def users(self) -> list[str]:
        """Admin: every user id with data in this store."""
        return self.backend.users()

    def export_jsonl(self, out: IO[str] | str | Path, *, user_id: str | None = None, embeddings: bool = True) -> int:
        """Write memories, history, turns and feedback as JSON lines; returns the number of records.

        With `user_id` only that user's data (the normal case); without it, every user's (admin).
        """
        if isinstance(out, str | Path):
            with open(out, "w", encoding="utf-8") as fh:
                return self.export_jsonl(fh, user_id=user_id, embeddings=embeddings)
        users = [check_scope_id(user_id)] if user_id is not None else self.users()
        header = {"type": "header", "format": EXPORT_FORMAT, "version": EXPORT_VERSION}
        out.write(json.dumps(header) + "\n")
        n = 0
        for uid in users:
            for m, raw in self.backend.export_memories(uid):
                rec = m.model_dump(mode="json")
                if embeddings and raw:
                    rec["embedding"] = base64.b64encode(raw).decode("ascii")
                out.write(_line("memory", rec))
                n += 1
            for e in self.backend.history(uid, None, 10**9, 0):
                out.write(_line("history", e.model_dump(mode="json")))
                n += 1
            for t in self.backend.turns(uid, None, None, 10**9, 0):
                out.write(_line("turn", t.model_dump(mode="json")))
                n += 1
            for f in self.backend.feedback(uid):
                out.write(_line("feedback", f.model_dump(mode="json")))
                n += 1
        return n

    def import_jsonl(self, src: IO[str] | str | Path, *, replace: bool = False) -> int:
        """Load an export. Every line is validated before anything is written; the import is one transaction.

        Embeddings of the store's model must have its size (a vector of another size would wedge the index for
        every user); embeddings of another model, or none, are computed again so the index stays one space.
        """
        name = str(src) if isinstance(src, str | Path) else getattr(src, "name", "<stream>")
        if isinstance(src, str | Path):
            try:
                with open(src, encoding="utf-8") as fh:
                    return self.import_jsonl(fh, replace=replace)
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{name}: cannot read: {exc}") from None
        parsed = read_export(src, name)
        forgetter.guard_import(self, parsed)  # a backup from before a forget does not bring the fact back
        events, turns, feedback = parsed.events, parsed.turns, parsed.feedback
        model_id, dim = self.embedder.model_id, self.embedder.dim
        for item in parsed.memories:
            if item.vector is not None and item.memory.embedding_model == model_id:
                problem = embedding_problem(item.vector, dim)
                if problem:
                    raise InvalidInput(
                        f"{name}, line {item.line}: {problem}, but {model_id} makes {dim}-dimensional unit vectors; "
                        "nothing was imported"
                    )
        memories = [(i.memory, i.vector) for i in parsed.memories]
        redo = [i for i, (m, v) in enumerate(memories) if v is None or m.embedding_model != model_id]
        if redo:
            fresh = self.embed([memories[i][0].text for i in redo])
            for i, v in zip(redo, fresh, strict=True):
                memories[i] = (memories[i][0].model_copy(update={"embedding_model": model_id}), v)
        existing = self.backend.memory_owners([m.id for m, _ in memories])
        if existing and not replace:
            raise InvalidInput(
                f"{name}: {len(existing)} memories already exist (e.g. {sorted(existing)[0]}); "
                "use replace to overwrite them"
            )
        turn_vectors = self.embed([t.content for t in turns]) if turns else None
        try:
            with self.backend.transaction() as tx:
                for mid, owner in existing.items():
                    tx.delete_memory(owner, mid)
                tx.insert_memories([m for m, _ in memories], [v for _, v in memories])
                if events:
                    tx.delete_history(events)
                    tx.add_history(events)
                if turns:
                    tx.delete_turns(turns)
                    tx.add_turns(turns, turn_vectors, model_id)
                for f in feedback:
                    tx.delete_feedback(f)
                    tx.add_feedback(f)
        except Conflict as exc:
            raise InvalidInput(f"{name}: conflicts with what is stored ({exc}); nothing was imported") from None
        return len(memories) + len(events) + len(turns) + len(feedback)
