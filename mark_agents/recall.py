"""Recall: hybrid, decay-ranked search turned into a token-budgeted memory block for a prompt."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mark_agents.llm import Usage, estimate_tokens
from mark_agents.prompts import MEMORY_BLOCK_INTRO, SECTION_TITLES
from memory_store import MemoryStore, ScoreBreakdown, SearchHit


class RecalledMemory(BaseModel):
    id: str
    text: str
    kind: str
    status: str
    score: float
    explain: ScoreBreakdown | None = None


class Recall(BaseModel):
    """A ready context block and the memories in it (best first)."""

    text: str = ""
    memories: list[RecalledMemory] = Field(default_factory=list)
    tokens: int = 0
    usage: Usage = Field(default_factory=Usage)  # recall makes no LLM call; kept for a uniform API


def _quote(text: str) -> str:
    # Memories are data: keep them on one line and unable to close the block they sit in.
    return " ".join(text.replace("<", "‹").replace(">", "›").split())


def format_block(hits: list[SearchHit]) -> str:
    if not hits:
        return ""
    lines = ["<memories>", MEMORY_BLOCK_INTRO]
    for kind, title in SECTION_TITLES.items():
        group = [h for h in hits if h.memory.kind.value == kind]
        if not group:
            continue
        lines.append(f"{title}:")
        for h in group:
            flag = " (disputed)" if h.memory.status.value == "disputed" else ""
            lines.append(f"- {_quote(h.memory.text)}{flag}")
    lines.append("</memories>")
    return "\n".join(lines)


def recall(
    store: MemoryStore,
    query: str,
    user_id: str,
    *,
    budget_tokens: int = 600,
    limit: int = 12,
    session_id: str | None = None,
) -> Recall:
    """The best memories for a query that fit the budget, as a block to put into a prompt."""
    hits = store.search(query, user_id, limit=limit, explain=True)
    chosen: list[SearchHit] = []
    for hit in hits:
        if estimate_tokens(format_block([*chosen, hit])) > budget_tokens:
            break
        chosen.append(hit)
    text = format_block(chosen)
    return Recall(
        text=text,
        tokens=estimate_tokens(text) if text else 0,
        memories=[
            RecalledMemory(
                id=h.memory.id,
                text=h.memory.text,
                kind=h.memory.kind.value,
                status=h.memory.status.value,
                score=h.score,
                explain=h.explain,
            )
            for h in chosen
        ],
    )
