"""Recall: the one pipeline that turns a user's memory into a token-budgeted context block.

Two layers are read, so nothing the user said is lost when extraction misses it:

- **notes**: the MARK agents' refined memories (hybrid, decay-ranked `MemoryStore.search`);
- **episodes**: the raw turns themselves, the user's and the assistant's (`MemoryStore.search_episodes`).

While the user's whole history fits the budget it is all given, in order, with the notes on top (ConvoMem's
finding: full context wins on small histories). Beyond that, the best notes take up to `note_share` of the
budget, each only if it is as close to the query as the typical episode excerpt it would displace, and the rest
is filled with episode excerpts (hybrid search, where a turn next to a match shares its
score: an answer rarely repeats the question's words): each hit with the turn it answers (or the answer it got),
picked with a penalty for sessions already represented so a question whose evidence is spread over sessions
gets every piece a chance. A turn whose fact a note superseded is shown as outdated, never as current.

Used by `MemoryAgent.chat` / `recall`, the REPL, the FastAPI example and the evaluator's `mark` method.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mark_agents.config import AgentConfig
from mark_agents.llm import Usage, estimate_tokens
from mark_agents.prompts import EPISODES_TITLE, MEMORY_BLOCK_INTRO, SECTION_TITLES
from memory_store import AsyncMemoryStore, EpisodeHit, MemoryStore, ScoreBreakdown, SearchHit, Turn
from memory_store.forgetting import MARKER, ForgetGuard
from memory_store.ids import short_id

Layer = Literal["note", "episode", "history"]

#: Tokens a history line costs beside its words (speaker, newline), a floor used to tell a small history early.
HISTORY_LINE_TOKENS = 4
#: Share of the budget the notes may take when the history does not fit (the rest goes to episodes).
NOTE_SHARE = 0.35
#: A note enters the block beside episode excerpts only if it is as close to the query as the median of this many
#: best episode hits (`_note_bar`).
NOTE_BAR_HITS = 20
#: Episode candidates considered per query.
EPISODE_CANDIDATES = 80
#: A turn shorter than this (characters) is shown with the turn before it: "Yes, on Thursdays" needs its question.
SHORT_TURN_CHARS = 80
#: Diversity: a hit from a session that already gave k > SESSION_FREE excerpts counts
#: score / (1 + SESSION_PENALTY * (k - SESSION_FREE)).
SESSION_FREE = 5
SESSION_PENALTY = 0.5


#: Embeds each recall's query in the background while the keyword searches run (torch and SQLite release the GIL;
#: the embedder encodes one query on one thread, so the other core is free for SQLite).
_DENSE_PREP = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mark-recall-dense")


def _embed_soon(store: MemoryStore, query: str) -> Future[np.ndarray] | None:
    """The query's vector, computed in the background (a chat turn's message was embedded when it was stored: then
    it comes from the store's cache of recent vectors)."""
    text = query.strip()
    return _DENSE_PREP.submit(lambda: store.embed([text])[0]) if text else None


class RecalledMemory(BaseModel):
    """A note that reached the block."""

    id: str
    text: str
    kind: str
    status: str
    score: float
    explain: ScoreBreakdown | None = None
    source_turn_ids: list[str] = Field(default_factory=list)
    why: str = ""


class RecalledTurn(BaseModel):
    """A raw turn that reached the block: a search hit, the context of one, or part of the whole history."""

    id: str
    layer: Literal["episode", "history"]
    role: str
    text: str
    session_id: str | None = None
    created_at: datetime | None = None
    score: float = 0.0
    outdated_by: str | None = None
    why: str = ""


class Recall(BaseModel):
    """A ready context block and what is in it (notes best first, turns in conversation order)."""

    text: str = ""
    #: "history": the whole history fitted; "retrieval": notes and episode excerpts were chosen.
    mode: Literal["empty", "history", "retrieval"] = "empty"
    memories: list[RecalledMemory] = Field(default_factory=list)
    turns: list[RecalledTurn] = Field(default_factory=list)
    tokens: int = 0
    budget_tokens: int = 0
    usage: Usage = Field(default_factory=Usage)  # recall makes no LLM call; kept for a uniform API

    @property
    def turn_ids(self) -> list[str]:
        """Every turn whose words are in the block, directly or as the source of a note in it."""
        seen = dict.fromkeys(t.id for t in self.turns)
        for m in self.memories:
            seen.update(dict.fromkeys(m.source_turn_ids))
        return list(seen)

    def explain_lines(self) -> list[str]:
        """One line per item: which layer it came from and why (the REPL's /why)."""
        lines = [f"mode: {self.mode} ({self.tokens} of {self.budget_tokens} tokens)"]
        lines += [f"note    {short_id(m.id)}  {m.why}: {m.text}" for m in self.memories]
        lines += [f"{t.layer:<7} {short_id(t.id)}  {t.why}: {t.role}: {t.text[:100]}" for t in self.turns]
        return lines


def _quote(text: str) -> str:
    # Memories are data: keep them on one line and unable to close the block they sit in.
    return " ".join(text.replace("<", "‹").replace(">", "›").split())


def _speaker(turn: Turn) -> str:
    name = turn.metadata.get("speaker") if isinstance(turn.metadata, dict) else None
    if isinstance(name, str) and name.strip():
        return _quote(name)[:40]
    return {"user": "User", "assistant": "Assistant"}.get(turn.role, turn.role.capitalize())


def _turn_line(turn: Turn, outdated_note: str | None = None) -> str:
    line = f"{_speaker(turn)}: {_quote(turn.content)}"
    if turn.outdated_by:
        line += " [outdated" + (f"; now: {_quote(outdated_note)}" if outdated_note else "") + "]"
    return line


def _session_header(session_id: str | None, first: Turn) -> str:
    date = first.metadata.get("date") if isinstance(first.metadata, dict) else None
    when = str(date) if date else first.created_at.strftime("%Y-%m-%d %H:%M")
    return f"[conversation {_quote(session_id or '-')[:60]}, {when}]"


def _note_lines(hits: Sequence[SearchHit]) -> list[str]:
    lines: list[str] = []
    for kind, title in SECTION_TITLES.items():
        group = [h for h in hits if h.memory.kind.value == kind]
        if not group:
            continue
        lines.append(f"{title}:")
        for h in group:
            flag = " (disputed)" if h.memory.status.value == "disputed" else ""
            lines.append(f"- {_quote(h.memory.text)}{flag}")
    return lines


def _episode_lines(turns: Sequence[Turn], outdated: dict[str, str]) -> list[str]:
    """Turns grouped by conversation (in store order), each conversation under a header with its date."""
    lines: list[str] = []
    ordered = sorted(turns, key=lambda t: t.seq or 0)
    by_session: dict[str | None, list[Turn]] = {}
    for t in ordered:
        by_session.setdefault(t.session_id, []).append(t)
    for session_id, group in sorted(by_session.items(), key=lambda kv: kv[1][0].seq or 0):
        lines.append(_session_header(session_id, group[0]))
        prev_seq: int | None = None
        for t in group:
            if prev_seq is not None and t.seq is not None and t.seq > prev_seq + 1:
                lines.append("…")
            lines.append(_turn_line(t, outdated.get(t.outdated_by or "")))
            prev_seq = t.seq
    return lines


def format_block(notes: Sequence[SearchHit], turns: Sequence[Turn] = (), outdated: dict[str, str] | None = None) -> str:
    """The context block: notes by kind, then conversation excerpts; empty when there is nothing."""
    if not notes and not turns:
        return ""
    lines = ["<memories>", MEMORY_BLOCK_INTRO, *_note_lines(notes)]
    if turns:
        lines.append(EPISODES_TITLE)
        lines += _episode_lines(turns, outdated or {})
    lines.append("</memories>")
    return "\n".join(lines)


def _note_why(hit: SearchHit) -> str:
    b = hit.explain
    if b is None:
        return f"note ({hit.memory.kind.value}), score {hit.score:.2f}"
    ranks = ", ".join(
        f"{name} rank {r}" for name, r in (("dense", b.dense_rank), ("keyword", b.keyword_rank)) if r is not None
    )
    kind = hit.memory.kind.value
    return f"note ({kind}) score {b.final:.2f}: similarity {b.similarity:.2f}, {ranks}, recency {b.recency:.2f}"


def _hit_why(hit: EpisodeHit) -> str:
    ranks = ", ".join(
        f"{name} rank {r}" for name, r in (("dense", hit.dense_rank), ("keyword", hit.keyword_rank)) if r is not None
    )
    if not ranks:  # found by neither ranker: lent its score by the turns around it (scoring.neighbour_smoothed)
        return f"episode hit score {hit.score:.2f} (next to turns that match)"
    return f"episode hit score {hit.score:.2f} ({ranks})"


def _diverse(hit: EpisodeHit, per_session: dict[str | None, int]) -> float:
    """A hit's score, lowered once its session already gave `SESSION_FREE` excerpts: evidence spread over several
    sessions gets each piece a chance, while a session that holds many relevant turns is not cut off early."""
    extra = max(0, per_session.get(hit.turn.session_id, 0) - SESSION_FREE)
    return hit.score / (1 + SESSION_PENALTY * extra)


def _wants(turn: Turn) -> tuple[bool, bool]:
    """Which neighbours an excerpt of `turn` shows: the turn before a short one (an answer keeps its question),
    the turn after a question (a question keeps its answer)."""
    return len(turn.content) < SHORT_TURN_CHARS, turn.content.rstrip().endswith("?")


def _windows(
    store: MemoryStore, user_id: str, hits: Sequence[EpisodeHit]
) -> dict[str, tuple[Turn | None, Turn | None]]:
    """The neighbours the hits' excerpts show, read for all of them at once (one read per hit cost ~0.1 ms each,
    ninety per recall)."""
    ids = [h.turn.id for h in hits if h.turn.session_id is not None and any(_wants(h.turn))]
    known = {h.turn.id: h.neighbours for h in hits if h.neighbours is not None}
    return store.episode_neighbours(user_id, ids, known=known) if ids else {}


def _window(
    store: MemoryStore, hit: Turn, excluded: set[str], near: dict[str, tuple[Turn | None, Turn | None]]
) -> list[Turn]:
    """The hit with the neighbours `_wants` asks for, from `near` (read ahead), else from the store."""
    before, after = _wants(hit)
    if not before and not after:
        return [hit]
    if hit.id in near:
        prev, nxt = near[hit.id]
        window = [t for t in (prev if before else None, hit, nxt if after else None) if t is not None]
    else:
        window = store.episode_window(hit, before=int(before), after=int(after))
    return [t for t in window if t.id not in excluded]


def _note_bar(hits: Sequence[EpisodeHit]) -> float | None:
    """How close to the query a note must be to earn a place beside the episode excerpts: a note takes the room of
    turns the user actually said, so it must be at least as close as the typical excerpt it displaces (the median
    similarity of the best `NOTE_BAR_HITS` episode hits). With the 0.5B model's notes on a real dialogue (LoCoMo 1,
    basic facts) the best notes without this bar pushed out excerpts that held the evidence: evidence recall 59.7%
    with them, 68.3% with the bar, 70.2% with no notes at all on the same store."""
    sims = sorted((h.similarity for h in hits[:NOTE_BAR_HITS]), reverse=True)
    return sims[len(sims) // 2] if sims else None


def _shown(turns: Sequence[Turn], guard: ForgetGuard | None) -> list[Turn]:
    """Turns as recall may show them: an old clause about a forgotten fact redacted (forgetting did it in the
    store already; this is the second line of defence), and a turn nothing is left of left out."""
    out = []
    for t in turns:
        if guard is not None:
            t = guard.guard_turn(t)
        if MARKER in t.content and not ForgetGuard.has_content(t.content):
            continue
        out.append(t)
    return out


def _outdated_notes(store: MemoryStore, user_id: str, turns: Sequence[Turn]) -> dict[str, str]:
    out: dict[str, str] = {}
    for note_id in {t.outdated_by for t in turns if t.outdated_by}:
        try:
            out[note_id] = store.get(note_id, user_id).text
        except Exception:  # the superseding note was forgotten since: the turn is still marked outdated
            continue
    return out


def recall(
    store: MemoryStore,
    query: str,
    user_id: str,
    *,
    session_id: str | None = None,
    recent_messages: int = 0,
    budget_tokens: int = 1500,
    limit: int = 12,
    exclude_turn_ids: Sequence[str] = (),
    note_share: float = NOTE_SHARE,
    episode_mode: str = "hybrid",
) -> Recall:
    """The user's memory for a query as one block within `budget_tokens`: whole history if it fits, else the best
    notes and episode excerpts. `exclude_turn_ids`: turns the caller already shows (the current message), never
    repeated in the block; with `session_id`, so are that session's `recent_messages` newest turns (a chat prompt
    shows them as history). `episode_mode`: how episodes are searched (hybrid, dense or keyword; the single rankers
    are there to measure the fusion against)."""
    excluded = set(exclude_turn_ids)
    if session_id is not None and recent_messages > 0:
        recent = store.turns(user_id, session_id=session_id, limit=recent_messages, newest_first=True)
        excluded.update(t.id for t in recent)
    # The query is embedded once for both layers (an embedding costs more than either search), in the background.
    qv = _embed_soon(store, query)
    guard = store.forget_guard(user_id)
    # A turn costs at least HISTORY_LINE_TOKENS: more turns than the budget allows cannot fit, so stop counting.
    n_turns, chars = store.history_size(user_id, cap=budget_tokens // HISTORY_LINE_TOKENS + 1)
    notes: list[SearchHit] | None = None  # forgotten facts are filtered by the search itself

    if n_turns and estimate_tokens("x" * chars) + HISTORY_LINE_TOKENS * n_turns <= budget_tokens:
        history = _shown([t for t in store.turns(user_id, limit=n_turns + 1) if t.id not in excluded], guard)
        outdated = _outdated_notes(store, user_id, history)
        notes = store.search(query, user_id, limit=limit, explain=True, query_embedding=qv)
        chosen = _fit_notes(notes, history, outdated, budget_tokens)
        text = format_block(chosen, history, outdated)
        if estimate_tokens(text) <= budget_tokens:
            why = f"whole history ({n_turns} turns) fits the budget"
            return _result(text, "history", chosen, [(t, "history", 0.0, why) for t in history], budget_tokens)

    hits: list[EpisodeHit] = []
    near: dict[str, tuple[Turn | None, Turn | None]] = {}
    if n_turns:  # episodes first: their keyword search runs while the query is still being embedded
        hits = store.search_episodes(
            query, user_id, limit=EPISODE_CANDIDATES, exclude_ids=list(excluded), mode=episode_mode, query_embedding=qv
        )
        near = _windows(store, user_id, hits)
    note_budget = int(budget_tokens * note_share) if n_turns else budget_tokens
    bar = _note_bar(hits)
    if notes is None:
        notes = store.search(query, user_id, limit=limit, explain=True, query_embedding=qv, min_similarity=bar)
    elif bar is not None:
        notes = [n for n in notes if n.explain is None or n.explain.similarity >= bar]
    chosen = _fit_notes(notes, [], {}, note_budget)
    used = estimate_tokens(format_block(chosen))
    if not n_turns:
        return _result(format_block(chosen), "retrieval" if chosen else "empty", chosen, [], budget_tokens)

    picked: dict[str, tuple[Turn, str, float, str]] = {}
    per_session: dict[str | None, int] = {}
    # Best diverse score first, ties to the better-ranked hit. Scores only fall as sessions fill up, so a lazy
    # heap is exact: a popped hit whose score has not fallen is the best; otherwise it goes back re-scored.
    queue = [(-h.score, n) for n, h in enumerate(hits)]
    heapq.heapify(queue)
    overhead = estimate_tokens(EPISODES_TITLE) + 1 + (0 if chosen else estimate_tokens(MEMORY_BLOCK_INTRO) + 6)
    used += overhead
    while queue:
        stored, n = heapq.heappop(queue)
        best = hits[n]
        current = _diverse(best, per_session)
        if current < -stored:
            heapq.heappush(queue, (-current, n))
            continue
        if best.turn.id in picked:
            continue
        if used + estimate_tokens(_turn_line(best.turn)) + 3 > budget_tokens:
            continue  # not even the hit alone fits (its window costs more): no need to read the window
        window = [t for t in _shown(_window(store, best.turn, excluded, near), guard) if t.id not in picked]
        if best.turn.id not in {t.id for t in window}:
            continue
        new_session = all(t.session_id != best.turn.session_id for t, *_ in picked.values())
        cost = sum(estimate_tokens(_turn_line(t)) + 1 for t in window) + (16 if new_session else 2)
        if used + cost > budget_tokens:
            continue
        used += cost
        per_session[best.turn.session_id] = per_session.get(best.turn.session_id, 0) + 1
        for t in window:
            if t.id == best.turn.id:
                picked[t.id] = (t, "episode", best.score, _hit_why(best))
            else:
                picked[t.id] = (t, "episode", 0.0, f"context of episode hit {short_id(best.turn.id)}")
    turns = [p[0] for p in picked.values()]
    outdated = _outdated_notes(store, user_id, turns)
    text = format_block(chosen, turns, outdated)
    # The estimate per line is conservative but the rendering adds headers: trim the weakest excerpts if over.
    items = sorted(picked.values(), key=lambda p: p[2])
    while items and estimate_tokens(text) > budget_tokens:
        items.pop(0)
        turns = [p[0] for p in items]
        text = format_block(chosen, turns, outdated)
    mode = "retrieval" if (chosen or items) else "empty"
    return _result(text, mode, chosen, list(items), budget_tokens)


async def recall_async(
    store: AsyncMemoryStore,
    query: str,
    user_id: str,
    config: AgentConfig,
    *,
    session_id: str | None = None,
    budget_tokens: int | None = None,
    exclude_turn_ids: Sequence[str] = (),
) -> Recall:
    """:func:`recall` as the agent runs it (its budget, limit, episode mode and chat history length from `config`),
    for async callers: the whole pipeline (a handful of store reads, each cheap) in one worker thread rather than
    one thread hop per read."""
    return await asyncio.to_thread(
        recall,
        store.sync,
        query,
        user_id,
        session_id=session_id,
        recent_messages=config.history_messages,
        budget_tokens=budget_tokens if budget_tokens is not None else config.recall_budget_tokens,
        limit=config.recall_limit,
        exclude_turn_ids=exclude_turn_ids,
        episode_mode=config.recall_episode_mode,
    )


def _fit_notes(
    notes: Sequence[SearchHit], turns: Sequence[Turn], outdated: dict[str, str], budget: int
) -> list[SearchHit]:
    chosen: list[SearchHit] = []
    for hit in notes:
        if estimate_tokens(format_block([*chosen, hit], turns, outdated)) > budget:
            break
        chosen.append(hit)
    return chosen


def _result(
    text: str,
    mode: str,
    notes: Sequence[SearchHit],
    turns: Sequence[tuple[Turn, str, float, str]],
    budget: int,
) -> Recall:
    ordered = sorted(turns, key=lambda p: p[0].seq or 0)
    return Recall(
        text=text,
        mode=mode if text else "empty",  # type: ignore[arg-type]
        tokens=estimate_tokens(text) if text else 0,
        budget_tokens=budget,
        memories=[
            RecalledMemory(
                id=h.memory.id,
                text=h.memory.text,
                kind=h.memory.kind.value,
                status=h.memory.status.value,
                score=h.score,
                explain=h.explain,
                source_turn_ids=list(h.memory.source.turn_ids),
                why=_note_why(h),
            )
            for h in notes
        ],
        turns=[
            RecalledTurn(
                id=t.id,
                layer=layer,  # type: ignore[arg-type]
                role=t.role,
                text=t.content,
                session_id=t.session_id,
                created_at=t.created_at,
                score=score,
                outdated_by=t.outdated_by,
                why=why,
            )
            for t, layer, score, why in ordered
        ],
    )
