"""The answerer interface every method implements, and the plumbing they share (LLM call, usage).

A method is a plug-in: ``select`` decides what reaches the answer prompt (cheap, no answer call, so
``--retrieval-only`` can measure evidence recall without any LLM), ``answer`` sends that prompt.
Indexing a haystack happens in ``prepare`` and is excluded from latency, as in ConvoMem.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mark_agents.config import Settings
from mark_agents.llm import LLMContextExceeded, LLMError, LLMUnavailable, Usage, estimate_message_tokens
from mark_eval.convomem.prompts import CONVOMEM_PROMPTS, PromptProfile
from mark_eval.convomem.results import Answered
from mark_eval.convomem.retrieval import RetrievalMode
from mark_eval.convomem.schema import Haystack
from memory_store.embeddings import Embedder
from memory_store.errors import MarkError


class Selection(BaseModel):
    """What a method put in front of the answering model for one question."""

    messages: list[dict[str, str]]
    #: haystack message ids (``conv:msg``) whose text reached the prompt (or the helper's prompt)
    context_mids: list[str]
    input_tokens: int
    context_overflow: bool = False
    retrieval_ms: float = 0.0
    helper_usage: Usage = Field(default_factory=Usage)
    #: LLM usage of indexing this question's haystack (mark's memory building), shared by its questions
    index_usage: Usage = Field(default_factory=Usage)
    #: set when the method answers without a final call (block_based with nothing relevant)
    canned_answer: str | None = None
    route: str = ""
    #: the model that ran the helper passes (two-stage methods)
    helper_model: str = ""
    #: True when the history does not fit the model's window: the question is not asked at all (never truncated
    #: and scored); the row is counted apart as ``context_overflow``
    refused: bool = False


class Answer(Answered):
    """One answer: its text, the haystack messages that reached its prompt, and what answering it measured."""

    text: str = ""
    context_mids: list[str] = Field(default_factory=list)


class AnswererContext(BaseModel):
    """What methods may use: the answering client, a token budget, retrieval settings, an embedder."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any | None = None
    budget_tokens: int = 4000
    retrieval: RetrievalMode = "hybrid"
    neighbours: int = 1
    #: Output tokens of an answer. The reference's published answers average 217-600 output tokens for
    #: preferences and implicit connections: the cap must sit well above that, never cut a long answer.
    max_answer_tokens: int = 1024
    #: The helper model of the two-stage methods (block_based, extracted_context); None = the answering model.
    helper_llm: Any | None = None
    #: Output tokens of one helper pass; None = no cap (the reference sets none: an extraction is as long as
    #: what it finds).
    helper_max_tokens: int | None = None
    embedder_factory: Callable[[], Embedder] | None = None
    #: The product's settings, for the ``mark`` method's agent and store.
    settings: Settings | None = None
    work_dir: Any | None = None
    #: The ``mark`` method: "off" recalls the stored turns only (no LLM), "llm" builds MARK notes first.
    mark_extraction: str = "llm"
    #: the answer prompt's wording for this benchmark (ConvoMem's, or LoCoMo's dated two-person framing)
    prompts: PromptProfile = CONVOMEM_PROMPTS

    @cached_property
    def embedder(self) -> Embedder | None:
        return self.embedder_factory() if self.embedder_factory is not None else None

    @property
    def context_window(self) -> int | None:
        return getattr(self.llm, "context_window", None) if self.llm is not None else None

    @property
    def helper(self) -> Any | None:
        """The client of the helper passes: the helper model when one is configured, else the answering one."""
        return self.helper_llm if self.helper_llm is not None else self.llm

    @property
    def helper_window(self) -> int | None:
        helper = self.helper
        return getattr(helper, "context_window", None) if helper is not None else None


async def chat(ctx: AnswererContext, messages: list[dict[str, str]], label: str, max_tokens: int | None) -> Any:
    if ctx.llm is None:
        raise MarkError("this step needs an LLM but the run has none (use --retrieval-only or configure one)")
    return await ctx.llm.chat(messages, max_tokens=max_tokens, temperature=0.0, label=label)


async def helper_chat(ctx: AnswererContext, messages: list[dict[str, str]], label: str) -> Any:
    """One helper pass (extraction), on the helper model, with the helper's cap (none by default)."""
    client = ctx.helper
    if client is None:
        raise MarkError("this step needs an LLM but the run has none (use --retrieval-only or configure one)")
    return await client.chat(messages, max_tokens=ctx.helper_max_tokens, temperature=0.0, label=label)


T = TypeVar("T")


class OncePerHaystack(Generic[T]):
    """What a method builds for a haystack (its memory of it), built once however many questions, or categories
    over the same conversations, ask for it; concurrent askers wait for the same build."""

    def __init__(self, build: Callable[[Haystack], Awaitable[T]]) -> None:
        self._build = build
        self._tasks: dict[str, asyncio.Task[T]] = {}

    async def get(self, haystack: Haystack) -> T:
        task = self._tasks.get(haystack.hid)
        if task is None:
            task = asyncio.ensure_future(self._build(haystack))
            self._tasks[haystack.hid] = task
        return await task


class Answerer(ABC):
    """One answering method. Subclasses set ``name`` and implement :meth:`select`."""

    name: ClassVar[str] = ""
    #: True when choosing the context itself needs LLM calls (no ``--retrieval-only`` for it)
    needs_llm_to_select: ClassVar[bool] = False

    def __init__(self, ctx: AnswererContext) -> None:
        self.ctx = ctx

    async def prepare(self, haystack: Haystack) -> None:
        """Index a haystack before its questions are asked (not timed). Default: nothing to do."""
        return None

    def release(self, haystack: Haystack) -> None:
        """Forget what :meth:`prepare` built for a haystack once all its questions are done."""
        return None

    async def aclose(self) -> None:
        """End of the run: wait for background work the method started. Default: nothing to do."""
        return None

    @abstractmethod
    async def select(self, haystack: Haystack, question: str) -> Selection:
        """Build the answer prompt for a question: the method's whole idea lives here."""

    async def answer(self, haystack: Haystack, question: str) -> Answer:
        """Select, then one answer call. LLM failures become ``error`` (never an exception) unless the
        endpoint is down, which stops the run (the results file is the resume point). A history over the
        model's window is refused (``context_overflow``, no answer), never truncated."""
        started = time.perf_counter()
        try:
            sel = await self.select(haystack, question)
        except LLMUnavailable:
            raise
        except LLMContextExceeded:
            return Answer(context_overflow=True, latency_ms=_ms(started), route="refused: over the window")
        except LLMError as exc:
            return Answer(error=f"{type(exc).__name__}: {exc}", latency_ms=_ms(started))
        common = {
            "context_mids": sel.context_mids,
            "retrieval_ms": sel.retrieval_ms,
            "route": sel.route,
            "helper_usage": sel.helper_usage,
            "helper_model": sel.helper_model,
            "index_tokens": sel.index_usage.total_tokens,
        }
        if sel.refused:
            return Answer(context_overflow=True, latency_ms=_ms(started), **common)
        if sel.canned_answer is not None:
            return Answer(text=sel.canned_answer, canned=True, latency_ms=_ms(started), **common)
        estimated = Usage(prompt_tokens=sel.input_tokens, estimated=True)
        try:
            result = await chat(self.ctx, sel.messages, f"answer.{self.name}", self.ctx.max_answer_tokens)
        except LLMUnavailable:
            raise
        except LLMContextExceeded:
            return Answer(
                context_overflow=True,
                usage=estimated,
                latency_ms=_ms(started),
                **{**common, "route": f"{sel.route}; refused by the endpoint: over the window"},
            )
        except LLMError as exc:
            return Answer(error=f"{type(exc).__name__}: {exc}", usage=estimated, latency_ms=_ms(started), **common)
        final: Usage = result.usage
        if not final.prompt_tokens:  # the endpoint did not say: the prompt's estimate
            final = final.model_copy(update={"prompt_tokens": sel.input_tokens, "estimated": True})
        return Answer(
            text=str(getattr(result, "text", "") or "").strip(),
            usage=final,
            latency_ms=_ms(started),
            model=str(getattr(result, "model", "") or ""),
            **common,
        )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def selection(messages: list[dict[str, str]], mids: list[str], **kwargs: Any) -> Selection:
    """A Selection with the prompt's estimated size filled in."""
    return Selection(messages=messages, context_mids=mids, input_tokens=estimate_message_tokens(messages), **kwargs)
