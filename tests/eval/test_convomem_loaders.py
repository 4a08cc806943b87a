"""Loaders: the real LoCoMo test cases, the released layout, the bundled sample, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mark_eval.convomem.categories import CORE_CATEGORIES, resolve_category
from mark_eval.convomem.loaders import iter_streamed, load_data, load_sample
from memory_store.errors import InvalidInput


def test_locomo_single_object_files_load_as_premixed_cases(locomo_dir: Path) -> None:
    data = load_data(locomo_dir)
    assert not data.items
    assert sorted((c.context_size, len(c.questions)) for c in data.premixed) == [(19, 11), (19, 24)]
    cats = {q.category for c in data.premixed for q in c.questions}
    assert cats == {"locomo_basic_facts", "locomo_abstention"}
    for case in data.premixed:
        assert len(case.haystack) == 19
        assert len(case.haystack.messages) == 369
        for q in case.questions:
            assert q.evidence_count == 0  # the anchors' convention for LoCoMo
            # every evidence turn is found verbatim in the haystack
            assert len(case.evidence_mids[q.qid]) == len(q.evidence_texts)
        assert {m.speaker for m in case.haystack.messages} == {"assistant"}


def test_released_layout_loads_every_kind(released_dir: Path) -> None:
    data = load_data(released_dir)
    by = {(it.question.category, it.question.evidence_count) for it in data.items}
    assert by == {("user_facts", 1), ("changing", 2)}
    assert data.filler_count == 8
    # the pre-mixed shard (an array) is indexed, not held: its case is read again when run
    assert not data.premixed and len(data.streamed) == 1 and data.streamed[0].context_size == 2
    [case] = iter_streamed(data.streamed)
    assert case.questions[0].category == "user_facts"
    assert case.evidence_mids[case.questions[0].qid] == ["1:2"]
    speakers = {m.speaker for it in data.items for c in it.conversations for m in c.messages}
    assert speakers == {"user", "assistant"}


def test_question_ids_are_stable_across_loads(released_dir: Path) -> None:
    a = sorted(q.qid for q in load_data(released_dir).questions())
    b = sorted(q.qid for q in load_data(released_dir).questions())
    assert a == b and len(set(a)) == len(a)


def test_sample_covers_all_six_categories_with_filler() -> None:
    data = load_sample()
    cats = {it.question.category for it in data.items}
    assert cats == set(CORE_CATEGORIES)
    assert data.filler_count >= 12
    for it in data.items:
        assert len(it.question.evidence_texts) == len(it.conversations)
        for conv in it.conversations:
            assert 4 <= len(conv.messages) <= 12
            texts = [m.text for m in conv.messages]
            assert any(t in texts for t in it.question.evidence_texts)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"evidence_items": [{"question": "q", "answer": "a", "conversations": [', "malformed JSON"),
        ("", "empty file"),
        ('{"evidence_items": [{"answer": "a", "conversations": []}]}', "question: Field required"),
        ('{"evidence_items": [{"question": "q", "answer": "a", "conversations": []}]}', "empty haystack"),
        (
            '{"evidenceItems": [{"question": "q", "answer": "a"}], "conversations": [], "contextSize": 1}',
            "empty haystack",
        ),
        ('[{"evidenceItems": [], "conversations": [{"messages": [{"speaker": "user", "text": "x"}]}]}]', "contextSize"),
    ],
)
def test_bad_files_raise_invalid_input_naming_the_file(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "user_evidence" / "bad.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(InvalidInput) as err:
        load_data(tmp_path)
    assert str(bad) in str(err.value)
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_category_and_missing_path() -> None:
    with pytest.raises(InvalidInput, match="unknown category"):
        resolve_category("gossip")
    assert resolve_category("user_evidence") == "user_facts"
    assert resolve_category("Implicit connections") == "implicit_connection"
    with pytest.raises(InvalidInput, match="no such file"):
        load_data(Path("/nonexistent/convomem"))


def test_category_is_required_when_the_path_does_not_say(tmp_path: Path) -> None:
    item = {
        "question": "q",
        "answer": "a",
        "category": "Event Planning",
        "conversations": [{"messages": [{"speaker": "User", "text": "hi"}]}],
    }
    (tmp_path / "stuff.json").write_text(json.dumps({"evidence_items": [item]}))
    with pytest.raises(InvalidInput, match="cannot tell its benchmark category"):
        load_data(tmp_path / "stuff.json")
    with pytest.raises(InvalidInput, match=r"no questions found.*cannot tell"):
        load_data(tmp_path)


def test_directory_walk_skips_files_that_are_not_convomem_data(released_dir: Path) -> None:
    (released_dir / "dataset_info.json").write_text('{"description": "ConvoMem", "splits": {}}')
    data = load_data(released_dir)
    assert data.items and len(data.skipped) == 1 and "dataset_info.json" in data.skipped[0]
    with pytest.raises(InvalidInput, match="not a ConvoMem file"):
        load_data(released_dir / "dataset_info.json")


def test_person_id_falls_back_to_the_evidence_file_name(tmp_path: Path) -> None:
    """As the reference loads evidence: an item without ``personId`` belongs to ``<personId>_<Role>.json``."""
    import json

    from mark_eval.convomem.mixing import MixConfig, build_cases

    root = tmp_path / "core_benchmark"
    ev = root / "evidence_questions" / "user_evidence" / "1_evidence"
    ev.mkdir(parents=True)
    item = {
        "question": "What is my cat called?",
        "answer": "Miso",
        "message_evidences": [{"speaker": "User", "text": "My cat Miso is asleep."}],
        "conversations": [{"id": "ev-1", "messages": [{"speaker": "User", "text": "My cat Miso is asleep."}]}],
    }
    (ev / "abc123_Product_Manager.json").write_text(json.dumps({"evidence_items": [item]}))
    fill = root / "filler_conversations"
    fill.mkdir(parents=True)
    for person in ("abc123", "zzz999"):
        convs = [{"id": f"{person}-{i}", "messages": [{"speaker": "User", "text": f"{person} {i}"}]} for i in range(4)]
        payload = {"evidence_items": [{"question": "x", "answer": "y", "conversations": convs}]}
        (fill / f"{person}_Role.json").write_text(json.dumps(payload))
    data = load_data(tmp_path)
    [q] = data.questions()
    assert q.person_id == "abc123"
    cases = build_cases(data, MixConfig(sizes=(4,))).cases
    assert cases and all(cid.startswith(("ev-", "abc123-")) for c in cases for cid in c.conversation_ids)
