"""Control flow of LLMClient against a scripted fake endpoint (the real openai client code path runs)."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest
from pydantic import BaseModel

from mark_agents.config import LLMSettings
from mark_agents.llm import LLMClient, LLMContextExceeded, LLMError, LLMOutputError, LLMUnavailable, UsageMeter
from mark_agents.llm.scripted import ScriptedLLM, completion, error, stream


class City(BaseModel):
    city: str
    country: str


LLAMA_CPP_REJECTION = (
    "1 validation error: {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
)
USER = [{"role": "user", "content": "Where is Paris? Answer in JSON."}]


async def test_usage_summed_in_meter_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(
        completion("one", prompt_tokens=100, completion_tokens=10),
        completion("two", prompt_tokens=200, completion_tokens=20),
        completion("three", prompt_tokens=1_000_000, completion_tokens=0),
    )
    llm = fake.client(LLMSettings(base_url=fake.base_url, model="gpt-4o-mini"))
    meter = UsageMeter()
    first = await llm.chat(USER, meter=meter)
    await llm.chat(USER, meter=meter, label="judge")
    await llm.chat(USER, meter=meter, label="judge")

    assert first.text == "one" and first.finish_reason == "stop" and first.usage.calls == 1
    total = meter.total
    assert (total.prompt_tokens, total.completion_tokens, total.calls) == (1_000_300, 30, 3)
    assert total.latency_ms > 0 and not total.estimated
    by_label = meter.by_label()
    assert by_label["chat"].prompt_tokens == 100 and by_label["judge"].calls == 2
    # gpt-4o-mini: $0.15 / 1M input tokens, $0.60 / 1M output tokens.
    assert total.cost_usd == pytest.approx((1_000_300 * 0.15 + 30 * 0.60) / 1e6)
    assert llm.meter.total == total  # the client keeps its own running total too


async def test_price_override_and_local_is_free_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(completion("x", prompt_tokens=1_000_000, completion_tokens=1_000_000))
    priced = fake.client(
        LLMSettings(base_url=fake.base_url, model="gpt-4o", price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    )
    assert (await priced.chat(USER)).usage.cost_usd == pytest.approx(3.0)
    local = LLMClient(LLMSettings(), base_url=fake.base_url, client=fake.openai_client())
    assert (await local.chat(USER)).usage.cost_usd == 0.0
    assert local.context_window == 8192


async def test_missing_usage_is_estimated_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(completion("a reply of several words", prompt_tokens=None))
    result = await fake.client().chat(USER)
    assert result.usage.estimated
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 6


async def test_retry_on_429_and_503_then_success_with_scripted_fake_llm(caplog: pytest.LogCaptureFixture) -> None:
    fake = ScriptedLLM(error(429, "slow down"), error(503, "overloaded"), completion("finally"))
    meter = UsageMeter()
    with caplog.at_level(logging.WARNING, logger="mark_agents.llm"):
        result = await fake.client().chat(USER, meter=meter)
    assert result.text == "finally"
    assert fake.calls == 3
    assert result.usage.retries == 2 and meter.total.calls == 1
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 429: slow down" in retries[0] and "HTTP 503: overloaded" in retries[1]


async def test_gives_up_after_max_retries_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(error(503, "overloaded"))
    with pytest.raises(LLMUnavailable) as info:
        await fake.client(max_retries=2).chat(USER)
    assert fake.calls == 3
    message = str(info.value)
    assert fake.base_url in message and "HTTP 503: overloaded" in message and "3 attempts" in message
    assert "\n" not in message


async def test_timeout_is_retried_then_unavailable_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(httpx.ReadTimeout("read timed out"))
    with pytest.raises(LLMUnavailable, match=r"no answer within 7 s"):
        await fake.client(max_retries=1, timeout_s=7).chat(USER)
    assert fake.calls == 2


async def test_client_error_is_not_retried_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(error(401, "Incorrect API key provided"))
    with pytest.raises(LLMError) as info:
        await fake.client().chat(USER)
    assert not isinstance(info.value, LLMUnavailable)
    assert fake.calls == 1
    assert "HTTP 401: Incorrect API key provided" in str(info.value) and "OPENAI_API_KEY" in str(info.value)


async def test_connection_refused_raises_llm_unavailable_quickly() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = LLMClient(LLMSettings(base_url=url))  # default settings: 4 retries, real back-off
    started = time.monotonic()
    with pytest.raises(LLMUnavailable) as info:
        await llm.chat(USER)
    elapsed = time.monotonic() - started
    await llm.aclose()
    message = str(info.value)
    assert url in message and "connection refused" in message and "5 attempts" in message
    assert "\n" not in message
    assert elapsed < 10


async def test_json_schema_rejected_falls_back_and_is_remembered_with_scripted_fake_llm() -> None:
    def llama_cpp_like(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["response_format"]["type"] == "json_schema":
            return httpx.Response(500, json={"error": {"message": LLAMA_CPP_REJECTION}})
        return completion('{"city": "Paris", "country": "France"}')

    fake = ScriptedLLM(llama_cpp_like)
    llm = fake.client()
    first, usage = await llm.structured(USER, City)
    second, _ = await llm.structured(USER, City)

    assert first == second == City(city="Paris", country="France")
    kinds = [r["response_format"]["type"] for r in fake.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]  # rejected once, remembered
    assert fake.requests[1]["response_format"]["schema"] == City.model_json_schema()
    assert usage.calls == 1 and usage.retries == 0


async def test_invalid_json_repaired_on_retry_with_scripted_fake_llm(caplog: pytest.LogCaptureFixture) -> None:
    fake = ScriptedLLM(completion('{"city": "Paris", '), completion('{"city": "Paris", "country": "France"}'))
    meter = UsageMeter()
    with caplog.at_level(logging.WARNING, logger="mark_agents.llm"):
        value, usage = await fake.client().structured(USER, City, meter=meter)
    assert value == City(city="Paris", country="France")
    assert fake.calls == 2 and usage.calls == 2 and meter.by_label()["extract"].calls == 2
    repair = fake.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"city": "Paris", '}
    assert "not valid JSON" in repair[-1]["content"] and '"country"' in repair[-1]["content"]
    assert any("invalid City" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_schema_mismatch_repaired_on_retry_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(completion('{"city": "Paris"}'), completion('{"city": "Paris", "country": "France"}'))
    value, _ = await fake.client().structured(USER, City)
    assert value.country == "France"
    assert "country: Field required" in fake.requests[1]["messages"][-1]["content"]


async def test_invalid_every_time_raises_output_error_with_scripted_fake_llm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = ScriptedLLM(completion("I cannot answer that."), completion("still no JSON, sorry"))
    meter = UsageMeter()
    with caplog.at_level(logging.WARNING, logger="mark_agents.llm"), pytest.raises(LLMOutputError) as info:
        await fake.client().structured(USER, City, attempts=3, meter=meter)
    assert fake.calls == 3
    assert info.value.raw == "still no JSON, sorry"
    assert info.value.usage is not None and info.value.usage.calls == 3
    assert meter.total.calls == 3  # the failed attempts were paid for and are accounted
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "invalid City" in r.getMessage()]
    assert len(warnings) == 3 and "no JSON object" in warnings[0].getMessage()


async def test_fenced_json_parsed_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(completion('Sure! Here it is:\n```json\n{"city": "Paris", "country": "France"}\n```\nBye.'))
    value, _ = await fake.client().structured(USER, City)
    assert value == City(city="Paris", country="France") and fake.calls == 1


async def test_truncated_reply_asks_for_brevity_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(
        completion('{"city": "Par', finish_reason="length"), completion('{"city": "Paris", "country": "France"}')
    )
    await fake.client().structured(USER, City, max_tokens=5)
    assert fake.requests[0]["max_tokens"] == 5
    assert "cut off" in fake.requests[1]["messages"][-1]["content"]


async def test_stream_yields_deltas_and_records_usage_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(stream(["Hel", "lo", "!"], usage=(12, 3)), stream(["Hi", " there"]))
    llm = fake.client()
    meter = UsageMeter()
    assert [d async for d in llm.stream(USER, meter=meter)] == ["Hel", "lo", "!"]
    assert fake.requests[0]["stream"] is True and fake.requests[0]["stream_options"] == {"include_usage": True}
    reported = meter.total
    assert (reported.prompt_tokens, reported.completion_tokens, reported.estimated) == (12, 3, False)

    assert "".join([d async for d in llm.stream(USER, meter=meter, label="other")]) == "Hi there"
    estimated = meter.by_label()["other"]
    assert estimated.estimated and estimated.completion_tokens == 2 and estimated.calls == 1


async def test_stream_options_rejected_is_remembered_with_scripted_fake_llm() -> None:
    def strict(request: httpx.Request) -> httpx.Response:
        if "stream_options" in json.loads(request.content):
            return httpx.Response(400, json={"error": {"message": "Unrecognized request argument: stream_options"}})
        return stream(["ok"])

    fake = ScriptedLLM(strict)
    llm = fake.client()
    assert [d async for d in llm.stream(USER)] == ["ok"]
    assert [d async for d in llm.stream(USER)] == ["ok"]
    assert ["stream_options" in r for r in fake.requests] == [True, False, False]


async def test_no_base_url_without_client_is_a_clear_error() -> None:
    with pytest.raises(LLMError, match="connect"):
        LLMClient(LLMSettings())


HTML_200 = httpx.Response(200, text="<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"})
LLAMA_CPP_TOO_LONG = (
    "This model's maximum context length is 8192 tokens. However, you requested 100412 tokens "
    "(100012 in the messages, 400 in the completion). Please reduce the length of the messages or completion."
)


async def test_html_with_status_200_is_an_endpoint_fault_retried_then_unavailable_with_scripted_fake_llm() -> None:
    fake = ScriptedLLM(HTML_200, completion("fine"))
    assert (await fake.client(max_retries=2).chat(USER)).text == "fine"  # retried like a 502
    assert fake.calls == 2
    fake = ScriptedLLM(HTML_200)
    with pytest.raises(LLMUnavailable) as info:
        await fake.client(max_retries=2).chat(USER)
    message = str(info.value)
    assert "not JSON" in message and "Bad gateway" in message and "3 attempts" in message and "\n" not in message
    fake = ScriptedLLM(HTML_200)
    with pytest.raises(LLMUnavailable, match="stream request with text/html"):
        [d async for d in fake.client(max_retries=1).stream(USER)]
    assert fake.calls == 2
    fake = ScriptedLLM(httpx.Response(200, json={"status": "ok"}))
    with pytest.raises(LLMUnavailable, match="not a chat completion"):
        await fake.client(max_retries=0).chat(USER)


async def test_prompt_too_long_for_the_context_is_its_own_error_not_retried_with_scripted_fake_llm() -> None:
    body = {"message": LLAMA_CPP_TOO_LONG, "type": "invalid_request_error", "code": "context_length_exceeded"}
    fake = ScriptedLLM(httpx.Response(400, json={"error": body}))
    llm = fake.client(max_retries=3)
    llm.context_window = 8192
    with pytest.raises(LLMContextExceeded) as info:
        await llm.chat(USER)
    assert fake.calls == 1 and info.value.exit_code == 2
    assert "maximum context length is 8192" in str(info.value) and "context window of 8,192 tokens" in str(info.value)
    fake = ScriptedLLM(error(400, "unknown field 'foo'"))
    with pytest.raises(LLMError) as info:
        await fake.client().chat(USER)
    assert not isinstance(info.value, LLMContextExceeded)


async def test_a_refused_connection_asks_the_local_server_to_run_again_once_with_scripted_fake_llm() -> None:
    """The embedded server stops itself when idle: the client starts it again (it may come back on a new port)."""
    fake = ScriptedLLM(httpx.ConnectError("connection refused"), completion("back"))
    seen: list[str] = []
    original = fake.handler
    fake.handler = lambda request: (seen.append(str(request.url)), original(request))[1]  # type: ignore[method-assign]
    llm = fake.client(max_retries=2)
    restarts: list[str] = []

    async def reconnect() -> str:
        restarts.append("started")
        return "http://scripted-llm.invalid:4242/v1"

    llm.reconnect = reconnect
    assert (await llm.chat(USER)).text == "back"
    assert restarts == ["started"] and llm.base_url == "http://scripted-llm.invalid:4242/v1"
    assert seen[0].startswith("http://scripted-llm.invalid/v1") and seen[1].startswith(
        "http://scripted-llm.invalid:4242/v1"
    )
