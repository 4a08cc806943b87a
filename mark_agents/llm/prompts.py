"""Prompts of the LLM layer itself: asking a model to repair structured output it got wrong.

Kept short on purpose: the local model pre-fills ~110 tokens/s, so every repair round costs seconds.
"""

from __future__ import annotations

#: Sent as a user message after the invalid reply (which is kept as the assistant turn before it).
REPAIR_PROMPT = (
    "Your previous reply could not be used: {error}\n"
    "Reply again with only one JSON value that matches this JSON schema, "
    "with no explanation and no code fences:\n{schema}"
)

#: Added as a system message when the endpoint cannot constrain the output to the schema itself.
SCHEMA_INSTRUCTION = "Reply with only one JSON value that matches this JSON schema:\n{schema}"

#: At most this many characters of a validation error go into the repair prompt.
MAX_ERROR_CHARS = 800


def repair_prompt(error: str, schema_json: str) -> str:
    """The message asking the model to fix its last reply, quoting what was wrong with it."""
    error = " ".join(error.split())
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 3] + "..."
    return REPAIR_PROMPT.format(error=error, schema=schema_json)


def schema_instruction(schema_json: str) -> str:
    """The system note that carries the schema when the endpoint does not take it as a response format."""
    return SCHEMA_INSTRUCTION.format(schema=schema_json)
