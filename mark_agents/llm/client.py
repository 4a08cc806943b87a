"""The async client every agent and evaluator uses to talk to an OpenAI-compatible endpoint.

It adds what the raw ``openai`` client lacks for this project: its own retry loop (so retries are logged
and counted, and a dead endpoint fails fast with one clear line), token/latency/cost accounting into a
:class:`UsageMeter`, and structured output validated by pydantic that works on OpenAI, Gemini and the
embedded llama.cpp server alike (which rejects ``json_schema`` but constrains ``json_object`` + schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ValidationError

from mark_agents.config import LLMSettings
from mark_agents.llm.errors import LLMContextExceeded, LLMError, LLMUnavailable
from mark_agents.llm.parsing import describe_validation_error, extract_json
from mark_agents.llm.prompts import repair_prompt, schema_instruction
from mark_agents.llm.usage import (
    Usage,
    UsageMeter,
    cost_usd,
    estimate_message_tokens,
    estimate_tokens,
    price_for,
)

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

#: Structured-output strategies, best first. A client steps down once when the endpoint rejects one.
_FORMAT_LADDER = ("json_schema", "json_object", "prompt")

#: Transport errors raised while iterating a stream (the SDK does not wrap those).
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError,)
for _mod_name in ("httpx2", "httpx"):
    try:
        _mod = __import__(_mod_name)
        _TRANSPORT_ERRORS = (*_TRANSPORT_ERRORS, _mod.TransportError)
    except (ImportError, AttributeError):  # pragma: no cover - depends on the openai version
        pass

_warned_unpriced: set[str] = set()


class ChatResult(BaseModel):
    """One completed chat call."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None


class LLMClient:
    """Async client of one OpenAI-compatible endpoint (see the module docstring for what it adds)."""

    #: Back-off bases in seconds (doubling per attempt, with jitter). Connection refused gets a short one so
    #: a dead endpoint fails in a few seconds; 429/5xx/timeouts a longer one. Tests lower these.
    retry_base_s: float = 1.0
    retry_cap_s: float = 20.0
    connect_retry_base_s: float = 0.25
    #: Longest ``Retry-After`` honoured before giving up on waiting that long.
    max_retry_after_s: float = 60.0

    def __init__(
        self,
        settings: LLMSettings,
        *,
        base_url: str | None = None,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.settings = settings
        self.model = settings.model
        self._owns_client = client is None
        if client is None:
            url = base_url or settings.base_url
            if not url:
                raise LLMError(
                    "LLMClient needs a base_url; use `await mark_agents.llm.connect(llm, models_dir)` to start and use "
                    "the local model"
                )
            client = openai.AsyncOpenAI(
                base_url=url,
                api_key=settings.api_key or "sk-no-key",
                timeout=openai.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
                max_retries=0,
                # A proxy from the environment must not intercept calls to the local server.
                http_client=openai.DefaultAsyncHttpxClient(trust_env=False) if _is_loopback(url) else None,
            )
        else:
            url = base_url or str(client.base_url)
            client = client.with_options(max_retries=0)
        self.base_url = url.rstrip("/")
        self._client = client
        #: Context size in tokens when known (the local server's n_ctx), else None.
        self.context_window: int | None = settings.local_n_ctx if settings.is_local and base_url else None
        #: Everything this client spent, whatever meters the callers passed.
        self.meter = UsageMeter()
        self._format_index = 0
        self._stream_usage_supported = True
        #: Set for the embedded local server: makes sure it runs (it stops itself when idle) and returns its URL.
        self.reconnect: Callable[[], Awaitable[str]] | None = None
        self._prices = _resolve_prices(settings)

    # -- public API ------------------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        meter: UsageMeter | None = None,
        label: str = "chat",
    ) -> ChatResult:
        """One completion; usage is recorded into ``meter`` (and the client's own meter)."""
        result = await self._complete(messages, max_tokens=max_tokens, temperature=temperature, label=label)
        self._record(result.usage, meter, label)
        return result

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        meter: UsageMeter | None = None,
        label: str = "chat",
    ) -> AsyncIterator[str]:
        """Yield text deltas as they arrive; usage is recorded when the stream ends (or is abandoned).

        Only opening the stream is retried: once text was yielded a failure raises LLMUnavailable.
        Token counts come from ``stream_options.include_usage`` when the endpoint reports them (OpenAI),
        else they are estimated (llama.cpp ignores the option).
        """
        started = time.perf_counter()
        kwargs = self._request(messages, max_tokens=max_tokens, temperature=temperature)
        kwargs["stream"] = True

        async def open_stream() -> Any:
            return await _checked_stream(await self._client.chat.completions.create(**kwargs))

        while True:
            if self._stream_usage_supported:
                kwargs["stream_options"] = {"include_usage": True}
            else:
                kwargs.pop("stream_options", None)
            try:
                response, retries = await self._with_retries(
                    open_stream,
                    label=label,
                    give_up=_rejects_stream_options if self._stream_usage_supported else None,
                )
                break
            except openai.APIStatusError as err:
                logger.info(
                    "%s rejected stream_options (HTTP %s); estimating stream usage", self.base_url, err.status_code
                )
                self._stream_usage_supported = False
        parts: list[str] = []
        reported: Any = None
        try:
            async for chunk in response:
                if getattr(chunk, "usage", None) is not None:
                    reported = chunk.usage
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta is not None else None
                    if delta:
                        parts.append(delta)
                        yield delta
        except (openai.APIError, *_TRANSPORT_ERRORS) as err:
            raise LLMUnavailable(
                f"LLM endpoint {self.base_url} broke off a stream: {_describe_error(err, self.settings)}"
            ) from err
        finally:
            await response.close()
            usage = self._usage(messages, "".join(parts), reported, started, retries)
            self._record(usage, meter, label)

    async def structured(
        self,
        messages: list[dict[str, str]],
        schema: type[T],
        *,
        max_tokens: int | None = None,
        meter: UsageMeter | None = None,
        label: str = "extract",
        attempts: int = 3,
    ) -> tuple[T, Usage]:
        """A reply parsed and validated as ``schema``; invalid replies are sent back for repair.

        Each invalid reply is logged as a WARNING and answered with a repair message quoting the error, up to
        ``attempts`` calls in all; then LLMOutputError (with the last text in ``.raw``). The returned Usage
        (also recorded into ``meter``) covers every attempt.
        """
        from mark_agents.llm.errors import LLMOutputError

        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        schema_dict = schema.model_json_schema()
        schema_json = json.dumps(schema_dict, separators=(",", ":"))
        total = Usage()
        conversation = list(messages)
        raw = ""
        problem = ""
        for attempt in range(1, attempts + 1):
            result = await self._structured_call(conversation, schema, schema_dict, schema_json, max_tokens, label)
            total = total + result.usage
            raw = result.text
            try:
                value = schema.model_validate(extract_json(raw))
            except ValidationError as err:
                problem = describe_validation_error(err)
            except ValueError as err:
                problem = str(err)
            else:
                self._record(total, meter, label)
                return value, total
            if result.finish_reason == "length":
                problem += " (the reply reached the token limit and was cut off: answer more briefly)"
            logger.warning(
                "invalid %s from %s (attempt %d/%d): %s; reply began %r",
                schema.__name__,
                self.model,
                attempt,
                attempts,
                problem,
                raw[:200],
            )
            conversation = [
                *messages,
                {"role": "assistant", "content": raw},
                {"role": "user", "content": repair_prompt(problem, schema_json)},
            ]
        self._record(total, meter, label)
        raise LLMOutputError(
            f"{self.model} at {self.base_url} gave no valid {schema.__name__} in {attempts} attempts: {problem}",
            raw=raw,
            usage=total,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (only when this object created the openai client)."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r})"

    # -- internals -------------------------------------------------------------------------------------

    def _request(
        self, messages: list[dict[str, str]], *, max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature,
        }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        return kwargs

    async def _complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None,
        temperature: float | None,
        label: str,
        response_format: dict[str, Any] | None = None,
        give_up: Callable[[openai.APIStatusError], bool] | None = None,
    ) -> ChatResult:
        started = time.perf_counter()
        kwargs = self._request(messages, max_tokens=max_tokens, temperature=temperature)
        if response_format is not None:
            kwargs["response_format"] = response_format

        async def call() -> Any:
            return _checked_completion(await self._client.chat.completions.create(**kwargs))

        response, retries = await self._with_retries(call, label=label, give_up=give_up)
        if not response.choices:
            raise LLMError(f"LLM endpoint {self.base_url} returned no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = self._usage(messages, text, response.usage, started, retries)
        return ChatResult(
            text=text, usage=usage, model=response.model or self.model, finish_reason=choice.finish_reason
        )

    async def _structured_call(
        self,
        conversation: list[dict[str, str]],
        schema: type[BaseModel],
        schema_dict: dict[str, Any],
        schema_json: str,
        max_tokens: int | None,
        label: str,
    ) -> ChatResult:
        """One call in the best response-format mode the endpoint accepts, stepping down on rejection."""
        while True:
            index = self._format_index
            mode = _FORMAT_LADDER[index]
            messages = conversation
            response_format: dict[str, Any] | None
            if mode == "json_schema":
                response_format = {
                    "type": "json_schema",
                    "json_schema": {"name": _schema_name(schema), "schema": schema_dict, "strict": False},
                }
            elif mode == "json_object":
                # llama.cpp turns the schema into a grammar; OpenAI requires the word JSON in the prompt.
                response_format = {"type": "json_object", "schema": schema_dict}
                if not any("json" in str(m.get("content", "")).lower() for m in conversation):
                    messages = _with_system_note(conversation, schema_instruction(schema_json))
            else:
                response_format = None
                messages = _with_system_note(conversation, schema_instruction(schema_json))
            try:
                return await self._complete(
                    messages,
                    max_tokens=max_tokens,
                    temperature=None,
                    label=label,
                    response_format=response_format,
                    give_up=_rejects_response_format if response_format is not None else None,
                )
            except openai.APIStatusError as err:
                nxt = _FORMAT_LADDER[index + 1]
                logger.info(
                    "%s rejected response_format %s (HTTP %s: %s); using %s from now on",
                    self.base_url,
                    mode,
                    err.status_code,
                    _status_message(err)[:200],
                    nxt,
                )
                self._format_index = max(self._format_index, index + 1)

    async def _with_retries(
        self,
        call: Callable[[], Awaitable[R]],
        *,
        label: str,
        give_up: Callable[[openai.APIStatusError], bool] | None = None,
    ) -> tuple[R, int]:
        """Run ``call`` with back-off on 429, 5xx, connection errors and timeouts; return (result, retries).

        A status error that ``give_up`` accepts is re-raised as is (the caller changes the request).
        """
        attempts = self.settings.max_retries + 1
        started = time.monotonic()
        last: Exception | None = None
        reconnected = False
        for attempt in range(1, attempts + 1):
            try:
                return await call(), attempt - 1
            except openai.APIStatusError as err:
                if give_up is not None and give_up(err):
                    raise
                if not _retryable_status(err.status_code):
                    if _exceeds_context(err):
                        raise LLMContextExceeded(self._rejected_message(err)) from err
                    raise LLMError(self._rejected_message(err)) from err
                last = err
                delay = self._backoff(attempt, self.retry_base_s, _retry_after(err))
            except openai.APITimeoutError as err:
                last = err
                delay = self._backoff(attempt, self.retry_base_s)
            except openai.APIConnectionError as err:
                last = err
                delay = self._backoff(attempt, self.connect_retry_base_s)
                if self.reconnect is not None and not reconnected:
                    reconnected = True  # the local server may have stopped for idleness: start it again
                    self._use_base_url(await self.reconnect())
                    delay = 0.0
            except _NotACompletion as err:  # a proxy's error page or a half-configured server: a fault, retried
                last = err
                delay = self._backoff(attempt, self.retry_base_s)
            if attempt == attempts or delay is None:
                break
            logger.warning(
                "%s call to %s failed: %s; retry %d/%d in %.2f s",
                label,
                self.base_url,
                _describe_error(last, self.settings),
                attempt,
                attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)
        assert last is not None
        elapsed = time.monotonic() - started
        raise LLMUnavailable(
            f"LLM endpoint {self.base_url} unavailable after {attempt} attempt{'s' if attempt > 1 else ''} "
            f"in {elapsed:.1f} s: {_describe_error(last, self.settings)}"
        ) from last

    def _use_base_url(self, url: str) -> None:
        if url.rstrip("/") != self.base_url:
            logger.info("LLM endpoint moved from %s to %s", self.base_url, url)
            self._client = self._client.with_options(base_url=url)
            self.base_url = url.rstrip("/")

    def _backoff(self, attempt: int, base: float, retry_after: float | None = None) -> float | None:
        """Exponential back-off with jitter; None when the server asks to wait longer than we would."""
        delay = min(self.retry_cap_s, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            if retry_after > self.max_retry_after_s:
                return None
            delay = max(delay, retry_after)
        return delay

    def _usage(self, messages: list[dict[str, str]], text: str, reported: Any, started: float, retries: int) -> Usage:
        prompt = getattr(reported, "prompt_tokens", None)
        completion = getattr(reported, "completion_tokens", None)
        estimated = prompt is None or completion is None
        cached = getattr(getattr(reported, "prompt_tokens_details", None), "cached_tokens", None)
        if prompt is None:
            prompt = estimate_message_tokens(messages)
        if completion is None:
            completion = estimate_tokens(text)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            calls=1,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            cost_usd=cost_usd(prompt, completion, self._prices),
            retries=retries,
            estimated=estimated,
            cached_tokens=cached if isinstance(cached, int) else None,
        )

    def _record(self, usage: Usage, meter: UsageMeter | None, label: str) -> None:
        self.meter.record(usage, label)
        if meter is not None and meter is not self.meter:
            meter.record(usage, label)

    def _rejected_message(self, err: openai.APIStatusError) -> str:
        hint = ""
        if _exceeds_context(err):
            window = f" of {self.context_window:,} tokens" if self.context_window else ""
            hint = f" (the request does not fit the model's context window{window}: send less text)"
        elif err.status_code in (401, 403):
            hint = " (check MARK_LLM_API_KEY / OPENAI_API_KEY)"
        elif err.status_code == 404:
            hint = f" (check the base URL and the model name {self.model!r}: MARK_LLM_BASE_URL, MARK_LLM_MODEL)"
        return (
            f"LLM endpoint {self.base_url} rejected the request: HTTP {err.status_code}: {_status_message(err)}{hint}"
        )


# -- connecting ---------------------------------------------------------------------------------------


async def connect(llm: LLMSettings, models_dir: Path) -> LLMClient:
    """A client of ``llm``'s endpoint, or of the embedded local server (started if not running; a bundled model
    is assembled under ``models_dir``). Whoever connects a client closes it."""
    if not llm.is_local:
        return LLMClient(llm)
    from mark_agents.local_llm import LocalServer

    server = LocalServer(llm, models_dir)
    base_url = await asyncio.to_thread(server.ensure_running)
    client = LLMClient(llm, base_url=base_url)
    client.context_window = llm.local_n_ctx
    client.reconnect = lambda: asyncio.to_thread(server.ensure_running)
    return client


# -- helpers ------------------------------------------------------------------------------------------


def _resolve_prices(settings: LLMSettings) -> tuple[float, float] | None:
    if settings.price_input_per_mtok is not None or settings.price_output_per_mtok is not None:
        return (settings.price_input_per_mtok or 0.0, settings.price_output_per_mtok or 0.0)
    if settings.is_local:
        return (0.0, 0.0)
    prices = price_for(settings.model)
    if prices is None and settings.model not in _warned_unpriced:
        _warned_unpriced.add(settings.model)
        logger.warning(
            "no price known for model %r: cost_usd is reported as 0; set MARK_LLM_PRICE_INPUT_PER_MTOK and "
            "MARK_LLM_PRICE_OUTPUT_PER_MTOK",
            settings.model,
        )
    return prices


def _is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1")


def _retryable_status(code: int) -> bool:
    return code in (408, 409, 429) or code >= 500


def _retry_after(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _status_message(err: openai.APIStatusError) -> str:
    """The server's own error message, on one line."""
    body = err.body
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message") or message
    text = str(message) if message else (err.message or "")
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _body_text(err: openai.APIStatusError) -> str:
    try:
        return (json.dumps(err.body) if err.body is not None else "") + " " + (err.message or "")
    except (TypeError, ValueError):
        return str(err.body) + " " + (err.message or "")


def _rejects_response_format(err: openai.APIStatusError) -> bool:
    """True when the endpoint refused the response_format itself (llama.cpp: HTTP 500 "'text' or 'json_object'")."""
    if err.status_code not in (400, 422, 500, 501):
        return False
    text = _body_text(err).lower()
    return any(s in text for s in ("response_format", "json_schema", "json_object", "'text'"))


#: How endpoints word "the prompt is longer than the context window" (OpenAI and llama-cpp-python,
#: llama.cpp's own server, vLLM, Gemini, Anthropic-style proxies).
_CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|exceed_context_size|exceeds? the (available )?context"
    r"|context (window|size|length)|prompt is too long|too many (input )?tokens|input token count",
    re.IGNORECASE,
)


def _exceeds_context(err: openai.APIStatusError) -> bool:
    """True when the endpoint refused the request because the prompt does not fit the model's context."""
    return err.status_code in (400, 413, 422) and bool(_CONTEXT_OVERFLOW.search(_body_text(err)))


class _NotACompletion(Exception):
    """The endpoint answered 2xx with something that is not a chat completion (an HTML page, plain text)."""


def _checked_completion(response: Any) -> Any:
    """``response`` if it is shaped like a chat completion, else _NotACompletion saying what came instead.

    The SDK returns the body as a plain string when it is not JSON (a proxy's error page with status 200).
    """
    choices = getattr(response, "choices", None)
    if isinstance(choices, list) and all(getattr(c, "message", None) is not None for c in choices):
        return response
    if isinstance(response, str):
        snippet = " ".join(response.split())[:80]
        what = f"a body that is not JSON (it begins {snippet!r})" if snippet else "an empty body"
    else:
        what = f"JSON that is not a chat completion ({type(response).__name__} without choices)"
    raise _NotACompletion(f"the endpoint answered with {what}")


async def _checked_stream(stream: Any) -> Any:
    """``stream`` if the endpoint answered with server-sent events, else _NotACompletion (the SDK would read an
    HTML page as a stream of no events: an empty reply instead of an error)."""
    response = getattr(stream, "response", None)
    content_type = response.headers.get("content-type", "") if response is not None else ""
    if not content_type or "event-stream" in content_type:
        return stream
    snippet = ""
    with contextlib.suppress(Exception):
        snippet = " ".join((await response.aread()).decode("utf-8", "replace").split())[:80]
    await stream.close()
    raise _NotACompletion(f"the endpoint answered a stream request with {content_type} (it begins {snippet!r})")


def _rejects_stream_options(err: openai.APIStatusError) -> bool:
    return err.status_code in (400, 422) and "stream_options" in _body_text(err).lower()


def _describe_error(err: BaseException, settings: LLMSettings) -> str:
    """One line saying what failed: "connection refused", "no answer within 120 s", "HTTP 503: ..."."""
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {_status_message(err)}"
    if isinstance(err, openai.APITimeoutError):
        return f"no answer within {settings.timeout_s:g} s (timeout)"
    root = _root_os_error(err)
    if isinstance(root, ConnectionRefusedError) or getattr(root, "errno", None) == errno.ECONNREFUSED:
        return "connection refused (is the server running?)"
    if isinstance(root, socket.gaierror):
        return f"host not found ({root})"
    if root is not None:
        return f"cannot connect ({root})"
    return " ".join(str(err).split()) or type(err).__name__


def _root_os_error(err: BaseException) -> OSError | None:
    """The innermost OSError in an exception chain (the SDK wraps the socket error three times)."""
    found: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _schema_name(schema: type[BaseModel]) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64] or "result"


def _with_system_note(messages: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    """``messages`` with ``note`` appended to the first system message (or as a new one in front)."""
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')}\n\n{note}"
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]
