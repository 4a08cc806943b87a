"""``hybrid``: the whole history while it fits the token budget, retrieval beyond it.

This is the paper's recommendation made concrete: full context wins on small histories, and past the budget
the prompt stays flat instead of growing with every conversation.
"""

from __future__ import annotations

from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection
from mark_eval.convomem.answerers.full_context import FullContext
from mark_eval.convomem.answerers.rag import Rag
from mark_eval.convomem.schema import Haystack


class Hybrid(Answerer):
    name = "hybrid"

    def __init__(self, ctx: AnswererContext) -> None:
        super().__init__(ctx)
        self.full = FullContext(ctx)
        self.rag = Rag(ctx)

    def _fits(self, haystack: Haystack) -> bool:
        return self.full.prompt_tokens(haystack, "") + 64 <= self.ctx.budget_tokens

    async def prepare(self, haystack: Haystack) -> None:
        if not self._fits(haystack):
            await self.rag.prepare(haystack)

    def release(self, haystack: Haystack) -> None:
        self.full.release(haystack)
        self.rag.release(haystack)

    async def select(self, haystack: Haystack, question: str) -> Selection:
        if self.full.prompt_tokens(haystack, question) <= self.ctx.budget_tokens:
            return await self.full.select(haystack, question)
        return await self.rag.select(haystack, question)
