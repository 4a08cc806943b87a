"""``rag``: message-level retrieval (dense, keyword or hybrid) with neighbouring turns, into a token budget.

Each message is scored alone; a hit brings its neighbours (``neighbours`` on each side, same conversation)
so a short answer like "Yes, Thursdays" keeps its question. Excerpts are added best-first until the whole
answer prompt would exceed ``budget_tokens``, then shown in chronological order.
"""

from __future__ import annotations

import asyncio
import time

from mark_agents.llm import estimate_message_tokens, estimate_tokens
from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.render import conversation_header, line, render_excerpts
from mark_eval.convomem.retrieval import MessageIndex, RetrievalMode
from mark_eval.convomem.schema import Haystack, HaystackMessage

#: Stop scanning the ranking after this many hits that no longer fit.
MAX_MISSES = 40


class Rag(Answerer):
    name = "rag"

    def __init__(self, ctx: AnswererContext, mode: RetrievalMode | None = None) -> None:
        super().__init__(ctx)
        self.mode: RetrievalMode = mode or ctx.retrieval
        self._indexes: dict[str, MessageIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def prepare(self, haystack: Haystack) -> None:
        lock = self._locks.setdefault(haystack.hid, asyncio.Lock())
        async with lock:
            if haystack.hid not in self._indexes:
                embedder = self.ctx.embedder if self.mode != "keyword" else None
                self._indexes[haystack.hid] = await asyncio.to_thread(MessageIndex, haystack, self.mode, embedder)

    def release(self, haystack: Haystack) -> None:
        self._indexes.pop(haystack.hid, None)
        self._locks.pop(haystack.hid, None)

    async def select(self, haystack: Haystack, question: str) -> Selection:
        await self.prepare(haystack)
        index = self._indexes[haystack.hid]
        started = time.perf_counter()
        ranking = await asyncio.to_thread(index.rank, question)
        budget = self.ctx.budget_tokens - estimate_message_tokens(
            answer_messages(question, "", ContextKind.EXCERPTS, self.ctx.prompts)
        )
        chosen = fill_budget(haystack, [int(i) for i in ranking], budget, self.ctx.neighbours)
        # the estimate above is per line; check the rendered prompt and trim from the least relevant end
        while True:
            picked = [m for group in chosen for m in group]
            messages = answer_messages(question, render_excerpts(picked), ContextKind.EXCERPTS, self.ctx.prompts)
            if estimate_message_tokens(messages) <= self.ctx.budget_tokens or not chosen:
                break
            chosen.pop()
        retrieval_ms = (time.perf_counter() - started) * 1000.0
        mids = sorted((m.mid for m in picked), key=_order)
        return selection(messages, mids, retrieval_ms=retrieval_ms, route=f"rag:{self.mode}")


def _order(mid: str) -> tuple[int, int]:
    conv, msg = mid.split(":")
    return int(conv), int(msg)


def fill_budget(haystack: Haystack, ranking: list[int], budget: int, neighbours: int) -> list[list[HaystackMessage]]:
    """Groups of messages (hit + neighbours), best first, whose rendered size stays within ``budget``."""
    messages = haystack.messages
    offsets: list[int] = []
    total = 0
    for conv in haystack.conversations:
        offsets.append(total)
        total += len(conv)
    taken: set[int] = set()
    convs_used: set[int] = set()
    groups: list[list[HaystackMessage]] = []
    used = 0
    misses = 0
    for flat in ranking:
        if flat in taken:
            continue
        hit = messages[flat]
        conv = haystack.conversations[hit.conv_index]
        lo = max(0, hit.msg_index - neighbours)
        hi = min(len(conv), hit.msg_index + neighbours + 1)
        for candidate in (range(lo, hi), range(hit.msg_index, hit.msg_index + 1)):
            new = [offsets[hit.conv_index] + i for i in candidate if offsets[hit.conv_index] + i not in taken]
            cost = sum(estimate_tokens(line(messages[i])) + 1 for i in new) + 2
            if hit.conv_index not in convs_used:
                cost += estimate_tokens(conversation_header(hit.conv_index, excerpt=True, date=hit.date)) + 2
            if used + cost <= budget:
                used += cost
                taken.update(new)
                convs_used.add(hit.conv_index)
                groups.append([messages[i] for i in new])
                break
        else:
            misses += 1
            if misses >= MAX_MISSES:
                break
    return groups
