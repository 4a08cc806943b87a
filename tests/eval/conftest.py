"""Fixtures for the ConvoMem evaluator tests: data paths, a released-layout writer, a scripted fake LLM."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
LOCOMO = DATA / "convomem-locomo"


@dataclass
class FakeUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 1
    latency_ms: float = 1.0
    cost_usd: float = 0.0


@dataclass
class FakeChatResult:
    text: str
    usage: FakeUsage
    model: str = "scripted-fake"
    finish_reason: str = "stop"


@dataclass
class ScriptedFakeLLM:
    """Same async surface as ``mark_agents.llm.LLMClient``; replies come from ``script(messages, label)``."""

    script: Callable[[list[dict[str, str]], str], str]
    context_window: int | None = None
    calls: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        meter: object | None = None,
        label: str = "chat",
    ) -> FakeChatResult:
        self.calls.append((label, messages))
        text = self.script(messages, label)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return FakeChatResult(text=text, usage=FakeUsage(prompt_tokens=prompt, completion_tokens=len(text) // 4))

    async def structured(self, messages, schema, *, max_tokens=None, meter=None, label="extract"):  # type: ignore[no-untyped-def]
        raise NotImplementedError("not used by the evaluator")


def prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


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
        _item("What is my cat called?", "Miso", ["My cat Miso knocked over my coffee."],
              [_conv(f"ev-cat-{i}", ["Morning!", "Hi!", "My cat Miso knocked over my coffee.", "Oh no!"])
               for i in range(1)], person),
        _item("Where did I grow up?", "Lisbon", ["I grew up in Lisbon, near the river."],
              [_conv("ev-home", ["Tell me about fado.", "It is Portuguese music.",
                                 "I grew up in Lisbon, near the river.", "Lovely city."])], person),
    ]
    (ev / f"{person}_Product_Manager.json").write_text(json.dumps({"evidence_items": items, "checkpoint": "abc"}))
    ch = core / "evidence_questions" / "changing_evidence" / "2_evidence"
    ch.mkdir(parents=True)
    change = _item("What is my current ad budget?", "$10k",
                   ["Let's set the ad budget at $5k.", "Actually bump the ad budget to $10k."],
                   [_conv("ev-b1", ["Plan ads.", "Sure.", "Let's set the ad budget at $5k.", "Ok."]),
                    _conv("ev-b2", ["Update.", "Yes?", "Actually bump the ad budget to $10k.", "Done."])], person)
    (ch / f"{person}_Product_Manager.json").write_text(json.dumps({"evidence_items": [change], "checkpoint": None}))
    fill = core / "filler_conversations"
    fill.mkdir(parents=True)
    filler_items = [
        _item(f"Opener {i}", "meta description", [f"Filler opener {i}"],
              [_conv(f"fill-{i}", [f"Filler opener {i}", "Sure thing.", "Thanks.", "Welcome."])], person)
        for i in range(n_filler)
    ]
    (fill / f"{person}_Product_Manager.json").write_text(
        json.dumps({"evidence_items": filler_items, "checkpoint": None})
    )
    pre = core / "pre_mixed_testcases" / "user_evidence" / "1_evidence"
    pre.mkdir(parents=True)
    lc_item = _item("What is my dog's name?", "Rex", ["my dog rex loves the beach."],
                    [_conv("pm-ev-1", ["hi", "hello", "my dog rex loves the beach.", "nice"], "lower")],
                    person, "lower")
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
