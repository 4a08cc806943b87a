"""``mark``: the product's own memory, measured. Each haystack is remembered by a `MemoryAgent`, each question
answered from exactly what `MemoryAgent.arecall` returns (the one recall pipeline of the product).

Every haystack gets its own user scope in a store under the run's output directory (never the user's own
memories); each conversation is remembered as a session. Remembering is indexing: excluded from latency as in
ConvoMem, its LLM tokens reported apart as ``index_tokens``.

``mark_extraction``:
- ``off``: the turns are stored and recalled as episodes; no LLM call at all (``--retrieval-only`` works);
- ``llm``: the MARK builder also extracts notes with the configured memory model first.

Evidence recall: an evidence message reached the prompt when its turn is in the block directly, or is a source
turn of a note in it (`Recall.turn_ids`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from mark_agents import MemoryAgent
from mark_agents.llm import Usage, estimate_message_tokens
from mark_eval.convomem.answerers.base import Answerer, AnswererContext, OncePerHaystack, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.schema import Haystack, HaystackMessage
from memory_store import CachedEmbedder, MemoryStore
from memory_store.errors import MarkError

#: Messages per extraction call while building notes (MARK's unit is 2 = one exchange; 6 costs a third of the
#: calls on long haystacks, which matters on a small local model).
CHUNK_MESSAGES = 6


class _Built:
    """What remembering a haystack produced: turn id -> message id, usage, failures."""

    def __init__(self) -> None:
        self.turn_to_mid: dict[str, str] = {}
        self.usage = Usage()
        self.failures = 0


def turn_message(msg: HaystackMessage, started_at: datetime | None = None) -> dict[str, Any]:
    """A haystack message as a message for `MemoryAgent.aremember`: User/Assistant become roles; a real name
    (LoCoMo's speakers) is kept as the turn's speaker, and a session's date as its time (a second per message,
    to keep the order) and as the date shown in recall."""
    role = "assistant" if msg.speaker.strip().lower() == "assistant" else "user"
    out: dict[str, Any] = {"role": role, "content": msg.text}
    if msg.name:
        out["speaker"] = msg.name
    if msg.date:
        out["date"] = msg.date
    if started_at is not None:
        out["created_at"] = started_at + timedelta(seconds=msg.msg_index)
    return out


class MarkMemory(Answerer):
    name = "mark"

    def __init__(self, ctx: AnswererContext) -> None:
        super().__init__(ctx)
        if ctx.mark_extraction not in ("off", "llm"):
            raise MarkError(f"unknown mark extraction {ctx.mark_extraction!r} (off, llm)")
        self._agent: MemoryAgent | None = None
        self._built = OncePerHaystack(self._build)

    def _get_agent(self) -> MemoryAgent:
        if self._agent is None:
            if self.ctx.settings is None:
                raise MarkError("method 'mark' needs the run's settings")
            if self.ctx.mark_extraction == "llm" and self.ctx.llm is None:
                raise MarkError("method 'mark' with --mark-extraction llm needs an LLM (or use off)")
            settings = self.ctx.settings
            agent_config = settings.agent.model_copy(update={"recall_episode_mode": self.ctx.retrieval})
            settings = settings.model_copy(update={"agent": agent_config})
            if self.ctx.work_dir is not None:
                home = self.ctx.work_dir / "mark-home"
                home.mkdir(parents=True, exist_ok=True)
                settings = settings.model_copy(update={"home": home})
            embedder = self.ctx.embedder
            store = MemoryStore(settings.store, embedder=CachedEmbedder(embedder) if embedder is not None else None)
            # The run's LLM client stays the run's (the agent does not close what it was given); the store is the
            # agent's to close.
            self._agent = MemoryAgent(settings, llm=self.ctx.llm, store=store, owns_store=True)
        return self._agent

    @staticmethod
    def user_id(haystack: Haystack) -> str:
        return f"convomem-{haystack.hid}"

    async def _build(self, haystack: Haystack) -> _Built:
        agent = self._get_agent()
        built = _Built()
        extract = self.ctx.mark_extraction == "llm"
        for i, conv in enumerate(haystack.conversations):
            if not conv:
                continue
            started = haystack.started_at[i] if i < len(haystack.started_at) else None
            result = await agent.aremember(
                [turn_message(m, started) for m in conv],
                user_id=self.user_id(haystack),
                session_id=f"c{i + 1}",
                chunk_messages=CHUNK_MESSAGES,
                extract=extract,
            )
            for turn_id, msg in zip(result.turn_ids, conv, strict=False):
                built.turn_to_mid[turn_id] = msg.mid
            built.usage = built.usage + result.usage
            built.failures += result.error is not None
        return built

    async def prepare(self, haystack: Haystack) -> None:
        await self._built.get(haystack)

    def release(self, haystack: Haystack) -> None:
        """Kept: the haystack's memory lives in the store, and a later case with the same haystack (another
        category over the same conversations) must reuse it, not remember every turn a second time."""
        return None

    async def aclose(self) -> None:
        """Finish background extraction and close the agent's databases (its threads keep a process alive)."""
        if self._agent is not None:
            await self._agent.aclose()
            self._agent = None

    async def select(self, haystack: Haystack, question: str) -> Selection:
        built = await self._built.get(haystack)
        agent = self._get_agent()
        prompts = self.ctx.prompts
        skeleton = estimate_message_tokens(answer_messages(question, "", ContextKind.MEMORIES, prompts))
        started = time.perf_counter()
        recall = await agent.arecall(
            question, user_id=self.user_id(haystack), budget_tokens=max(64, self.ctx.budget_tokens - skeleton)
        )
        retrieval_ms = (time.perf_counter() - started) * 1000.0
        mids = list(dict.fromkeys(built.turn_to_mid[t] for t in recall.turn_ids if t in built.turn_to_mid))
        messages = answer_messages(question, recall.text, ContextKind.MEMORIES, prompts)
        route = f"mark:{recall.mode}:{len(recall.memories)} notes,{len(recall.turns)} turns"
        if built.failures:
            route += f", {built.failures} failed builds"
        return selection(messages, mids, retrieval_ms=retrieval_ms, route=route, index_usage=built.usage)
