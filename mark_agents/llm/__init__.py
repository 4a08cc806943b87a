"""LLM access for the agents and the evaluator: one async client for any OpenAI-compatible endpoint.

``await connect(llm_settings, models_dir)`` gives a client of the configured endpoint, or of the embedded local model
(started on demand); usage is accounted into :class:`UsageMeter`; ``structured()`` returns validated
pydantic objects on every supported backend.
"""

from mark_agents.llm.client import ChatResult, LLMClient, connect
from mark_agents.llm.errors import LLMContextExceeded, LLMError, LLMOutputError, LLMUnavailable, LocalModelMissing
from mark_agents.llm.parsing import extract_json
from mark_agents.llm.usage import (
    PRICES_PER_MTOK,
    Usage,
    UsageMeter,
    cost_usd,
    estimate_message_tokens,
    estimate_tokens,
    price_for,
)

__all__ = [
    "PRICES_PER_MTOK",
    "ChatResult",
    "LLMClient",
    "LLMContextExceeded",
    "LLMError",
    "LLMOutputError",
    "LLMUnavailable",
    "LocalModelMissing",
    "Usage",
    "UsageMeter",
    "connect",
    "cost_usd",
    "estimate_message_tokens",
    "estimate_tokens",
    "extract_json",
    "price_for",
]
