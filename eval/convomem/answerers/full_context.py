"""``full_context``: every conversation in one prompt (ConvoMem's long_context).

A history over the model's window (when the window is known: the local server's) is refused: no call, the row
is flagged ``context_overflow`` and counted apart, never truncated and scored as if the model had seen it all.
An endpoint that rejects a prompt as too long gets the same treatment (``Answerer.answer``).
"""

from __future__ import annotations

from mark_agents.llm import estimate_message_tokens, estimate_tokens
from mark_eval.convomem.answerers.base import Answerer, AnswererContext, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.render import render_conversation
from mark_eval.convomem.schema import Haystack

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
        skeleton = answer_messages(question, "", ContextKind.HISTORY, self.ctx.prompts)
        return estimate_message_tokens(skeleton) + sum(sizes)

    def overflows(self, haystack: Haystack, question: str) -> bool:
        """True when the whole prompt plus the answer's room exceeds the model's window (as far as we can tell)."""
        window = self.ctx.context_window
        if not window:
            return False
        limit = int(window * WINDOW_SAFETY) - self.ctx.max_answer_tokens
        return self.prompt_tokens(haystack, question) > limit

    async def select(self, haystack: Haystack, question: str) -> Selection:
        if self.overflows(haystack, question):
            return Selection(
                messages=[],
                context_mids=[],
                input_tokens=self.prompt_tokens(haystack, question),
                context_overflow=True,
                refused=True,
                route="refused: over the window",
            )
        texts, _ = self._render(haystack)
        messages = answer_messages(question, "\n\n".join(texts), ContextKind.HISTORY, self.ctx.prompts)
        mids = [m.mid for conv in haystack.conversations for m in conv]
        return selection(messages, mids, route="full")
