"""Usage accounting, the offline token estimate, the price table and JSON extraction."""

from __future__ import annotations

import threading

import pytest

from mark_agents.llm import Usage, UsageMeter, estimate_message_tokens, estimate_tokens, extract_json, price_for
from mark_agents.llm.prompts import MAX_ERROR_CHARS, repair_prompt


def test_usage_adds_every_field() -> None:
    a = Usage(prompt_tokens=1, completion_tokens=2, calls=1, latency_ms=3.0, cost_usd=0.5, retries=1)
    b = Usage(prompt_tokens=10, completion_tokens=20, calls=2, latency_ms=30.0, cost_usd=1.0, estimated=True)
    total = a + b
    assert (total.prompt_tokens, total.completion_tokens, total.calls, total.retries) == (11, 22, 3, 1)
    assert total.latency_ms == 33.0 and total.cost_usd == 1.5 and total.estimated and total.total_tokens == 33
    assert sum([a, b], Usage()) == total


def test_meter_is_thread_safe() -> None:
    meter = UsageMeter()
    one = Usage(prompt_tokens=1, calls=1)

    def work(label: str) -> None:
        for _ in range(2000):
            meter.record(one, label)

    threads = [threading.Thread(target=work, args=(f"l{i % 2}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.total.calls == 16_000
    snapshot = meter.by_label()
    assert snapshot["l0"].prompt_tokens == snapshot["l1"].prompt_tokens == 8000
    meter.record(one, "l0")
    assert snapshot["l0"].calls == 8000  # a snapshot does not change afterwards


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 400) == 100  # chars / 4
    assert estimate_tokens("a b c d e f g h") == 8  # the word floor: chars/4 would say 4
    sentence = "The user moved to Paris last year and works as a nurse."
    assert 10 <= estimate_tokens(sentence) <= 16  # cl100k says 13
    assert estimate_message_tokens([{"role": "user", "content": "a" * 40}]) == 10 + 4 + 3


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4o-2024-08-06", (2.50, 10.00)),
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),
        ("gpt-4.1", (2.00, 8.00)),
        ("gpt-4.1-mini", (0.40, 1.60)),
        ("openai/gpt-4.1-nano", (0.10, 0.40)),
        ("gemini-2.5-flash", (0.30, 2.50)),
        ("gemini-2.5-flash-lite-preview-06-17", (0.10, 0.40)),
        ("models/gemini-2.5-pro", (1.25, 10.00)),
        ("local", (0.0, 0.0)),
        ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", (0.0, 0.0)),
        ("gpt-4o1", None),
        ("llama-3-70b", None),
    ],
)
def test_price_for(model: str, prices: tuple[float, float] | None) -> None:
    assert price_for(model) == prices


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        'Here you go:\n```json\n{"a": 1}\n```',
        '```\n{"a": 1}\n```',
        'The answer is {"a": 1} as requested.',
        'Note {braces} first, then {"a": 1}',
    ],
)
def test_extract_json_tolerates_fences_and_prose(text: str) -> None:
    assert extract_json(text) == {"a": 1}


def test_extract_json_explains_failures() -> None:
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("no json here")
    with pytest.raises(ValueError, match="truncated"):
        extract_json('{"a": [1, 2')


def test_repair_prompt_is_one_bounded_error_and_the_schema() -> None:
    prompt = repair_prompt("bad\n" * 1000, '{"type":"object"}')
    assert '{"type":"object"}' in prompt
    assert len(prompt) < MAX_ERROR_CHARS + 300


async def test_cached_prompt_tokens_are_reported_when_the_endpoint_gives_them_with_a_scripted_llm() -> None:
    import httpx

    from mark_agents.llm.scripted import ScriptedLLM, completion

    cached = completion("OK", prompt_tokens=100, completion_tokens=2)
    body = cached.json()
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 64}
    llm = ScriptedLLM(httpx.Response(200, json=body), completion("OK")).client()
    first = await llm.chat([{"role": "user", "content": "hi"}], max_tokens=4)
    second = await llm.chat([{"role": "user", "content": "hi"}], max_tokens=4)
    assert first.usage.cached_tokens == 64 and first.usage.prompt_tokens == 100
    assert second.usage.cached_tokens is None  # not reported: unknown, not 0
    assert (first.usage + second.usage).cached_tokens == 64 and (second.usage + second.usage).cached_tokens is None
    await llm.aclose()
