"""Assembling a test case: the haystack the system sees, and where each question's evidence sits in it."""

from __future__ import annotations

import re

from mark_eval.convomem.schema import Conversation, Haystack, Question, TestCase

_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def locate_evidence(haystack: Haystack, question: Question, conversation_ids: list[str]) -> list[str]:
    """Message ids (``conv:msg``) of the question's evidence messages, matched by text.

    ConvoMem's message-level gold is the verbatim ``message_evidences`` text; we look first inside the
    item's own evidence conversations, then anywhere, and fall back to containment for long lines.
    """
    own = {i for i, cid in enumerate(conversation_ids) if cid in set(question.evidence_conversation_ids)}
    found: list[str] = []
    taken: set[str] = set()
    for text in question.evidence_texts:
        target = _norm(text)
        if not target:
            continue
        hit = _find(haystack, target, own, taken, exact=True) or _find(haystack, target, None, taken, exact=True)
        if hit is None and len(target) >= 20:
            hit = _find(haystack, target, own, taken, exact=False) or _find(haystack, target, None, taken, exact=False)
        if hit is not None:
            taken.add(hit)
            found.append(hit)
    return found


def _find(haystack: Haystack, target: str, convs: set[int] | None, taken: set[str], *, exact: bool) -> str | None:
    for conv in haystack.conversations:
        for msg in conv:
            if convs is not None and msg.conv_index not in convs:
                continue
            if msg.mid in taken:
                continue
            text = _norm(msg.text)
            if (text == target) if exact else (target in text or (len(text) >= 20 and text in target)):
                return msg.mid
    return None


def assemble_case(
    context_size: int,
    conversations: list[Conversation],
    questions: list[Question],
    repeats: dict[str, int] | None = None,
) -> TestCase:
    """Build the haystack and locate each question's evidence in it."""
    ids = [c.cid for c in conversations]
    haystack = Haystack.build(conversations)
    case = TestCase(
        context_size=context_size,
        conversation_ids=ids,
        haystack=haystack,
        questions=questions,
        repeats=repeats or {},
    )
    case.evidence_mids = {q.qid: locate_evidence(haystack, q, ids) for q in questions}
    return case
