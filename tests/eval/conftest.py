"""Fixtures for the ConvoMem evaluator tests: data paths, a released-layout writer, a scripted fake LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
LOCOMO = DATA / "convomem-locomo"


@pytest.fixture(scope="session")
def shared_embedder(embedder):  # type: ignore[no-untyped-def]
    """The session's embedding model behind one text cache, as the evaluator uses it."""
    from memory_store.embeddings import CachedEmbedder

    return CachedEmbedder(embedder)


@pytest.fixture
def locomo_dir() -> Path:
    return LOCOMO


def _conv(cid: str, lines: list[str], speaker_case: str = "title") -> dict:
    speakers = ["User", "Assistant"] if speaker_case == "title" else ["user", "assistant"]
    return {
        "messages": [{"speaker": speakers[i % 2], "text": t} for i, t in enumerate(lines)],
        "id": cid,
        "containsEvidence": True,
        "model_name": "gemini-2.5-pro",
    }


def _item(q: str, a: str, evidence: list[str], convs: list[dict], person: str, speaker_case: str = "title") -> dict:
    sp = "User" if speaker_case == "title" else "user"
    return {
        "question": q,
        "answer": a,
        "message_evidences": [{"speaker": sp, "text": e} for e in evidence],
        "conversations": convs,
        "category": "Event Planning",
        "scenario_description": "fixture",
        "personId": person,
        "use_case_model_name": None,
        "core_model_name": None,
    }


def write_released_layout(root: Path, n_filler: int = 8) -> Path:
    """A tiny tree in the released layout (evidence_questions, pre_mixed_testcases, filler_conversations)."""
    person = "0050e213-0000-4000-8000-0000000000ff"
    core = root / "core_benchmark"
    ev = core / "evidence_questions" / "user_evidence" / "1_evidence"
    ev.mkdir(parents=True)
    items = [
        _item(
            "What is my cat called?",
            "Miso",
            ["My cat Miso knocked over my coffee."],
            [
                _conv(f"ev-cat-{i}", ["Morning!", "Hi!", "My cat Miso knocked over my coffee.", "Oh no!"])
                for i in range(1)
            ],
            person,
        ),
        _item(
            "Where did I grow up?",
            "Lisbon",
            ["I grew up in Lisbon, near the river."],
            [
                _conv(
                    "ev-home",
                    [
                        "Tell me about fado.",
                        "It is Portuguese music.",
                        "I grew up in Lisbon, near the river.",
                        "Lovely city.",
                    ],
                )
            ],
            person,
        ),
    ]
    (ev / f"{person}_Product_Manager.json").write_text(json.dumps({"evidence_items": items, "checkpoint": "abc"}))
    ch = core / "evidence_questions" / "changing_evidence" / "2_evidence"
    ch.mkdir(parents=True)
    change = _item(
        "What is my current ad budget?",
        "$10k",
        ["Let's set the ad budget at $5k.", "Actually bump the ad budget to $10k."],
        [
            _conv("ev-b1", ["Plan ads.", "Sure.", "Let's set the ad budget at $5k.", "Ok."]),
            _conv("ev-b2", ["Update.", "Yes?", "Actually bump the ad budget to $10k.", "Done."]),
        ],
        person,
    )
    (ch / f"{person}_Product_Manager.json").write_text(json.dumps({"evidence_items": [change], "checkpoint": None}))
    fill = core / "filler_conversations"
    fill.mkdir(parents=True)
    filler_items = [
        _item(
            f"Opener {i}",
            "meta description",
            [f"Filler opener {i}"],
            [_conv(f"fill-{i}", [f"Filler opener {i}", "Sure thing.", "Thanks.", "Welcome."])],
            person,
        )
        for i in range(n_filler)
    ]
    (fill / f"{person}_Product_Manager.json").write_text(
        json.dumps({"evidence_items": filler_items, "checkpoint": None})
    )
    pre = core / "pre_mixed_testcases" / "user_evidence" / "1_evidence"
    pre.mkdir(parents=True)
    lc_item = _item(
        "What is my dog's name?",
        "Rex",
        ["my dog rex loves the beach."],
        [_conv("pm-ev-1", ["hi", "hello", "my dog rex loves the beach.", "nice"], "lower")],
        person,
        "lower",
    )
    case = {
        "evidenceItems": [lc_item],
        "conversations": [
            _conv("pm-fill-1", ["weather?", "sunny."], "lower"),
            _conv("pm-ev-1", ["hi", "hello", "my dog rex loves the beach.", "nice"], "lower"),
        ],
        "contextSize": 2,
    }
    (pre / "batched_000.json").write_text(json.dumps([case]))
    return root


@pytest.fixture
def released_dir(tmp_path: Path) -> Path:
    return write_released_layout(tmp_path / "convomem")
