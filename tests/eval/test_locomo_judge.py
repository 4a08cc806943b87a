"""The J judge: label parsing, the prompt per category, retries, and a whole LoCoMo run with a scripted fake
LLM answering and judging (control flow only; the real model's judging is not what these tests check)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.judge import leniency_check
from mark_eval.convomem.runner import RunOptions
from mark_eval.locomo.judge import JJudge, known_wrong_answers, parse_label
from mark_eval.locomo.loader import load_locomo, select
from mark_eval.locomo.prompts import JUDGE_SYSTEM, LOCOMO_PROMPTS
from mark_eval.locomo.run import run_locomo
from tests.eval.fakes import answering, prompt_text, sent

CONV30 = Path(__file__).parent / "data" / "locomo" / "conv-30.json"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('Same date written differently.\n{"label": "CORRECT"}', True),
        ('It names another city. {"label": "WRONG"}', False),
        ("The answer is not wrong: it names the same person.\nCORRECT", True),  # the last label decides
        ("Although it sounds correct, it names another year. WRONG", False),
        ('{"label": "correct"}', True),
        ("The response is incorrect.", None),  # 'incorrect' is not the label CORRECT
        ("I cannot decide.", None),
    ],
)
def test_parse_label(reply: str, expected: bool | None) -> None:
    assert parse_label(reply) is expected


async def test_j_judge_scripted_llm_uses_category_prompts_and_retries() -> None:
    [case] = select(load_locomo(CONV30), {"temporal", "adversarial"}, limit=1)
    temporal, adversarial = case.questions
    replies = iter(["thinking...", "still thinking", '{"label": "CORRECT"}'])
    fake, llm = answering(lambda messages: next(replies))
    verdict = await JJudge(llm).judge(temporal, "On 19 January 2023")
    assert verdict.correct is True and verdict.judge == "j:scripted-fake" and verdict.usage.calls == 3
    prompt = prompt_text(sent(fake)[0])
    assert temporal.answer in prompt and "same date or period" in prompt

    fake2, llm2 = answering(lambda messages: "no label at all")
    verdict2 = await JJudge(llm2, retries=2).judge(adversarial, "He drove for a delivery app.")
    assert verdict2.correct is None and fake2.calls == 2
    prompt2 = prompt_text(sent(fake2)[0])
    assert "cannot be answered" in prompt2 and "He drove for a delivery app." in prompt2


def test_known_wrong_answers_use_the_adversarial_trap_and_other_gold_answers() -> None:
    [case] = select(load_locomo(CONV30))
    pairs = known_wrong_answers(case.questions)
    # conv-30's first adversarial trap is itself "Not mentioned": a right answer, so it is left out
    traps = [q for q in case.questions if q.category == "adversarial"]
    assert traps[0].distractor == "Not mentioned" and traps[0].qid not in {q.qid for q, _ in pairs}
    assert len(pairs) == len(case.questions) - sum(1 for q in traps if q.distractor == "Not mentioned")
    for q, wrong in pairs:
        if q.category == "adversarial":
            assert wrong == f"{q.distractor}."
        else:
            assert wrong != q.answer
    # one question per category: no same-category answer, so another category's gold answer stands in
    [small] = select(load_locomo(CONV30), {"temporal", "single_hop"}, limit=1)
    temporal, single = small.questions
    assert known_wrong_answers(small.questions) == [(temporal, single.answer), (single, temporal.answer)]


async def test_leniency_check_scripted_llm_counts_false_accepts() -> None:
    [case] = select(load_locomo(CONV30), {"adversarial", "single_hop"}, limit=4)
    # a judge that accepts everything: every known-wrong answer is a false accept
    lenient = JJudge(answering(lambda m: '{"label": "CORRECT"}')[1])
    report = await leniency_check(lenient, case.questions, wrong_answers=known_wrong_answers)
    assert (report.false_accepts, report.total, report.rate_percent) == (
        7,
        7,
        100.0,
    )  # 4 + 3 (one trap is "Not mentioned")


async def test_locomo_run_scripted_llm_writes_j_f1_recall_and_plot(tmp_path: Path) -> None:
    """full_context answers with a scripted fake; the J judge (scripted) calls temporal answers right."""
    cases = select(load_locomo(CONV30), {"temporal", "single_hop", "adversarial"}, limit=3)

    def script(messages: list[dict[str, str]]) -> str:
        text = prompt_text(messages)
        if messages[0]["content"] == JUDGE_SYSTEM:
            return '{"label": "CORRECT"}' if "same date or period" in text and "19 January" in text else "WRONG"
        assert "Conversation 1 (4:04 pm on 20 January, 2023):" in text  # the answerer sees dates and names
        return "19 January, 2023" if "When" in text.split("Question:")[-1] else "Not mentioned in the conversations."

    _, llm = answering(script)
    ctx = AnswererContext(llm=llm, prompts=LOCOMO_PROMPTS)
    options = RunOptions(methods=["full_context"], out_dir=tmp_path, progress=False, label="locomo")
    report = await run_locomo(cases, options, ctx, JJudge(llm))
    assert report.asked == 9
    rows = {r["category"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert set(rows) == {"overall_1_4", "temporal", "single_hop", "adversarial"}
    temporal = rows["temporal"]
    assert temporal["category_id"] == "2" and temporal["questions"] == "3"
    assert temporal["evidence_recall_percent"] == "100.0" and temporal["judge"] == "j:scripted-fake"
    low, high = float(temporal["ci95_low_percent"]), float(temporal["ci95_high_percent"])
    assert low <= float(temporal["j_percent"]) <= high and high - low > 20  # 3 questions: a wide interval
    assert temporal["f1_percent"] != "" and rows["adversarial"]["f1_percent"] == ""  # no lexical score for cat 5
    assert rows["overall_1_4"]["questions"] == "6"  # categories 1-4 only
    assert (tmp_path / "locomo.png").stat().st_size > 0
    again = await run_locomo(cases, options, ctx, JJudge(llm))
    assert again.asked == 0 and again.skipped_done == 9
