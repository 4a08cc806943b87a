"""Reading LoCoMo: conv-30 in its flat layout, the same dialogue in locomo10.json's layout, evidence mapping,
speaker names and session dates in the prompts, and bad files refused with the file and the problem."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.answerers.full_context import FullContext
from mark_eval.convomem.answerers.rag import Rag
from mark_eval.convomem.prompts import CONVOMEM_PROMPTS, ContextKind, answer_messages
from mark_eval.convomem.schema import Conversation, Haystack, Message
from mark_eval.locomo.categories import NOT_MENTIONED
from mark_eval.locomo.loader import load_locomo, parse_date, select
from mark_eval.locomo.prompts import LOCOMO_PROMPTS
from memory_store.errors import InvalidInput

CONV30 = Path(__file__).parent / "data" / "locomo" / "conv-30.json"


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(CONV30.read_text())


def _sessions(raw: dict) -> dict:
    keys = [k for k in raw if k.startswith("session_") and not k.endswith(("_observation", "_summary"))]
    return {k: raw[k] for k in keys}


def test_conv30_flat_layout(raw: dict) -> None:
    data = load_locomo(CONV30)
    assert data.warnings == []
    [d] = data.dialogues
    assert (d.sample_id, d.speaker_a, d.speaker_b) == ("conv-30", "Jon", "Gina")
    assert len(d.conversations) == 19
    assert sum(len(c.messages) for c in d.conversations) == 369
    counts: dict[str, int] = {}
    for q in d.questions:
        counts[q.category] = counts.get(q.category, 0) + 1
    assert counts == {"multi_hop": 11, "temporal": 26, "single_hop": 44, "adversarial": 24}
    first = d.conversations[0]
    assert first.date == "4:04 pm on 20 January, 2023"
    assert first.started_at == datetime(2023, 1, 20, 16, 4)
    assert [c.date for c in d.conversations] == [raw[f"session_{n}_date_time"] for n in range(1, 20)]
    msg = first.messages[0]
    assert (msg.name, msg.speaker) == ("Gina", "assistant")  # speaker_a (Jon) plays the user role
    assert first.messages[1].name == "Jon" and first.messages[1].speaker == "user"
    # a shared photo keeps its caption
    assert first.messages[13].text.endswith("[shares a photo: a photography of a man in a suit is performing a dance]")


def test_conv30_evidence_maps_to_the_turns_named_by_dia_id(raw: dict) -> None:
    [d] = load_locomo(CONV30).dialogues
    case = d.to_case()
    by_dia = {t["dia_id"]: t for n in range(1, 20) for t in raw[f"session_{n}"]}
    checked = 0
    for q, entry in zip(d.questions, raw["qa"], strict=True):
        mids = case.evidence_mids[q.qid]
        assert len(mids) == len(entry["evidence"])
        for dia, mid in zip(entry["evidence"], mids, strict=True):
            session, turn = (int(x) for x in dia[1:].split(":"))
            assert mid == f"{session - 1}:{turn - 1}"  # "D3:5" -> conversation 2, message 4
            ci, mi = (int(x) for x in mid.split(":"))
            msg = case.haystack.conversations[ci][mi]
            assert msg.text.startswith(by_dia[dia]["text"]) and msg.name == by_dia[dia]["speaker"]
            checked += 1
    assert checked == sum(len(e["evidence"]) for e in raw["qa"])


def test_conv30_answers_and_adversarial_gold(raw: dict) -> None:
    [d] = load_locomo(CONV30).dialogues
    for q, entry in zip(d.questions, raw["qa"], strict=True):
        assert q.question == entry["question"].strip()
        if entry["category"] == 5:
            assert q.answer == NOT_MENTIONED and q.distractor == entry["adversarial_answer"]
        else:
            assert q.answer == str(entry["answer"]).strip() and q.distractor is None
    assert len({q.qid for q in d.questions}) == len(d.questions)


def test_locomo10_layout_gives_the_same_dialogue(tmp_path: Path, raw: dict) -> None:
    """A locomo10.json-style list built from conv-30's content: same haystack and questions as the flat file."""
    conversation = {"speaker_a": raw["speaker_a"], "speaker_b": raw["speaker_b"], **_sessions(raw)}
    sample = {"sample_id": "conv-30", "conversation": conversation, "qa": raw["qa"], "event_summary": {}}
    second = {**sample, "sample_id": "conv-30b"}
    path = tmp_path / "locomo10.json"
    path.write_text(json.dumps([sample, second]))
    nested = load_locomo(path)
    flat = load_locomo(CONV30)
    assert [d.sample_id for d in nested.dialogues] == ["conv-30", "conv-30b"]
    a, b = nested.dialogues[0].to_case(), flat.dialogues[0].to_case()
    assert a.haystack.hid == b.haystack.hid and a.haystack.dates == b.haystack.dates
    assert [m.text for m in a.haystack.messages] == [m.text for m in b.haystack.messages]
    assert [q.qid for q in a.questions] == [q.qid for q in b.questions]
    assert nested.dialogues[1].to_case().haystack.hid != a.haystack.hid
    # the flat layout as a list of dialogues
    flat_list = tmp_path / "two.json"
    flat_list.write_text(json.dumps([raw, raw]))
    assert [d.sample_id for d in load_locomo(flat_list).dialogues] == ["two-0", "two-1"]


def test_select_by_category_and_limit() -> None:
    data = load_locomo(CONV30)
    [case] = select(data, {"temporal", "adversarial"}, limit=3)
    assert [q.category for q in case.questions] == ["temporal"] * 3 + ["adversarial"] * 3
    assert set(case.evidence_mids) == {q.qid for q in case.questions}


def test_unknown_evidence_id_is_a_warning(tmp_path: Path, raw: dict) -> None:
    broken = dict(raw)
    broken["qa"] = [{**raw["qa"][0], "evidence": ["D1:3", "D99:1", "see above"]}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(broken))
    data = load_locomo(path)
    assert data.dialogues[0].evidence_mids[data.dialogues[0].questions[0].qid] == ["0:2"]
    assert len(data.warnings) == 2 and "D99:1" in data.warnings[0]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("speaker_a"), "'speaker_a' is missing"),
        (lambda d: d.update(session_2="hello"), "session_2 is not a list"),
        (lambda d: d["session_1"][0].pop("text"), "session_1[0]: turn has no 'text'"),
        (lambda d: d["session_1"][0].update(dia_id="x"), "dia_id 'x'"),
        (lambda d: d["qa"][0].update(category=7), "qa[0]: category 7 is not one of 1-5"),
        (lambda d: d["qa"][0].pop("answer"), "qa[0]: category 2 question without an 'answer'"),
        (lambda d: d.pop("qa"), "no 'qa'"),
        (lambda d: d.update(session_3_date_time=3), "session_3_date_time is not a string"),
    ],
)
def test_malformed_dialogue_names_file_and_problem(tmp_path: Path, raw: dict, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    bad = json.loads(json.dumps(raw))
    mutate(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidInput) as err:
        load_locomo(path)
    assert str(path) in str(err.value) and needle in str(err.value)
    assert err.value.exit_code == 2


def test_parse_date() -> None:
    assert parse_date("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56)
    assert parse_date("12:48 am on 1 February, 2023") == datetime(2023, 2, 1, 0, 48)
    assert parse_date("sometime in spring") is None and parse_date(None) is None


async def test_prompts_show_names_and_session_dates() -> None:
    [d] = load_locomo(CONV30).dialogues
    case = d.to_case()
    ctx = AnswererContext(prompts=LOCOMO_PROMPTS)
    sel = await FullContext(ctx).select(case.haystack, "When did Jon lose his job?")
    prompt = sel.messages[1]["content"]
    assert "Conversation 1 (4:04 pm on 20 January, 2023):\nGina: Hey Jon!" in prompt
    assert "Conversation 19 (6:46 pm on 23 July, 2023):" in prompt
    assert "user:" not in prompt and "assistant:" not in prompt
    assert "refer to the user asking you now" not in prompt  # ConvoMem's self-reference note is not LoCoMo's
    kw = await Rag(
        AnswererContext(prompts=LOCOMO_PROMPTS, retrieval="keyword", budget_tokens=800), mode="keyword"
    ).select(case.haystack, "What did Jon lose as a banker?")
    excerpt = kw.messages[1]["content"]
    assert "(excerpt):" in excerpt and "(4:04 pm on 20 January, 2023) (excerpt):" in excerpt


def test_convomem_rendering_is_unchanged() -> None:
    conv = Conversation(
        messages=[Message(speaker="User", text="My cat is Miso."), Message(speaker="assistant", text="Hi")]
    )
    haystack = Haystack.build([conv])
    from mark_eval.convomem.render import render_conversations, render_flat

    assert render_conversations(haystack.conversations) == "Conversation 1:\nuser: My cat is Miso.\nassistant: Hi"
    assert render_flat(haystack.conversations) == "user: My cat is Miso.\nassistant: Hi"
    body = answer_messages("q?", "ctx", ContextKind.HISTORY)[1]["content"]
    assert body == answer_messages("q?", "ctx", ContextKind.HISTORY, CONVOMEM_PROMPTS)[1]["content"]
    assert "refer to the user asking you now" in body
