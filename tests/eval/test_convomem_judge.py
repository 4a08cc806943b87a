"""Judging: the RIGHT/WRONG parse, the per-category LLM prompts, the deterministic judge, leniency."""

from __future__ import annotations

import pytest

from mark_agents.llm.scripted import error
from mark_eval.convomem.judge import ExactJudge, LLMJudge, is_abstention, leniency_check, parse_verdict
from mark_eval.convomem.loaders import load_sample
from mark_eval.convomem.schema import Question
from tests.eval.fakes import answering, max_tokens, prompt_text, sent


def _q(category: str, answer: str, evidence: tuple[str, ...] = ("e",)) -> Question:
    return Question(
        qid="x",
        category=category,
        evidence_count=len(evidence),
        question="Q?",
        answer=answer,
        evidence_texts=evidence,
        evidence_conversation_ids=(),
    )


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("RIGHT", True), ("right.", True), ("WRONG", False), ("Right or wrong? WRONG", False), ("maybe", None)],
)
def test_parse_verdict_like_convomem(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


async def test_llm_judge_picks_the_category_prompt_with_scripted_fake_llm() -> None:
    fake, llm = answering(lambda m: "RIGHT")
    judge = LLMJudge(llm)
    cases = {
        "user_facts": ("Message available to the model", "Biscuit", ("my dog Biscuit",)),
        "changing": ("partial answer is WRONG", "$10k", ("a", "b")),
        "abstention": ("expected to abstain", "There is no information", ("x",)),
        "preferences": ("Rubric:", "A good answer recommends vegetarian places", ("x",)),
        "locomo_temporal": ("off-by-one", "7 May 2023", ("x",)),
    }
    for category, (needle, gold, evidence) in cases.items():
        verdict = await judge.judge(_q(category, gold, evidence), "some response")
        assert verdict.correct is True
        assert needle in prompt_text(sent(fake)[-1])
    # the abstention judge gets no reference answer
    await judge.judge(_q("abstention", "There is no information"), "x")
    assert "There is no information" not in prompt_text(sent(fake)[-1])
    multi = await judge.judge(_q("user_facts", "A and B", ("a msg", "b msg")), "A and B")
    assert multi.correct and "several messages" in prompt_text(sent(fake)[-1])


async def test_llm_judge_retries_unparseable_replies_then_gives_up_with_a_scripted_llm() -> None:
    replies = iter(["hmm", "RIGHT"])
    fake, llm = answering(lambda m: next(replies))
    verdict = await LLMJudge(llm).judge(_q("assistant_facts", "x"), "x")
    assert verdict.correct is True and fake.calls == 2
    stuck, stuck_llm = answering(lambda m: "no idea")
    verdict = await LLMJudge(stuck_llm, attempts=3).judge(_q("assistant_facts", "x"), "x")
    assert verdict.correct is None and stuck.calls == 3


async def test_llm_judge_defaults_like_the_reference_with_a_scripted_llm() -> None:
    """20 attempts for an unparseable verdict and room for more than one word, as the reference harness gives."""
    stuck, stuck_llm = answering(lambda m: "hmm, let me see")
    verdict = await LLMJudge(stuck_llm).judge(_q("assistant_facts", "x"), "x")
    assert verdict.correct is None and stuck.calls == 20
    assert set(max_tokens(stuck)) == {64}
    tuned, tuned_llm = answering(lambda m: "hmm")
    await LLMJudge(tuned_llm, attempts=2, max_tokens=256).judge(_q("assistant_facts", "x"), "x")
    assert tuned.calls == 2 and max_tokens(tuned)[-1] == 256


async def test_llm_judge_ignores_reasoning_and_retries_refused_requests_with_a_scripted_llm() -> None:
    replies = iter(
        [
            "<think>Is it right or wrong? The user said",  # cut off inside the reasoning: unparseable
            error(400, "bad request"),
            "<think>It could be wrong, but the core answer is right.</think>\nRIGHT",
        ]
    )
    fake, llm = answering(lambda m: next(replies))
    verdict = await LLMJudge(llm).judge(_q("assistant_facts", "x"), "x")
    assert verdict.correct is True and fake.calls == 3


@pytest.mark.parametrize(
    ("category", "gold", "response", "expected"),
    [
        ("user_facts", "Biscuit", "Your dog is called Biscuit.", True),
        ("user_facts", "Biscuit", "Your dog is called Pepper.", False),
        ("user_facts", "Harbor Loft and Pinecrest Lodge", "You're choosing between Harbor Loft and Pinecrest.", True),
        ("user_facts", "Harbor Loft and Pinecrest Lodge", "Harbor Loft.", False),
        ("changing", "$10k", "Your current ad budget is $10k a month.", True),
        ("changing", "$10k", "It is $5k a month.", False),
        ("changing", "Thursday", "I don't know which day.", False),
        ("abstention", "There is no information", "I don't have any information about your dog's age.", True),
        ("abstention", "There is no information", "You never mentioned where your sister lives.", True),
        ("abstention", "There is no information", "Biscuit is 4 years old.", False),
    ],
)
def test_exact_judge(category: str, gold: str, response: str, expected: bool) -> None:
    verdict = ExactJudge().judge_sync(_q(category, gold), response)
    assert verdict.correct is expected and not verdict.approximate


def test_exact_judge_rubric_is_approximate() -> None:
    rubric = (
        "A good answer recommends vegetarian-friendly places and avoids steakhouses or meat-focused menus, "
        "since the user is vegetarian."
    )
    good = ExactJudge().judge_sync(_q("preferences", rubric), "Try Green Leaf: a vegetarian-friendly menu.")
    bad = ExactJudge().judge_sync(_q("preferences", rubric), "Any popular restaurant downtown is fine.")
    assert good.correct and good.approximate
    assert not bad.correct and bad.approximate


def test_abstention_phrases() -> None:
    assert is_abstention("I'm not sure, you didn't mention it.")
    assert not is_abstention("It's Thursday evenings.")


async def test_leniency_check_exact_judge_accepts_no_known_wrong_answer() -> None:
    questions = load_sample().questions()
    report = await leniency_check(ExactJudge(), questions)
    assert report.total == len(questions)
    assert report.false_accepts == 0 and report.rate_percent == 0.0


async def test_leniency_check_reports_a_lenient_judge_with_scripted_fake_llm() -> None:
    questions = load_sample().questions()
    report = await leniency_check(LLMJudge(answering(lambda m: "RIGHT")[1]), questions)
    assert report.rate_percent == 100.0 and report.examples


def test_auto_judge_never_falls_back_silently() -> None:
    from mark_agents.config import LLMSettings, Settings
    from mark_eval.config import EvalSettings
    from mark_eval.convomem.cli import judge_choice

    settings = Settings(llm=LLMSettings(base_url="http://127.0.0.1:9/v1", model="a"))
    same = EvalSettings(settings=settings, judge_llm=None)
    kind, warning = judge_choice(same, "auto")
    assert kind == "exact" and warning is not None and "exact (keyword) judge" in warning
    assert judge_choice(EvalSettings(settings=settings, judge_llm=settings.llm), "auto")[0] == "exact"
    apart = EvalSettings(settings=settings, judge_llm=LLMSettings(base_url="http://127.0.0.1:9/v1", model="b"))
    assert judge_choice(apart, "auto") == ("llm", None)
    assert judge_choice(same, "llm") == ("llm", None)


def test_every_table_names_the_judge() -> None:
    from rich.console import Console

    from mark_eval.convomem.results import ResultRow
    from mark_eval.convomem.summary import console_table, judge_label, summarise, to_csv

    base = dict(context_size=1, category="user_facts", evidence_count=1, question="q", gold="g")
    exact = summarise([ResultRow(qid="a", method="rag", correct=True, judge="exact", **base)])
    llm = summarise([ResultRow(qid="a", method="rag", correct=True, judge="llm:qwen-7b", **base)])
    assert "exact" in judge_label(exact) and "keyword" in judge_label(exact)
    assert judge_label(llm) == "verdicts by llm (qwen-7b)"
    console = Console(width=250, record=True)
    console.print(console_table(exact))
    text = console.export_text()
    assert "verdicts by exact" in text.splitlines()[0] + text.splitlines()[1]
    assert ",exact," in to_csv(exact) and ",llm:qwen-7b," in to_csv(llm)
