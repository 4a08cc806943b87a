"""Deciding RIGHT or WRONG: ConvoMem's per-category LLM judge, a deterministic judge, a leniency check.

The LLM judge is parsed as the reference code does (``right`` only -> correct, ``wrong`` only -> wrong,
both -> wrong, neither -> ask again, up to 20 attempts as in the reference, then give up: unjudged rows are
left out of the denominator). A reasoning model's ``<think>`` block is dropped before parsing (its musings
say "right" and "wrong" freely); a reply cut off inside it counts as unparseable and is asked again. The
deterministic judge needs no model: containment of the core answer for facts, abstention-phrase detection
for abstention, and keyword overlap with the rubric for preferences/implicit connections (reported as
approximate, because a rubric really needs a reader).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, Field

from mark_agents.llm import LLMError, LLMUnavailable, Usage
from mark_eval.convomem.bm25 import tokenize
from mark_eval.convomem.categories import JudgeKind, spec
from mark_eval.convomem.prompts import (
    JUDGE_SYSTEM,
    judge_abstention,
    judge_default,
    judge_rubric,
    judge_temporal,
    judge_user_fact,
)
from mark_eval.convomem.schema import Question


class Verdict(BaseModel):
    correct: bool | None
    judge: str
    approximate: bool = False
    raw: str = ""
    usage: Usage = Field(default_factory=Usage)


class Judge(Protocol):
    name: str

    async def judge(self, question: Question, response: str) -> Verdict: ...


def parse_verdict(text: str) -> bool | None:
    """ConvoMem's parse: substring match on the lower-cased reply."""
    low = text.lower()
    right, wrong = "right" in low, "wrong" in low
    if right and wrong:
        return False
    if right:
        return True
    if wrong:
        return False
    return None


def judge_prompt(question: Question, response: str) -> str:
    kind = spec(question.category).judge
    if kind is JudgeKind.ABSTENTION:
        return judge_abstention(question.question, response)
    if kind is JudgeKind.RUBRIC:
        return judge_rubric(question.question, question.answer, response)
    if kind is JudgeKind.TEMPORAL:
        return judge_temporal(question.question, question.answer, response)
    if kind is JudgeKind.USER_FACTS:
        return judge_user_fact(question.question, question.answer, response, list(question.evidence_texts))
    return judge_default(question.question, question.answer, response)


#: The reference harness retries an unparseable verdict up to 20 times (``ANSWER_VERIFICATION_MAX_RETRIES``).
JUDGE_ATTEMPTS = 20
#: Room for a one-word verdict plus whatever a chatty or reasoning judge puts around it.
JUDGE_MAX_TOKENS = 64

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)


def strip_thinking(text: str) -> str:
    """The reply without reasoning blocks; an unclosed block (the reply ran out of tokens) is dropped whole."""
    return _THINK.sub("", text)


class LLMJudge:
    """A judge model (``MARK_JUDGE_*`` via ``mark_eval.config.connect_judge``) with ConvoMem's category prompts.

    ``attempts`` calls at most per verdict: an unparseable reply or a refused request (``LLMError``) is asked
    again; an endpoint that is down (``LLMUnavailable``) stops the run, as for the answers.
    """

    def __init__(self, client: Any, attempts: int = JUDGE_ATTEMPTS, max_tokens: int = JUDGE_MAX_TOKENS) -> None:
        if attempts < 1 or max_tokens < 1:
            raise ValueError("attempts and max_tokens must be >= 1")
        self.client = client
        self.attempts = attempts
        self.max_tokens = max_tokens
        self.name = "llm"

    async def judge(self, question: Question, response: str) -> Verdict:
        return await ask_for_verdict(
            self.client,
            JUDGE_SYSTEM,
            judge_prompt(question, response),
            parse=lambda raw: parse_verdict(strip_thinking(raw)),
            name="llm",
            attempts=self.attempts,
            max_tokens=self.max_tokens,
        )


async def ask_for_verdict(
    client: Any,
    system: str,
    prompt: str,
    *,
    parse: Callable[[str], bool | None],
    name: str,
    attempts: int,
    max_tokens: int,
) -> Verdict:
    """Ask a judge model until ``parse`` reads a label from its reply, at most ``attempts`` times (shared by
    ConvoMem's and LoCoMo's LLM judges, which differ in prompts, parser and name).

    A refused request (``LLMError``) is asked again, like a reply that could not be read; an endpoint that is down
    (``LLMUnavailable``) stops the run. Unparsed after every attempt: an unjudged verdict.
    """
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    usage = Usage()
    raw = ""
    for _ in range(attempts):
        try:
            result = await client.chat(messages, max_tokens=max_tokens, temperature=0.0, label="judge")
        except LLMUnavailable:
            raise
        except LLMError as exc:
            raw = f"{type(exc).__name__}: {exc}"
            continue
        usage = usage + result.usage
        raw = str(getattr(result, "text", "") or "")
        verdict = parse(raw)
        if verdict is not None:
            model = str(getattr(result, "model", "") or "")
            return Verdict(correct=verdict, judge=f"{name}:{model}" if model else name, raw=raw, usage=usage)
    return Verdict(correct=None, judge=name, raw=raw, usage=usage)


_ABSTAIN = re.compile(
    r"\b(?:"
    r"(?:do not|don'?t|does not|doesn'?t) (?:have|know|recall|see|remember)"
    r"|no (?:information|info|record|mention|details?|data|memory|indication)"
    r"|not (?:mentioned|sure|aware|specified|stated|provided|known|discussed|shared|available)"
    r"|(?:never|didn'?t|did not|haven'?t|have not|hasn'?t) (?:mentioned|mention|told|tell|said|say|shared|share|"
    r"discussed|specified|talked)"
    r"|can(?:not|'t) (?:find|tell|determine|answer|say|recall|know)"
    r"|unable to|not enough information|insufficient|no idea|unknown"
    r")\b",
    re.IGNORECASE,
)

#: words every rubric uses; overlap on them says nothing about the answer
_RUBRIC_GENERIC = frozenset(
    {
        "good",
        "response",
        "answer",
        "should",
        "recommend",
        "recommends",
        "suggest",
        "suggests",
        "avoid",
        "avoids",
        "user",
        "rather",
        "such",
        "since",
        "take",
        "account",
        "into",
        "remember",
        "connect",
        "consider",
        "considers",
        "mention",
        "mentions",
        "option",
        "options",
        "instead",
        "activity",
        "activities",
        "place",
        "places",
        "thing",
        "things",
    }
)


def is_abstention(text: str) -> bool:
    return bool(_ABSTAIN.search(text))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9$%.]+", " ", text.lower())).strip(" .")


def fact_matches(gold: str, response: str) -> bool:
    """Normalised containment of the core answer, or (for longer answers) most of its content words."""
    if _norm(gold) and _norm(gold) in _norm(response):
        return True
    want = set(tokenize(gold))
    if not want:
        return False
    have = set(tokenize(response))
    coverage = len(want & have) / len(want)
    return coverage >= (1.0 if len(want) <= 2 else 0.75)


_NEGATIVE = re.compile(r"\b(?:avoid|avoids|rather than|instead of|not)\b", re.IGNORECASE)


def rubric_matches(rubric: str, response: str) -> bool:
    """Keyword overlap with what the rubric asks for (the part before 'avoid' / 'rather than' ...)."""
    generic = {t for word in _RUBRIC_GENERIC for t in tokenize(word)}
    wanted = _NEGATIVE.split(rubric, maxsplit=1)[0]
    terms = {t for t in tokenize(wanted) if t not in generic and len(t) > 2}
    if not terms:
        return False
    overlap = terms & set(tokenize(response))
    return len(overlap) >= 2 or len(overlap) / len(terms) >= 0.25


class ExactJudge:
    """No model: deterministic and cheap, exact for facts and abstention, approximate for rubrics."""

    name = "exact"

    async def judge(self, question: Question, response: str) -> Verdict:
        return self.judge_sync(question, response)

    def judge_sync(self, question: Question, response: str) -> Verdict:
        kind = spec(question.category).judge
        if not response.strip():
            return Verdict(correct=False, judge=self.name, approximate=kind is JudgeKind.RUBRIC)
        if kind is JudgeKind.ABSTENTION:
            return Verdict(correct=is_abstention(response), judge=self.name)
        if kind is JudgeKind.RUBRIC:
            ok = rubric_matches(question.answer, response) and not (is_abstention(response) and len(response) < 120)
            return Verdict(correct=ok, judge=self.name, approximate=True)
        matched = fact_matches(question.answer, response)
        return Verdict(correct=matched, judge=self.name)


class LeniencyReport(BaseModel):
    judge: str
    total: int
    false_accepts: int
    rate_percent: float
    by_category: dict[str, tuple[int, int]]
    examples: list[dict[str, str]] = Field(default_factory=list)


def known_wrong_answers(questions: list[Question]) -> list[tuple[Question, str]]:
    """For each question a response that must be graded WRONG: another item's answer, a fabricated
    answer for abstention, a generic answer that ignores the rubric's context."""
    out: list[tuple[Question, str]] = []
    for i, q in enumerate(questions):
        kind = spec(q.category).judge
        others = [o.answer for o in questions if o.category == q.category and o.answer != q.answer]
        if kind is JudgeKind.ABSTENTION:
            out.append((q, "Yes, you told me: it was in Lisbon, back in March 2019, and it cost about $450."))
        elif kind is JudgeKind.RUBRIC:
            out.append((q, "Any popular option is fine; just pick whatever is most highly rated online."))
        else:
            wrong = others[i % len(others)] if others else "Something else entirely: 42 and Tuesday."
            out.append((q, f"From what you told me, it's {wrong}."))
    return out


async def leniency_check(
    judge: Judge,
    questions: list[Question],
    max_examples: int = 5,
    wrong_answers: Callable[[list[Question]], list[tuple[Question, str]]] = known_wrong_answers,
) -> LeniencyReport:
    """Feed known-wrong answers to a judge; a good judge accepts none of them. ``wrong_answers`` makes them
    (ConvoMem's by default; LoCoMo passes its own)."""
    by: dict[str, list[int]] = {}
    examples: list[dict[str, str]] = []
    name = judge.name
    for question, response in wrong_answers(questions):
        verdict = await judge.judge(question, response)
        name = verdict.judge
        counts = by.setdefault(question.category, [0, 0])
        counts[1] += 1
        if verdict.correct:
            counts[0] += 1
            if len(examples) < max_examples:
                examples.append({"question": question.question, "response": response, "raw": verdict.raw})
    total = sum(c[1] for c in by.values())
    accepted = sum(c[0] for c in by.values())
    return LeniencyReport(
        judge=name,
        total=total,
        false_accepts=accepted,
        rate_percent=round(100.0 * accepted / total, 1) if total else 0.0,
        by_category={k: (v[0], v[1]) for k, v in by.items()},
        examples=examples,
    )
