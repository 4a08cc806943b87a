"""The J judge (mem0's LoCoMo protocol: CORRECT or WRONG from an LLM), its parser, and known-wrong answers
for the leniency check.

The judge model writes a one-sentence reason, then the label, as JSON (``{"label": "CORRECT"}``). The label
is read from the JSON when there is some, else from the last standalone CORRECT/WRONG word (so a reason
that says "not wrong" does not decide); a reply with neither is asked again, then left unjudged (out of the
denominator, as in ConvoMem's harness).
"""

from __future__ import annotations

import json
import re
from typing import Any

from mark_eval.convomem.judge import Verdict, ask_for_verdict, is_abstention
from mark_eval.convomem.schema import Question
from mark_eval.locomo.categories import ADVERSARIAL
from mark_eval.locomo.prompts import JUDGE_SYSTEM, judge_adversarial, judge_j

_WORD = re.compile(r"\b(CORRECT|WRONG)\b", re.IGNORECASE)
_JSON = re.compile(r"\{[^{}]*\}")


def parse_label(text: str) -> bool | None:
    """True for CORRECT, False for WRONG, None when the reply has no label."""
    for blob in reversed(_JSON.findall(text)):
        try:
            label = json.loads(blob).get("label")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(label, str) and label.strip().upper() in {"CORRECT", "WRONG"}:
            return label.strip().upper() == "CORRECT"
    words = _WORD.findall(text)
    if not words:
        return None
    return words[-1].upper() == "CORRECT"


def judge_prompt(question: Question, response: str) -> str:
    if question.category == ADVERSARIAL:
        return judge_adversarial(question.question, response)
    return judge_j(question.question, question.answer, response)


class JJudge:
    """The LLM judge of LoCoMo runs (``MARK_JUDGE_*`` via ``mark_eval.config.connect_judge``, else the answering
    model)."""

    def __init__(self, client: Any, retries: int = 5, max_tokens: int = 256) -> None:
        self.client = client
        self.retries = retries
        self.max_tokens = max_tokens
        self.name = "llm-j"

    async def judge(self, question: Question, response: str) -> Verdict:
        return await ask_for_verdict(
            self.client,
            JUDGE_SYSTEM,
            judge_prompt(question, response),
            parse=parse_label,
            name="j",
            attempts=self.retries,
            max_tokens=self.max_tokens,
        )


def known_wrong_answers(questions: list[Question]) -> list[tuple[Question, str]]:
    """For each question an answer the judge must call WRONG: for an adversarial question LoCoMo's own trap
    answer stated as fact (unless the trap is itself an abstention, as "Not mentioned" sometimes is);
    otherwise another question's gold answer, of the same category when there is one (on topic, wrong)."""
    out: list[tuple[Question, str]] = []
    for i, q in enumerate(questions):
        if q.category == ADVERSARIAL:
            if q.distractor and not is_abstention(q.distractor):
                out.append((q, f"{q.distractor}."))
            continue
        pool = [o for o in questions if o.category != ADVERSARIAL and _norm(o.answer) != _norm(q.answer)]
        # same category first (a date for a date); any other gold answer when the selection has none
        others = [o.answer for o in pool if o.category == q.category] or [o.answer for o in pool]
        if others:
            out.append((q, others[i % len(others)]))
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
