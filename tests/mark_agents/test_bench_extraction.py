"""`mark bench extraction`: the scorer (pure functions), the labelled set, and the command.

The scorer is tested on hand-made notes; the command runs once on a scripted fake LLM (control flow, files
written) and once on a few exchanges with the real local model (marked ``llm``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mark_agents import bench_extraction as bx
from mark_agents.bench_extraction import (
    Exchange,
    ExtractionResult,
    LabelledFact,
    covers,
    default_set_path,
    is_third_person,
    key_matches,
    load_set,
    normalize,
    score,
)
from mark_cli.main import app
from memory_store import InvalidInput
from tests.mark_agents.fake_llm import RoleLLM

JOB = LabelledFact("The user lost his job as a banker.", ("bank", "lost|los|laid off"))
BUSINESS = LabelledFact("The user is starting his own business.", ("start|launch", "business|biz"))
CORNELL = LabelledFact("The assistant recommended the Cornell method.", ("cornell",), "assistant")
NAME = LabelledFact("The user's name is Jon.", ("jon",))


def exchange(id: str, facts=(), optional=(), tags=()) -> Exchange:
    return Exchange(id=id, messages=(("user", "..."),), facts=tuple(facts), optional=tuple(optional), tags=tags)


def test_keys_match_at_a_word_start_with_alternatives() -> None:
    note = normalize("The user's dance-crew won 1st place; he was a Banker.")
    assert note == " the user s dance crew won 1st place he was a banker "
    assert key_matches("danc", note) and key_matches("bank", note) and key_matches("dance crew", note)
    assert key_matches("lost|won", note) and not key_matches("lost|los", note)
    assert not key_matches("anker", note)  # inside a word is no match
    assert covers(JOB, "The user was laid off from the bank.") and not covers(JOB, "The user works at a bank.")


def test_third_person_means_no_first_or_second_person_word() -> None:
    assert is_third_person("The user's dog is called Biscuit.")
    assert is_third_person("The assistant recommended the Cornell method to the user.")
    assert not is_third_person("Hi! My dog is called Biscuit.")
    assert not is_third_person("I’m a nurse.")  # typographic apostrophe
    assert not is_third_person("The assistant recommended that you try it.")


def test_score_counts_coverage_one_fact_per_note_unmatched_third_person_and_quiet() -> None:
    exchanges = [
        exchange("two-facts", [JOB, BUSINESS], [NAME], tags=("two-fact",)),
        exchange("advice", [CORNELL]),
        exchange("nothing", [], [NAME], tags=("nothing",)),
        exchange("nothing-2", [], []),
    ]
    results = [
        # one note holding both facts, one optional note, one note about nothing labelled
        ExtractionResult(
            "two-facts",
            notes=["The user lost his bank job and is starting a business.", "The user is Jon.", "It rained."],
            kinds=["user_question"] * 3,
            seconds=2.0,
            prompt_tokens=300,
            completion_tokens=40,
        ),
        ExtractionResult("advice", error="the model is down", seconds=0.1),
        ExtractionResult("nothing", notes=["Jon said thanks."], kinds=["residual"], seconds=1.0),
        ExtractionResult("nothing-2", notes=["I say thanks."], kinds=["user_question"], seconds=1.0),
    ]
    s = score(exchanges, results)
    assert (s["exchanges"], s["facts"], s["notes"]) == (4, 3, 5)
    assert s["fact_coverage"] == pytest.approx(2 / 3)  # the Cornell fact is missed (its extraction failed)
    assert s["coverage_by_type"] == {"user": 1.0, "assistant": 0.0} and s["facts_by_type"] == {
        "user": 2,
        "assistant": 1,
    }
    assert s["coverage_by_tag"] == {"two-fact": 1.0}
    assert s["one_fact_per_note"] == pytest.approx(4 / 5)  # the two-fact note is the only one over
    assert s["unmatched_notes"] == pytest.approx(2 / 5)  # "It rained." and "I say thanks."
    assert s["third_person"] == pytest.approx(4 / 5)
    assert s["quiet"] == 0.5 and s["quiet_exchanges"] == 2  # an optional note is fine, a stray one is not
    assert s["errors"] == 1
    assert s["exchanges_per_min"] == pytest.approx(3 / 4.0 * 60)  # failed calls are not timed
    assert s["prompt_tokens_mean"] == pytest.approx(100)
    first = s["details"][0]
    assert [n["facts"] for n in first["notes"]] == [[0, 1], [], []]
    assert [n["optional"] for n in first["notes"]] == [False, True, False] and first["missed"] == []
    assert s["details"][1]["missed"] == [CORNELL.text] and s["details"][1]["error"] == "the model is down"


def test_score_of_no_notes_has_no_note_shares() -> None:
    s = score([exchange("a", [JOB])], [ExtractionResult("a")])
    assert s["fact_coverage"] == 0.0 and s["one_fact_per_note"] is None and s["third_person"] is None


def test_the_labelled_set_is_complete_and_its_own_labels_score_perfectly() -> None:
    exchanges = load_set(default_set_path())
    assert len(exchanges) >= 40 and len({e.id for e in exchanges}) == len(exchanges)
    tags = {t for e in exchanges for t in e.tags}
    assert {"nothing", "two-fact", "assistant-accepted", "correction"} <= tags
    assert sum(not e.facts for e in exchanges) >= 5
    assert {f.type for e in exchanges for f in e.facts} == {"user", "assistant", "correction"}
    assert all(1 <= len(e.messages) <= 3 and e.messages[0][0] == "user" for e in exchanges)
    # Notes written exactly as the labels are one fact each and cover everything: the keys are consistent.
    perfect = [
        ExtractionResult(e.id, notes=[f.text for f in e.facts], kinds=["user_question"] * len(e.facts))
        for e in exchanges
    ]
    s = score(exchanges, perfect)
    assert s["fact_coverage"] == 1.0 and s["one_fact_per_note"] == 1.0 and s["unmatched_notes"] == 0.0
    assert s["quiet"] == 1.0
    # Every key of a fact about what was said is in the exchange (only "assistant", naming the speaker, may not be).
    for e in exchanges:
        said = normalize(" ".join(text for _, text in e.messages))
        for f in (*e.facts, *e.optional):
            for key in f.keys:
                assert key == "assistant" or key_matches(key, said), (e.id, key)


def test_a_bad_set_file_is_one_line_of_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no labelled extraction set"):
        load_set(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"exchanges": [{"id": "x", "messages": [{"role": "robot", "content": "hi"}]}]}))
    with pytest.raises(InvalidInput, match="not a labelled extraction set"):
        load_set(bad)
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_set(bad)


def test_bench_extraction_command_with_scripted_fake_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = RoleLLM()
    # The "model" copies the user's first message: the builder's cleaning turns it into third person.
    fake.extract = lambda body: fake.notes(("user_question", fake.said(body)[0]))
    connected = []

    async def connect(llm_settings, models_dir):
        connected.append(llm_settings)
        return fake.client()

    monkeypatch.setattr("mark_agents.llm.connect", connect)
    small = tmp_path / "set.json"
    data = json.loads(default_set_path().read_text())
    data["exchanges"] = [e for e in data["exchanges"] if e["id"] in ("sample-ferry", "sample-quiet-gantt")]
    small.write_text(json.dumps(data))
    out, png = tmp_path / "out" / "x.json", tmp_path / "x.png"
    args = ["--home", str(tmp_path / "home"), "bench", "extraction", "--set", str(small)]
    args += ["--local-model", "qwen2.5-coder-1.5b", "--out", str(out), "--plot", str(png), "--markdown"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert [m.local_model for m in connected] == ["qwen2.5-coder-1.5b"] and connected[0].is_local
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert run["model"] == "qwen2.5-coder-1.5b" and run["exchanges"] == 2 and run["errors"] == 0
    ferry = run["details"][0]
    assert ferry["notes"][0]["text"] == "The user takes the ferry to work, it's about 35 minutes each way."
    assert run["fact_coverage"] == 1.0 and run["one_fact_per_note"] == 0.0  # both facts in one note
    gantt = run["details"][1]
    assert gantt["notes"] == [] and "a question, not a fact" in gantt["skipped"][0]  # cleaning kept it quiet
    assert run["quiet"] == 1.0
    assert result["machine"]["cpus"] >= 1 and png.read_bytes()[:4] == b"\x89PNG"
    assert "| fact coverage | 100.0% |" in r.stdout and "qwen2.5-coder-1.5b" in r.stdout


def test_bench_extraction_rejects_an_unknown_model_with_exit_2(tmp_path: Path) -> None:
    args = ["--home", str(tmp_path / "home"), "bench", "extraction", "--local-model", "qwen-9000b", "--limit", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "qwen-9000b" in r.output and "Traceback" not in r.output


@pytest.mark.llm
async def test_extraction_of_a_few_exchanges_with_the_local_model(llm_settings) -> None:
    exchanges = {e.id: e for e in load_set(default_set_path())}
    chosen = [exchanges[i] for i in ("sample-ferry", "sample-knee", "sample-quiet-gantt")]
    results, info = await bx.extract_all(llm_settings, chosen)
    assert [r.id for r in results] == [e.id for e in chosen] and all(r.error is None for r in results)
    assert info["endpoint"] == llm_settings.llm.base_url and not info["server_started_for_bench"]
    s = score(chosen, results)
    assert s["facts"] == 4 and s["fact_coverage"] > 0  # the ferry and the knee are stated plainly
    assert all(r.seconds > 0 and r.prompt_tokens > 100 for r in results)
