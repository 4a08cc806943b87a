"""Methods by name. A plug-in registers a factory; the CLI and the runner only know names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

from mark_eval.convomem.answerers.base import Answerer, AnswererContext
from memory_store.errors import InvalidInput

Factory = Callable[[AnswererContext], Answerer]
_REGISTRY: dict[str, Factory] = {}
#: A method needs an LLM to choose its context always (True), never (False), or depending on the run's context.
NeedsLLM = Union[bool, Callable[[AnswererContext], bool]]  # noqa: UP007 (a runtime alias)
_NEEDS_LLM: dict[str, NeedsLLM] = {}


def register(name: str, factory: Factory, *, needs_llm_to_select: NeedsLLM = False) -> None:
    _REGISTRY[name] = factory
    _NEEDS_LLM[name] = needs_llm_to_select


def method_names() -> list[str]:
    return list(_REGISTRY)


def needs_llm_to_select(name: str, ctx: AnswererContext | None = None) -> bool:
    need = _NEEDS_LLM[name]
    if callable(need):
        return need(ctx if ctx is not None else AnswererContext())
    return need


def resolve_methods(text: str | list[str]) -> list[str]:
    """Comma-separated names to a list; an unknown name is the user's error (exit code 2)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise InvalidInput("no method given; choose from: " + ", ".join(_REGISTRY))
    for name in names:
        if name not in _REGISTRY:
            raise InvalidInput(f"unknown method {name!r}; choose from: {', '.join(_REGISTRY)}")
    return list(dict.fromkeys(names))


def create(name: str, ctx: AnswererContext) -> Answerer:
    resolve_methods([name])
    answerer = _REGISTRY[name](ctx)
    answerer.name = name  # type: ignore[misc]  # variants (rag_keyword) report under their own name
    return answerer
