"""Answerers with a scripted fake LLM: prompts, budgets, overflow, evidence recall, no leaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from mark_agents.llm.scripted import RoleScript, error
from mark_eval.convomem.answerers import AnswererContext, create, method_names
from mark_eval.convomem.answerers.extracted import is_no_info
from mark_eval.convomem.loaders import load_data, load_sample
from mark_eval.convomem.mixing import MixConfig, build_cases
from mark_eval.convomem.prompts import GRADING_BLOCK
from mark_eval.convomem.recall import evidence_recall
from mark_eval.convomem.schema import TestCase
from mark_eval.convomem.synthetic import synthetic_data
from memory_store.errors import InvalidInput
from tests.eval.fakes import answering, max_tokens, prompt_text, sent


def _sample_cases(sizes: tuple[int, ...] = (6,)) -> list[TestCase]:
    return build_cases(load_sample(), MixConfig(sizes=sizes, seed=3)).cases


def _echo(messages: list[dict[str, str]]) -> str:
    return "I don't have any information about that."


def _is_answer(messages: list[dict[str, str]]) -> bool:
    return GRADING_BLOCK in prompt_text(messages)


@pytest.mark.parametrize("method", ["full_context", "rag_keyword", "hybrid", "extracted_context", "block_based"])
async def test_answer_with_scripted_fake_llm(method: str) -> None:
    case = _sample_cases()[0]
    fake, llm = answering(lambda m: "Biscuit" if _is_answer(m) else "quote: Biscuit")
    ctx = AnswererContext(llm=llm, budget_tokens=1500, retrieval="keyword")
    answerer = create(method, ctx)
    await answerer.prepare(case.haystack)
    ans = await answerer.answer(case.haystack, case.questions[0].question)
    assert ans.error is None
    assert ans.text == "Biscuit"
    assert ans.total.calls >= 1 and ans.usage.prompt_tokens > 0 and ans.latency_ms >= 0
    assert f"answer.{method}" in llm.meter.by_label()
    answer_prompt = prompt_text(sent(fake)[-1])
    assert GRADING_BLOCK in answer_prompt  # the same skeleton for every method
    assert case.questions[0].question in answer_prompt


async def test_prompts_never_leak_ids_or_evidence_flags_with_a_scripted_llm(locomo_dir: Path) -> None:
    cases = load_data(locomo_dir).premixed + _sample_cases((2,))
    fake, llm = answering(_echo)
    ctx = AnswererContext(llm=llm, budget_tokens=3000, retrieval="keyword")
    for method in ["full_context", "rag_keyword", "hybrid", "extracted_context", "block_based"]:
        answerer = create(method, ctx)
        for case in cases:
            await answerer.answer(case.haystack, case.questions[0].question)
    text = "\n".join(prompt_text(messages) for messages in sent(fake))
    for case in cases:
        for cid in case.conversation_ids:
            assert cid not in text
    for needle in [
        "containsEvidence",
        "contains_evidence",
        "locomo_original",
        "hand-written",
        "model_name",
        "message_evidences",
        "locomo_1_session",
    ]:
        assert needle not in text
    # the gold answer never reaches an answer prompt
    assert "There is no information in prior conversations to answer this question" not in text


async def test_full_context_over_the_window_is_refused_never_truncated_with_a_scripted_llm() -> None:
    data = synthetic_data(n_filler=10, n_items=1, n_messages=20)
    case = build_cases(data, MixConfig(sizes=(10,))).cases[0]
    fake, llm = answering(_echo, context_window=2048)
    ctx = AnswererContext(llm=llm, budget_tokens=1000)
    ans = await create("full_context", ctx).answer(case.haystack, case.questions[0].question)
    assert ans.error is None and ans.context_overflow and ans.text == ""
    assert fake.calls == 0, "an overflowing history is not sent at all"
    assert ans.context_mids == [] and ans.route.startswith("refused")
    # a window that holds the history: asked whole
    roomy, roomy_llm = answering(_echo, context_window=200_000)
    whole = await create("full_context", AnswererContext(llm=roomy_llm)).answer(
        case.haystack, case.questions[0].question
    )
    assert not whole.context_overflow and roomy.calls == 1
    assert {mid.split(":")[0] for mid in whole.context_mids} == {str(i) for i in range(len(case.haystack))}


@pytest.mark.parametrize("method", ["extracted_context", "block_based"])
async def test_two_stage_methods_refuse_a_history_over_the_helper_window_with_a_scripted_llm(method: str) -> None:
    data = synthetic_data(n_filler=30, n_items=1, n_messages=40)
    case = build_cases(data, MixConfig(sizes=(30,))).cases[0]
    helper, helper_llm = answering(_echo, context_window=1024)
    answer, answer_llm = answering(_echo, context_window=1_000_000)
    ans = await create(method, AnswererContext(llm=answer_llm, helper_llm=helper_llm)).answer(
        case.haystack, case.questions[0].question
    )
    assert ans.context_overflow and ans.error is None and not helper.calls and not answer.calls


@pytest.mark.parametrize("retrieval", ["keyword", "dense", "hybrid"])
async def test_rag_stays_within_budget_and_finds_the_evidence(retrieval: str, shared_embedder: Any) -> None:
    data = synthetic_data(n_filler=12, n_items=3, n_messages=20)
    cases = build_cases(data, MixConfig(sizes=(12,))).cases
    ctx = AnswererContext(
        llm=None,
        budget_tokens=1200,
        retrieval=retrieval,  # type: ignore[arg-type]
        embedder_factory=lambda: shared_embedder,
    )
    rag = create("rag", ctx)
    for case in cases:
        q = case.questions[0]
        sel = await rag.select(case.haystack, q.question)
        assert sel.input_tokens <= 1200
        assert evidence_recall(case.evidence_mids[q.qid], sel.context_mids) == 1.0
        assert sel.route == f"rag:{retrieval}"


async def test_hybrid_switches_from_full_context_to_retrieval() -> None:
    data = synthetic_data(n_filler=20, n_items=1, n_messages=20)
    small, large = build_cases(data, MixConfig(sizes=(1, 20), mode="standard")).cases
    ctx = AnswererContext(llm=None, budget_tokens=2000, retrieval="keyword")
    hybrid = create("hybrid", ctx)
    sel_small = await hybrid.select(small.haystack, small.questions[0].question)
    sel_large = await hybrid.select(large.haystack, large.questions[0].question)
    assert sel_small.route == "full" and len(sel_small.context_mids) == len(small.haystack.messages)
    assert sel_large.route == "rag:hybrid" or sel_large.route.startswith("rag")
    assert sel_large.input_tokens <= 2000


async def test_llm_errors_become_row_errors_and_window_refusals_overflow_with_a_scripted_llm() -> None:
    def boom(messages: list[dict[str, str]]) -> httpx.Response:
        return error(400, "bad request")

    def too_long(messages: list[dict[str, str]]) -> httpx.Response:
        return error(400, "This model's maximum context length is 2048 tokens")

    case = _sample_cases()[0]
    question = case.questions[0].question
    ans = await create("full_context", AnswererContext(llm=answering(boom)[1])).answer(case.haystack, question)
    assert ans.error and "HTTP 400" in ans.error and not ans.context_overflow
    over = await create("full_context", AnswererContext(llm=answering(too_long)[1])).answer(case.haystack, question)
    assert over.error is None and over.context_overflow and over.text == ""
    helper_over = await create(
        "block_based", AnswererContext(llm=answering(_echo)[1], helper_llm=answering(too_long)[1])
    ).answer(case.haystack, question)
    assert helper_over.error is None and helper_over.context_overflow


async def test_two_stage_tokens_are_the_final_calls_with_helpers_apart_with_a_scripted_llm() -> None:
    case = _sample_cases((12,))[0]
    answer, answer_llm = answering(lambda m: "Biscuit")
    helper, helper_llm = answering(lambda m: "User: my dog is called Biscuit")
    ans = await create("block_based", AnswererContext(llm=answer_llm, helper_llm=helper_llm)).answer(
        case.haystack, case.questions[0].question
    )
    final_prompt = sum(len(m["content"]) for m in sent(answer)[0]) // 4
    helper_prompts = sum(sum(len(m["content"]) for m in msgs) // 4 for msgs in sent(helper))
    assert ans.usage.prompt_tokens == final_prompt and ans.helper_usage.prompt_tokens == helper_prompts
    assert ans.helper_usage.completion_tokens > 0 and ans.total.calls == helper.calls + 1
    assert ans.helper_model == "scripted-fake" and ans.usage.cached_tokens is None
    _, nothing = answering(lambda m: "No information is relevant.")
    canned = await create("block_based", AnswererContext(llm=nothing)).answer(case.haystack, "What is my cat called?")
    assert canned.canned and canned.usage.prompt_tokens == 0 and canned.helper_usage.prompt_tokens > 0


def test_registry_and_sentinel() -> None:
    assert {"full_context", "rag", "hybrid", "mark", "extracted_context", "block_based"} <= set(method_names())
    with pytest.raises(InvalidInput, match="unknown method"):
        create("magic", AnswererContext())
    assert is_no_info("No information is relevant.") and is_no_info("no information is relevant")
    assert not is_no_info("The user said their dog is called Biscuit.")


async def test_mark_builds_memories_recalls_and_answers_with_scripted_fake_llm(tmp_path: Path) -> None:
    from mark_agents.config import Settings

    case = next(c for c in _sample_cases((2,)) if c.questions[0].category == "user_facts")
    q = case.questions[0]

    # extraction: one note per user message of the exchange; every other request is answered "Biscuit"
    def extract(body: dict) -> str:
        return RoleScript.notes(*[("user_question", f"The user said: {t}") for t in RoleScript.said(body)])

    fake = RoleScript(extract=extract, reply=lambda body: "Biscuit")
    llm = fake.client()
    settings = Settings(home=tmp_path / "home")
    ctx = AnswererContext(llm=llm, budget_tokens=1500, settings=settings, work_dir=tmp_path)
    mark = create("mark", ctx)
    try:
        await mark.prepare(case.haystack)
        ans = await mark.answer(case.haystack, q.question)
    finally:
        await mark.aclose()  # the agent's database threads would keep the test process alive
    assert (await llm.chat([{"role": "user", "content": "still there?"}])).text == "Biscuit"  # only lent
    assert ans.error is None and ans.text == "Biscuit"
    assert ans.index_tokens > 0 and ans.route.startswith("mark:")
    answer_prompt = prompt_text(fake.calls("reply")[-2]["messages"])
    assert "MEMORIES" in answer_prompt and GRADING_BLOCK in answer_prompt
    # the memory extracted from the evidence exchange was recalled: the evidence reached the prompt
    assert evidence_recall(case.evidence_mids[q.qid], ans.context_mids) == 1.0
    assert (tmp_path / "mark-home").is_dir()  # never the user's own store


def test_sample_json_is_valid_convomem_payload() -> None:
    root = Path(__file__).parents[2] / "eval" / "convomem" / "sample"
    for path in root.glob("*.json"):
        payload = json.loads(path.read_text())
        assert set(payload) == {"evidence_items", "checkpoint"}


@pytest.mark.parametrize("method", ["extracted_context", "block_based"])
async def test_two_stage_methods_use_the_helper_model_uncapped_with_a_scripted_llm(method: str) -> None:
    case = _sample_cases((12,))[0]
    answer, answer_llm = answering(lambda m: "Biscuit")
    helper, helper_llm = answering(lambda m: "User: my dog is called Biscuit")
    ctx = AnswererContext(llm=answer_llm, helper_llm=helper_llm, retrieval="keyword")
    ans = await create(method, ctx).answer(case.haystack, case.questions[0].question)
    assert ans.error is None and ans.text == "Biscuit"
    assert set(helper_llm.meter.by_label()) <= {"extract.context", "extract.block"} and helper.calls
    assert list(answer_llm.meter.by_label()) == [f"answer.{method}"] and answer.calls == 1
    assert set(max_tokens(helper)) == {None}, "no cap on a helper pass, as in the reference"
    assert max_tokens(answer) == [1024]
    # without a helper model the answering model does both: the helper passes first, the answer last
    alone, alone_llm = answering(lambda m: "Biscuit")
    await create(method, AnswererContext(llm=alone_llm, retrieval="keyword")).answer(
        case.haystack, case.questions[0].question
    )
    assert {label.split(".")[0] for label in alone_llm.meter.by_label()} == {"extract", "answer"}
    assert not _is_answer(sent(alone)[0]) and _is_answer(sent(alone)[-1])


async def test_answer_cap_is_configurable_with_a_scripted_llm() -> None:
    case = _sample_cases()[0]
    fake, llm = answering(lambda m: "Biscuit")
    await create("full_context", AnswererContext(llm=llm, max_answer_tokens=2048)).answer(
        case.haystack, case.questions[0].question
    )
    assert max_tokens(fake) == [2048]
