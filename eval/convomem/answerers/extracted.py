"""ConvoMem's two-stage methods: ``extracted_context`` (one helper pass over the flattened history) and
``block_based`` (helper passes over blocks of 10 conversations, in parallel), then the shared answer prompt.

The helper passes run on ``AnswererContext.helper`` (the ``--helper-model``, else the answering model; ConvoMem
used Gemini Flash-Lite) with no output cap by default, as in the reference. Evidence recall counts what reached
the helper's prompt: that is what the system could see.
"""

from __future__ import annotations

import asyncio
import re

from mark_agents.llm import Usage, estimate_message_tokens, estimate_tokens
from mark_eval.convomem.answerers.base import (
    Answerer,
    AnswererContext,
    Selection,
    helper_chat,
    selection,
)
from mark_eval.convomem.answerers.full_context import WINDOW_SAFETY
from mark_eval.convomem.prompts import NO_INFO_SENTINEL, ContextKind, answer_messages, extract_messages
from mark_eval.convomem.render import line, render_conversations, render_flat
from mark_eval.convomem.schema import Haystack, HaystackMessage

BLOCK_SIZE = 10
CANNED = "I don't have any information about that."


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def is_no_info(text: str) -> bool:
    """ConvoMem drops helper replies within edit distance 5 of the sentinel (alphanumerics only)."""
    a, b = _alnum(text), _alnum(NO_INFO_SENTINEL)
    return not a or (abs(len(a) - len(b)) <= 5 and _levenshtein(a, b) <= 5)


def _overflows(ctx: AnswererContext, convs: list[tuple[HaystackMessage, ...]], question: str) -> bool:
    """True when a helper prompt over these conversations exceeds the helper's window (room is kept for its
    reply: its cap, or the answer cap when it has none). Such a question is refused, never truncated."""
    window = ctx.helper_window
    if not window:
        return False
    reply = ctx.helper_max_tokens or ctx.max_answer_tokens
    limit = int(window * WINDOW_SAFETY) - reply - estimate_message_tokens(extract_messages(question, ""))
    return sum(estimate_tokens(line(m)) + 1 for c in convs for m in c) > limit


def _refused(convs: list[tuple[HaystackMessage, ...]]) -> Selection:
    return Selection(
        messages=[],
        context_mids=[],
        input_tokens=0,
        context_overflow=True,
        refused=True,
        route=f"refused: {len(convs)} conversations over the helper's window",
    )


class ExtractedContext(Answerer):
    name = "extracted_context"
    needs_llm_to_select = True

    async def select(self, haystack: Haystack, question: str) -> Selection:
        convs = list(haystack.conversations)
        if _overflows(self.ctx, convs, question):
            return _refused(convs)
        result = await helper_chat(self.ctx, extract_messages(question, render_flat(convs)), "extract.context")
        text = str(getattr(result, "text", "") or "")
        context = "" if is_no_info(text) else text
        messages = answer_messages(question, context, ContextKind.EXTRACTED, self.ctx.prompts)
        mids = [m.mid for c in convs for m in c]
        return selection(
            messages,
            mids,
            helper_usage=result.usage,
            helper_model=str(getattr(result, "model", "") or ""),
            route="extracted",
        )


class BlockBased(Answerer):
    name = "block_based"
    needs_llm_to_select = True

    async def select(self, haystack: Haystack, question: str) -> Selection:
        convs = list(haystack.conversations)
        blocks = [convs[i : i + BLOCK_SIZE] for i in range(0, len(convs), BLOCK_SIZE)]
        if any(_overflows(self.ctx, block, question) for block in blocks):
            return _refused(convs)
        prompts = [extract_messages(question, render_conversations(block)) for block in blocks]
        seen = [m.mid for c in convs for m in c]
        results = await asyncio.gather(*(helper_chat(self.ctx, p, "extract.block") for p in prompts))
        usage = Usage()
        kept: list[str] = []
        for result in results:
            usage = usage + result.usage
            text = str(getattr(result, "text", "") or "")
            if not is_no_info(text):
                kept.append(text.strip())
        context = "\n\n".join(f"Information Block {i + 1}:\n{t}" for i, t in enumerate(kept))
        messages = answer_messages(question, context, ContextKind.EXTRACTED, self.ctx.prompts)
        canned = CANNED if not kept else None
        return selection(
            messages,
            seen,
            helper_usage=usage,
            helper_model=str(getattr(results[0], "model", "") or "") if results else "",
            canned_answer=canned,
            route=f"blocks:{len(kept)}/{len(blocks)}",
        )
