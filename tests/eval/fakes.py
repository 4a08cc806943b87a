"""A scripted fake of ``mark_agents.llm.LLMClient`` for unit tests of answerers and judges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


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
