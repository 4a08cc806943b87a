"""Mixing invariants: sizes, no conversation twice, evidence order kept, seeded reproducibility."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mark_eval.convomem.loaders import ConvoMemData, load_data, load_sample
from mark_eval.convomem.mixing import DEFAULT_SIZES, MixConfig, build_cases, select_questions
from mark_eval.convomem.schema import Conversation, Item, Message, Question
from memory_store.errors import InvalidInput


def _synthetic(n_items: int, n_evidence: int, n_filler: int, persons: int) -> ConvoMemData:
    items: list[Item] = []
    for i in range(n_items):
        convs = [
            Conversation(id=f"ev-{i}-{k}", messages=[Message(speaker="User", text=f"fact {i} part {k}")])
            for k in range(n_evidence)
        ]
        q = Question(
            qid=f"q{i:04d}",
            category="user_facts",
            evidence_count=n_evidence,
            question=f"q{i}?",
            answer="a",
            evidence_texts=tuple(f"fact {i} part {k}" for k in range(n_evidence)),
            evidence_conversation_ids=tuple(c.cid for c in convs),
            person_id=f"p{i % persons}",
        )
        items.append(Item(question=q, conversations=convs))
    filler: dict[str, list[Conversation]] = {}
    for j in range(n_filler):
        filler.setdefault(f"p{j % persons}", []).append(
            Conversation(id=f"f-{j}", messages=[Message(speaker="assistant", text=f"filler {j}")])
        )
    return ConvoMemData(items=items, filler=filler)


def _check_case(case, items_by_qid: dict[str, Item]) -> None:  # type: ignore[no-untyped-def]
    ids = case.conversation_ids
    assert len(ids) == len(set(ids)), "a conversation appears twice"
    assert len(ids) == case.context_size
    for q in case.questions:
        ev = [c.cid for c in items_by_qid[q.qid].conversations]
        positions = [ids.index(cid) for cid in ev]
        assert positions == sorted(positions), "evidence order not kept"
        assert len(case.evidence_mids[q.qid]) == len(ev)


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(1, 12),
    n_evidence=st.integers(1, 4),
    n_filler=st.integers(0, 60),
    persons=st.integers(1, 3),
    mode=st.sampled_from(["standard", "batched"]),
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.sampled_from(DEFAULT_SIZES[:10]), min_size=1, max_size=5, unique=True),
)
def test_mixing_invariants(n_items, n_evidence, n_filler, persons, mode, seed, sizes) -> None:  # type: ignore[no-untyped-def]
    data = _synthetic(n_items, n_evidence, n_filler, persons)
    config = MixConfig(sizes=tuple(sizes), mode=mode, seed=seed)
    result = build_cases(data, config)
    by_qid = {it.question.qid: it for it in data.items}
    for case in result.cases:
        _check_case(case, by_qid)
        assert case.context_size >= n_evidence
    # every (item, size) that fits is either asked or reported as skipped
    asked = {(q.qid, c.context_size) for c in result.cases for q in c.questions}
    for size in sizes:
        if size < n_evidence:
            assert not any(s == size for _, s in asked)
        elif not any(f"size {size} skipped" in w for w in result.warnings):
            assert {qid for qid, s in asked if s == size} == set(by_qid)
    again = build_cases(data, config)
    assert [c.conversation_ids for c in again.cases] == [c.conversation_ids for c in result.cases]


def test_seed_changes_the_haystack_and_subsets_are_stable() -> None:
    data = _synthetic(6, 1, 40, 1)
    a = build_cases(data, MixConfig(sizes=(10,), seed=1, mode="standard")).cases
    b = build_cases(data, MixConfig(sizes=(10,), seed=2, mode="standard")).cases
    assert [c.conversation_ids for c in a] != [c.conversation_ids for c in b]
    # standard mixing is seeded per item: a subset gets the same haystacks
    subset = select_questions(data, None, None, limit=2)
    c = build_cases(subset, MixConfig(sizes=(10,), seed=1, mode="standard")).cases
    by_q = {case.questions[0].qid: case.conversation_ids for case in a}
    for case in c:
        assert by_q[case.questions[0].qid] == case.conversation_ids


def test_short_filler_is_reported_or_an_error_never_duplicated() -> None:
    data = _synthetic(1, 1, 5, 1)
    result = build_cases(data, MixConfig(sizes=(3, 6, 10), mode="standard"))
    assert [c.context_size for c in result.cases] == [3, 6]
    assert any("size 10 skipped" in w and "only 5" in w for w in result.warnings)
    with pytest.raises(InvalidInput, match="size 10"):
        build_cases(data, MixConfig(sizes=(10,), on_short="error"))


def test_batched_is_the_default_packs_items_and_re_asks_to_ten_haystacks() -> None:
    assert MixConfig().mode == "batched"
    data = _synthetic(10, 1, 0, 2)
    cases = build_cases(data, MixConfig(sizes=(5,))).cases
    # 10 items of one conversation pack into 2 haystacks of 5 (each other's evidence is the filler); 8 more
    # haystacks re-ask them round the same order, so each item is asked 5 times, each time elsewhere
    assert len(cases) == 10 and all(len(c.questions) == 5 and c.context_size == 5 for c in cases)
    asked = [(q.qid, c.repeat(q.qid)) for c in cases for q in c.questions]
    assert len(asked) == len(set(asked)) == 50
    assert {qid for qid, _ in asked} == {it.question.qid for it in data.items}
    assert sorted({r for _, r in asked}) == [0, 1, 2, 3, 4]
    # many items: no re-asking, at most 100 per haystack, the rest of a haystack is filler
    many = _synthetic(250, 1, 400, 2)
    big = build_cases(many, MixConfig(sizes=(300,), min_cases=2)).cases
    assert [len(c.questions) for c in big] == [100, 100, 50] and all(len(c.haystack) == 300 for c in big)
    assert all(c.repeat(q.qid) == 0 for c in big for q in c.questions)


def test_limit_picks_the_asked_questions_after_batching() -> None:
    data = _synthetic(30, 1, 100, 3)
    config = MixConfig(sizes=(4, 20))
    full = build_cases(select_questions(data, None, None, None), config).cases
    limited_data = select_questions(data, None, None, limit=3)
    assert len(limited_data.items) == 30 and limited_data.asked == {"q0000", "q0001", "q0002"}
    limited = build_cases(limited_data, config).cases
    assert {q.qid for c in limited for q in c.questions} == {"q0000", "q0001", "q0002"}
    # the limited run's haystacks are the full run's, distractors and all
    by_key = {(c.context_size, q.qid, c.repeat(q.qid)): c.conversation_ids for c in full for q in c.questions}
    for case in limited:
        for q in case.questions:
            assert by_key[(case.context_size, q.qid, case.repeat(q.qid))] == case.conversation_ids
            assert len(case.evidence_mids[q.qid]) == 1


def test_sample_and_released_layout_mix(released_dir: Path) -> None:
    sample = load_sample()
    result = build_cases(sample, MixConfig(sizes=(1, 2, 6), mode="standard"))
    assert result.cases and not result.warnings
    data = load_data(released_dir)
    result = build_cases(data, MixConfig(sizes=(2, 4)), sizes_given=True)
    sizes = sorted({c.context_size for c in result.all_cases()})
    assert sizes == [2, 4]  # the pre-mixed size-2 case plus mixed ones


def test_the_leniency_check_sees_only_the_asked_questions() -> None:
    data = select_questions(_synthetic(8, 1, 10, 1), None, None, limit=3)
    assert len(data.questions()) == 8
    assert [q.qid for q in data.asked_questions()] == ["q0000", "q0001", "q0002"]
    assert len(select_questions(_synthetic(8, 1, 10, 1), None, None, None).asked_questions()) == 8
