"""``results.jsonl``: one row per question x size x method, append-only, and the resume point.

A killed run may leave a truncated last line: it is ignored on reading and the next append starts on a
fresh line. Rows with an ``error`` are retried on resume; the last row of a key wins.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from mark_agents.llm import Usage

#: (question id, size, method, repeat): a batched run may ask a question again at a size, in another haystack
Key = tuple[str, int, str, int]


class Answered(BaseModel):
    """What answering one question measured, the same in an ``Answer`` and in its results row. Tokens follow the
    reference's accounting: ``usage`` is the final answer call's (prompt, completion and cached tokens; cached
    None = not reported; the prompt's estimate when the endpoint did not say or was not called); the helper passes
    of two-stage methods are apart (``helper_usage``); :attr:`total` covers every call."""

    usage: Usage = Field(default_factory=Usage)
    helper_usage: Usage = Field(default_factory=Usage)
    helper_model: str = ""
    #: answered without a final call (block_based found nothing relevant): no input tokens to average
    canned: bool = False
    #: wall time of choosing the context and answering (``usage.latency_ms`` is the answer call's alone)
    latency_ms: float = 0.0
    retrieval_ms: float = 0.0
    #: the history did not fit the model's window: not asked, not judged, out of the accuracy, counted apart
    context_overflow: bool = False
    model: str = ""
    route: str = ""
    #: LLM tokens spent indexing the haystack (mark's memory building), shared by its questions
    index_tokens: int = 0
    error: str | None = None

    @property
    def total(self) -> Usage:
        """Every call of the answer: the helper passes and the final call (cost, calls)."""
        return self.usage + self.helper_usage


class ResultRow(Answered):
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
    judge_tokens: int = 0
    evidence_mids: list[str] = Field(default_factory=list)
    evidence_in_prompt: list[str] = Field(default_factory=list)
    evidence_recall: float | None = None
    n_conversations: int = 0
    haystack_id: str = ""
    retrieval_only: bool = False
    prompt_version: str = ""
    #: benchmark-specific scores of the answer (LoCoMo: ``f1``, ``bleu1``)
    metrics: dict[str, float] = Field(default_factory=dict)
    ts: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def key(self) -> Key:
        return (self.qid, self.context_size, self.method, self.repeat)

    @model_validator(mode="before")
    @classmethod
    def _flat_usage(cls, data: Any) -> Any:
        """Rows written before the usage was kept whole (flat ``input_tokens`` ...) still load, for resuming."""
        if not isinstance(data, dict) or "usage" in data or "input_tokens" not in data:
            return data
        data = dict(data)
        data["usage"] = {
            "prompt_tokens": data.pop("input_tokens", 0),
            "completion_tokens": data.pop("output_tokens", 0),
            "cached_tokens": data.pop("cached_tokens", None),
            "cost_usd": data.pop("cost_usd", 0.0),
            "calls": data.pop("calls", 0),
        }
        data["helper_usage"] = {
            "prompt_tokens": data.pop("helper_input_tokens", 0),
            "completion_tokens": data.pop("helper_output_tokens", 0),
        }
        return data


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
