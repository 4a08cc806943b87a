"""Token, latency and cost accounting, so every chat turn and evaluation run can report what it spent.

Token counts come from the endpoint's ``usage`` when it reports one. When it does not (streams from
llama.cpp, some proxies), :func:`estimate_tokens` gives an offline estimate: tiktoken cannot be used here
because it downloads its BPE files on first use.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping

from pydantic import BaseModel


class Usage(BaseModel):
    """What one or more LLM calls cost. Additive: ``a + b`` sums every field."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Successful calls (a call retried three times then answered counts once; see ``retries``).
    calls: int = 0
    #: Wall time of the calls, retries and back-off included (what the user waited).
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    #: Failed attempts that were retried (429, 5xx, connection errors, timeouts).
    retries: int = 0
    #: True when at least one token count above is an estimate, not the endpoint's own figure.
    estimated: bool = False
    #: Prompt tokens the endpoint served from its prompt cache (``usage.prompt_tokens_details.cached_tokens``);
    #: None when no call reported it (unknown is not 0).
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            latency_ms=self.latency_ms + other.latency_ms,
            cost_usd=self.cost_usd + other.cost_usd,
            retries=self.retries + other.retries,
            estimated=self.estimated or other.estimated,
            cached_tokens=_sum_known(self.cached_tokens, other.cached_tokens),
        )


def _sum_known(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


class UsageMeter:
    """Thread- and task-safe accumulator of Usage by label ("chat", "extract", "judge"...).

    One per chat turn or per evaluation run. ``record`` never awaits, so asyncio tasks cannot interleave
    inside it; the lock covers worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_label: dict[str, Usage] = {}

    def record(self, usage: Usage, label: str = "chat") -> None:
        with self._lock:
            self._by_label[label] = self._by_label.get(label, Usage()) + usage

    @property
    def total(self) -> Usage:
        with self._lock:
            return sum(self._by_label.values(), Usage())

    def by_label(self) -> dict[str, Usage]:
        """A snapshot copy: later records do not change it."""
        with self._lock:
            return dict(self._by_label)

    def __repr__(self) -> str:
        return f"UsageMeter({self.total!r})"


_WORD = re.compile(r"\S+")


def estimate_tokens(text: str) -> int:
    """Offline token estimate: ``max(ceil(chars / 4), words)``.

    About 4 characters per token is the usual figure for English with BPE vocabularies (GPT, Qwen, Gemini);
    the word count is a floor for text made of many short words or symbols, where chars/4 undercounts.
    Non-English text (CJK especially) is undercounted; the figure is for budgets and reports, not limits.
    """
    if not text:
        return 0
    return max(math.ceil(len(text) / 4), len(_WORD.findall(text)))


#: Tokens a chat template adds around each message (role markers) and to prime the reply; ChatML uses ~4.
_PER_MESSAGE_OVERHEAD = 4
_REPLY_PRIMING = 3


def estimate_message_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """Estimated prompt tokens of a chat request: the contents plus per-message template overhead."""
    return _REPLY_PRIMING + sum(estimate_tokens(str(m.get("content") or "")) + _PER_MESSAGE_OVERHEAD for m in messages)


#: USD per 1M (input, output) tokens, standard tier, as published by the providers (mid 2025). Prices change:
#: set ``price_input_per_mtok`` / ``price_output_per_mtok`` in the settings to override.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gemini-2.5-pro": (1.25, 10.00),  # prompts up to 200k tokens
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "local": (0.0, 0.0),
}

_PROVIDER_PREFIX = re.compile(r"^(?:models/|openai/|google/|gemini/)")


def price_for(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a model name, or None when unknown.

    Matches the longest table key that the name starts with, after dropping a provider prefix, so dated
    snapshots ("gpt-4o-mini-2024-07-18") and previews ("gemini-2.5-flash-lite-preview-06-17") resolve.
    A GGUF file name counts as local (free).
    """
    name = _PROVIDER_PREFIX.sub("", model.strip().lower())
    if name.endswith(".gguf"):
        return PRICES_PER_MTOK["local"]
    best: str | None = None
    for key in PRICES_PER_MTOK:
        if (name == key or name.startswith(key + "-")) and (best is None or len(key) > len(best)):
            best = key
    return PRICES_PER_MTOK[best] if best is not None else None


def cost_usd(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] | None) -> float:
    """Cost of one call at ``prices`` (USD per 1M tokens); 0 when the prices are unknown."""
    if prices is None:
        return 0.0
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
