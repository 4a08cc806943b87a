"""Errors of the LLM layer. They are MarkErrors, so the CLI prints them on one line and exits non-zero."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memory_store.errors import MarkError

if TYPE_CHECKING:
    from mark_agents.llm.usage import Usage


class LLMError(MarkError):
    """The LLM endpoint refused a request (bad key, unknown model, invalid request...)."""


class LLMUnavailable(LLMError):
    """The endpoint is down, timed out or kept failing after all retries; the message names the URL."""


class LLMContextExceeded(LLMError):
    """The request does not fit the model's context window: too long to send as it is (bad input, exit 2)."""

    exit_code = 2


class LLMOutputError(LLMError):
    """Structured output was still invalid after the repair attempts; ``raw`` is the last reply's text."""

    def __init__(self, message: str, *, raw: str, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        #: Tokens spent on all attempts (they were paid for even though the result is unusable).
        self.usage = usage


class LocalModelMissing(LLMError):
    """The embedded model (or its server) is not installed, or a configured GGUF does not exist."""
