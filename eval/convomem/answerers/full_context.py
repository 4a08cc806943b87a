"""``full_context``: every conversation in one prompt (ConvoMem's long_context).

Over the model's window the oldest conversations are dropped until the prompt fits and the row is flagged
``context_overflow``: a real chatbot would have to do the same, and the run never crashes on it.
"""

from __future__ import annotations

from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.render import render_conversation
from mark_eval.convomem.schema import Haystack
from mark_eval.convomem.tokens import estimate_tokens, messages_tokens

#: Our token estimate is not the model's tokenizer: keep this share of the window as the hard limit.
WINDOW_SAFETY = 0.9


class FullContext(Answerer):
    name = "full_context"

    def __init__(self, ctx: AnswererContext) -> None:
        super().__init__(ctx)
        self._rendered: dict[str, tuple[list[str], list[int]]] = {}

    def _render(self, haystack: Haystack) -> tuple[list[str], list[int]]:
        cached = self._rendered.get(haystack.hid)
        if cached is None:
            texts = [render_conversation(conv) for conv in haystack.conversations]
            cached = (texts, [estimate_tokens(t) + 1 for t in texts])
            self._rendered[haystack.hid] = cached
        return cached

    def release(self, haystack: Haystack) -> None:
        self._rendered.pop(haystack.hid, None)

    def prompt_tokens(self, haystack: Haystack, question: str) -> int:
        """Estimated size of the full prompt, without building it (the hybrid method's switch)."""
        _, sizes = self._render(haystack)
        return messages_tokens(answer_messages(question, "", ContextKind.HISTORY, self.ctx.prompts)) + sum(sizes)

    async def select(self, haystack: Haystack, question: str) -> Selection:
        texts, sizes = self._render(haystack)
        skeleton = messages_tokens(answer_messages(question, "", ContextKind.HISTORY, self.ctx.prompts))
        first, overflow = 0, False
        window = self.ctx.context_window
        if window:
            limit = int(window * WINDOW_SAFETY) - self.ctx.max_answer_tokens - skeleton
            total = sum(sizes)
            while first < len(texts) and total > limit:
                total -= sizes[first]
                first += 1
            overflow = first > 0
        kept = haystack.conversations[first:]
        messages = answer_messages(question, "\n\n".join(texts[first:]), ContextKind.HISTORY, self.ctx.prompts)
        mids = [m.mid for conv in kept for m in conv]
        route = f"dropped {first} oldest conversations" if overflow else "full"
        return selection(messages, mids, context_overflow=overflow, route=route)
