"""``mark``: memories built from the haystack by the MARK memory builder, then recall and answer.

Each haystack gets its own user scope in a store under the run's output directory (never the user's own
memories): every conversation is remembered as a session (memory building is indexing: excluded from
latency as in ConvoMem, its LLM tokens reported apart as ``index_tokens``). Each question then recalls
into the token budget and is answered with the shared prompt.

Evidence recall: a memory records the turns it was extracted from, so an evidence message "reached the
prompt" when a recalled memory was extracted from it (at the granularity of ``CHUNK_MESSAGES``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mark_agents.llm import Usage
from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.schema import Haystack
from mark_eval.convomem.tokens import messages_tokens
from memory_store.errors import MarkError

#: Messages per extraction call while building memories (MARK's unit is 2 = one exchange; 6 costs a third
#: of the calls on long haystacks, which matters on a small local model).
CHUNK_MESSAGES = 6


def _agent_class() -> Any:
    try:
        from mark_agents import MemoryAgent
    except ImportError:
        raise MarkError(
            "method 'mark' is not available yet: mark_agents.MemoryAgent is missing in this installation"
        ) from None
    return MemoryAgent


class _Borrowed:
    """The run's LLM client lent to the agent: closing the agent must not close the run's client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def aclose(self) -> None:
        return None


class _Built:
    """What building a haystack's memories produced: turn id -> message id, usage, failures."""

    def __init__(self) -> None:
        self.turn_to_mid: dict[str, str] = {}
        self.usage = Usage()
        self.failures = 0


class MarkMemory(Answerer):
    name = "mark"
    needs_llm_to_select = True

    def __init__(self, ctx: AnswererContext) -> None:
        super().__init__(ctx)
        self._agent: Any | None = None
        self._built: dict[str, asyncio.Task[_Built]] = {}

    def _get_agent(self) -> Any:
        if self._agent is None:
            cls = _agent_class()
            if self.ctx.settings is None or self.ctx.llm is None:
                raise MarkError("method 'mark' needs the settings and an LLM client")
            settings = self.ctx.settings
            if self.ctx.work_dir is not None:
                home = self.ctx.work_dir / "mark-home"
                home.mkdir(parents=True, exist_ok=True)
                settings = settings.model_copy(update={"home": home})
            self._agent = cls(settings, llm=_Borrowed(self.ctx.llm))
        return self._agent

    @staticmethod
    def user_id(haystack: Haystack) -> str:
        return f"convomem-{haystack.hid}"

    async def _build(self, haystack: Haystack) -> _Built:
        agent = self._get_agent()
        built = _Built()
        for i, conv in enumerate(haystack.conversations):
            if not conv:
                continue
            messages = [{"role": m.speaker, "content": m.text} for m in conv]
            result = await agent.aremember(
                messages, user_id=self.user_id(haystack), session_id=f"c{i + 1}", chunk_messages=CHUNK_MESSAGES
            )
            for turn_id, msg in zip(result.turn_ids, conv, strict=False):
                built.turn_to_mid[turn_id] = msg.mid
            built.usage = built.usage + result.usage
            built.failures += result.error is not None
        return built

    async def prepare(self, haystack: Haystack) -> None:
        task = self._built.get(haystack.hid)
        if task is None:
            task = asyncio.ensure_future(self._build(haystack))
            self._built[haystack.hid] = task
        await task

    def release(self, haystack: Haystack) -> None:
        self._built.pop(haystack.hid, None)

    async def aclose(self) -> None:
        """Finish background extraction and close the agent's databases (its threads keep a process alive)."""
        if self._agent is not None:
            await self._agent.aclose()
            self._agent = None

    async def select(self, haystack: Haystack, question: str) -> Selection:
        await self.prepare(haystack)
        built = self._built[haystack.hid].result()
        agent = self._get_agent()
        user = self.user_id(haystack)
        skeleton = messages_tokens(answer_messages(question, "", ContextKind.MEMORIES))
        started = time.perf_counter()
        recall = await agent.arecall(question, user_id=user, budget_tokens=max(64, self.ctx.budget_tokens - skeleton))
        retrieval_ms = (time.perf_counter() - started) * 1000.0
        mids = await asyncio.to_thread(_source_mids, agent, user, recall, built.turn_to_mid)
        messages = answer_messages(question, str(getattr(recall, "text", "") or ""), ContextKind.MEMORIES)
        route = f"mark:{len(getattr(recall, 'memories', []) or [])} memories"
        if built.failures:
            route += f", {built.failures} failed builds"
        return selection(messages, mids, retrieval_ms=retrieval_ms, route=route, index_usage=built.usage)


def _source_mids(agent: Any, user: str, recall: Any, turn_to_mid: dict[str, str]) -> list[str]:
    """Haystack messages the recalled memories were extracted from."""
    mids: list[str] = []
    for hit in getattr(recall, "memories", []) or []:
        try:
            memory = agent.store.get(hit.id, user)
        except Exception:  # a memory purged meanwhile: nothing to attribute
            continue
        for turn_id in memory.source.turn_ids:
            mid = turn_to_mid.get(turn_id)
            if mid is not None and mid not in mids:
                mids.append(mid)
    return mids
