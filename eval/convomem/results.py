"""``results.jsonl``: one row per question x size x method, append-only, and the resume point.

A killed run may leave a truncated last line: it is ignored on reading and the next append starts on a
fresh line. Rows with an ``error`` are retried on resume; the last row of a key wins.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

#: (question id, size, method, repeat): a batched run may ask a question again at a size, in another haystack
Key = tuple[str, int, str, int]


class ResultRow(BaseModel):
    qid: str
    context_size: int
    method: str
    #: 0 the first time a question is asked at this size, 1 when it is asked again in another haystack ...
    repeat: int = 0
    category: str
    evidence_count: int
    question: str
    gold: str
    answer: str = ""
    correct: bool | None = None
    judge: str = "none"
    approximate: bool = False
    #: the final answer call's tokens (the reference's accounting); helper passes apart below
    input_tokens: int = 0
    output_tokens: int = 0
    #: cached prompt tokens of the final call; None = not reported by the endpoint or client
    cached_tokens: int | None = None
    helper_input_tokens: int = 0
    helper_output_tokens: int = 0
    helper_model: str = ""
    #: answered without a final call (block_based found nothing): no input tokens to average
    canned: bool = False
    latency_ms: float = 0.0
    retrieval_ms: float = 0.0
    cost_usd: float = 0.0
    calls: int = 0
    judge_tokens: int = 0
    #: LLM tokens spent indexing this row's haystack (mark's memory building), shared by its questions
    index_tokens: int = 0
    evidence_mids: list[str] = Field(default_factory=list)
    evidence_in_prompt: list[str] = Field(default_factory=list)
    evidence_recall: float | None = None
    #: the history did not fit the model's window: not asked, not judged, out of the accuracy, counted apart
    context_overflow: bool = False
    route: str = ""
    n_conversations: int = 0
    haystack_id: str = ""
    model: str = ""
    retrieval_only: bool = False
    prompt_version: str = ""
    error: str | None = None
    #: benchmark-specific scores of the answer (LoCoMo: ``f1``, ``bleu1``)
    metrics: dict[str, float] = Field(default_factory=dict)
    ts: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def key(self) -> Key:
        return (self.qid, self.context_size, self.method, self.repeat)


class ResultsFile:
    """Append-only JSON-lines file; every append is flushed and fsynced so a kill loses at most one row."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[Key, ResultRow]:
        rows: dict[Key, ResultRow] = {}
        if not self.path.exists():
            return rows
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = ResultRow.model_validate_json(line)
                except (ValidationError, json.JSONDecodeError, ValueError):
                    continue  # a line cut by a kill
                rows[row.key] = row
        return rows

    def completed(self) -> set[Key]:
        return {k for k, r in self.load().items() if r.error is None}

    def append(self, row: ResultRow) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        with self.path.open("a", encoding="utf-8") as fh:
            if needs_newline:
                fh.write("\n")
            fh.write(row.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
