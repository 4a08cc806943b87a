"""Token estimates for budgets and for runs without an LLM (retrieval-only, the benchmark).

Uses ``mark_agents.llm.estimate_tokens`` when the agents package provides it, so our budgets and the
client agree; otherwise the same rule of thumb (about four characters per token).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache


@cache
def _estimator() -> Callable[[str], int]:
    try:
        from mark_agents.llm import estimate_tokens as agents_estimate
    except ImportError:
        return lambda text: (len(text) + 3) // 4

    def estimate(text: str) -> int:
        return int(agents_estimate(text))

    return estimate


def estimate_tokens(text: str) -> int:
    return _estimator()(text)


def messages_tokens(messages: list[dict[str, str]]) -> int:
    """Prompt size of a chat request: contents plus a few tokens of framing per message."""
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)
