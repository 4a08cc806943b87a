"""A scripted fake of ``mark_agents.llm.LLMClient`` for unit tests of answerers and judges."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mark_agents.llm import Usage


@dataclass
class FakeChatResult:
    text: str
    usage: Usage
    model: str = "scripted-fake"
    finish_reason: str = "stop"


@dataclass
class ScriptedFakeLLM:
    """Same async surface as ``mark_agents.llm.LLMClient``; replies come from ``script(messages, label)``."""

    script: Callable[[list[dict[str, str]], str], str]
    context_window: int | None = None
    calls: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)
    #: (label, max_tokens) of every chat call, to check the caps a method asks for
    limits: list[tuple[str, int | None]] = field(default_factory=list)
    closed: bool = False

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
        self.limits.append((label, max_tokens))
        text = self.script(messages, label)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return FakeChatResult(
            text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=len(text) // 4, calls=1, latency_ms=1.0)
        )

    async def structured(self, messages, schema, *, max_tokens=None, meter=None, label="extract"):  # type: ignore[no-untyped-def]
        """Enough of MARK's extraction for the ``mark`` method: one note per user message of the exchange."""
        self.calls.append((label, messages))
        said = [json.loads(q) for q in re.findall(r'^User: (".*")$', messages[-1]["content"], re.MULTILINE)]
        fields = schema.model_fields
        if "memories" in fields:
            data = {"memories": [{"kind": "user_question", "text": f"The user said: {t}"} for t in said]}
        elif "notes" in fields:
            data = {"notes": [f"The user said: {t}" for t in said]}
        elif "relation" in fields:
            data = {"relation": "unrelated", "reason": "scripted"}
        else:
            data = {}
        usage = Usage(prompt_tokens=100, completion_tokens=20, calls=1, latency_ms=1.0)
        if meter is not None:
            meter.record(usage, label)
        return schema.model_validate(data), usage

    async def aclose(self) -> None:
        self.closed = True


def prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)
