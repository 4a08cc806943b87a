"""``mark``: memories built from the haystack by the MARK memory builder, then recall and answer.

Each haystack gets its own user scope: every conversation is remembered as a session (memory building is
indexing, excluded from latency as in ConvoMem), then each question recalls into the token budget and is
answered with the shared prompt. Evidence recall counts evidence messages whose text is quoted by a
recalled memory's source (when the agent exposes it) — otherwise it is not computed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.schema import Haystack
from mark_eval.convomem.tokens import messages_tokens

from memory_store.errors import MarkError


def _agent_class() -> Any:
    try:
        from mark_agents import MemoryAgent
    except ImportError:
        raise MarkError(
            "method 'mark' is not available yet: mark_agents.MemoryAgent is missing in this installation"
        ) from None
    return MemoryAgent


class MarkMemory(Answerer):
    name = "mark"
    needs_llm_to_select = True

    def __init__(self, ctx: AnswererContext) -> None:
        super().__init__(ctx)
        self._agent: Any | None = None
        self._ready: dict[str, asyncio.Task[None]] = {}

    def _get_agent(self) -> Any:
        if self._agent is None:
            cls = _agent_class()
            if self.ctx.settings is None or self.ctx.llm is None:
                raise MarkError("method 'mark' needs the settings and an LLM client")
            settings = self.ctx.settings
            if self.ctx.work_dir is not None:  # the benchmark's memories never mix with the user's own
                settings = settings.model_copy(update={"home": self.ctx.work_dir / "mark-home"})
            self._agent = cls(settings, llm=self.ctx.llm)
        return self._agent

    @staticmethod
    def user_id(haystack: Haystack) -> str:
        return f"convomem-{haystack.hid}"

    async def _build(self, haystack: Haystack) -> None:
        agent = self._get_agent()
        for i, conv in enumerate(haystack.conversations):
            messages = [{"role": m.speaker, "content": m.text} for m in conv]
            await agent.aremember(messages, user_id=self.user_id(haystack), session_id=f"c{i + 1}")

    async def prepare(self, haystack: Haystack) -> None:
        task = self._ready.get(haystack.hid)
        if task is None:
            task = asyncio.ensure_future(self._build(haystack))
            self._ready[haystack.hid] = task
        await task

    def release(self, haystack: Haystack) -> None:
        self._ready.pop(haystack.hid, None)

    async def select(self, haystack: Haystack, question: str) -> Selection:
        await self.prepare(haystack)
        agent = self._get_agent()
        skeleton = messages_tokens(answer_messages(question, "", ContextKind.MEMORIES))
        started = time.perf_counter()
        recall = await agent.arecall(
            question, user_id=self.user_id(haystack), budget_tokens=max(64, self.ctx.budget_tokens - skeleton)
        )
        retrieval_ms = (time.perf_counter() - started) * 1000.0
        text = str(getattr(recall, "text", "") or "")
        mids = _quoted_mids(haystack, getattr(recall, "memories", []) or [])
        messages = answer_messages(question, text, ContextKind.MEMORIES)
        return selection(messages, mids, retrieval_ms=retrieval_ms, route="mark")


def _quoted_mids(haystack: Haystack, memories: list[Any]) -> list[str]:
    """Messages whose text appears in a recalled memory's source text, when the agent exposes one."""
    sources = []
    for hit in memories:
        record = getattr(hit, "memory", hit)
        for attr in ("source_text", "source", "evidence"):
            value = getattr(record, attr, None)
            if isinstance(value, str) and value:
                sources.append(value.lower())
    if not sources:
        return []
    return [m.mid for m in haystack.messages if any(m.text.lower() in s for s in sources)]
