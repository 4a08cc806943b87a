"""What an evaluation run uses of the settings, typed, and the clients it connects (judge and helper included).

The product's :class:`~mark_agents.config.Settings` say who answers (``llm``) and how the ``mark`` method's agent
and store work; the evaluator adds two roles of its own, read the way the memory model is (the chat model's
settings under the role's variables, :func:`mark_agents.config.role_llm_settings`):

- the judge, ``MARK_JUDGE_*`` (``MARK_JUDGE_MODEL=gpt-4o`` alone: the same endpoint and key, another model);
- the helper of the two-stage methods, ``MARK_HELPER_*`` and ``--helper-model``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from mark_agents.config import LLMSettings, Settings, role_llm_settings
from mark_agents.llm import LLMClient, connect
from memory_store.config import StoreSettings
from memory_store.embeddings import CachedEmbedder, Embedder, get_embedder


class EvalSettings(BaseModel):
    """The run's settings: the product's (answering model, the ``mark`` method's agent), the judge, the helper."""

    settings: Settings
    #: The judge when one is configured (``MARK_JUDGE_*``); None = the answering model judges.
    judge_llm: LLMSettings | None = None
    #: The helper model of block_based and extracted_context; None = the answering model.
    helper_llm: LLMSettings | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, helper_model: str | None = None, environ: Mapping[str, str] | None = None
    ) -> EvalSettings:
        """The judge and the helper from the environment (and ``--helper-model``) over ``settings``."""
        environ = os.environ if environ is None else environ
        given = {"model": helper_model} if helper_model else {}
        helper = role_llm_settings("MARK_HELPER_", settings.llm, environ, **given)
        return cls(
            settings=settings,
            judge_llm=role_llm_settings("MARK_JUDGE_", settings.llm, environ),
            helper_llm=None if helper == settings.llm else helper,
        )

    @property
    def answer_llm(self) -> LLMSettings:
        return self.settings.llm

    @property
    def judge(self) -> LLMSettings:
        """The judge's settings: the configured judge, else the answering model's."""
        return self.judge_llm or self.settings.llm

    @property
    def judge_apart(self) -> bool:
        """True when a judge model is configured apart from the answering model."""
        return self.judge_llm is not None and self.judge_llm != self.settings.llm

    @property
    def store(self) -> StoreSettings:
        return self.settings.store


async def connect_answerer(config: EvalSettings) -> LLMClient:
    return await connect(config.answer_llm, config.settings.models_dir)


async def connect_judge(config: EvalSettings) -> LLMClient:
    """A client of the judge (``MARK_JUDGE_*``, else the answering model's endpoint)."""
    return await connect(config.judge, config.settings.models_dir)


async def connect_helper(config: EvalSettings) -> LLMClient | None:
    """A client of the helper model, or None when the answering model does the helper passes."""
    if config.helper_llm is None:
        return None
    return await connect(config.helper_llm, config.settings.models_dir)


def embedder_factory(store: StoreSettings) -> Callable[[], Embedder]:
    """The run's embedding model (the store's ``embedding_model`` and device), loaded on first use."""

    def factory() -> Embedder:
        return CachedEmbedder(get_embedder(store.embedding_model, store.embedding_device))

    return factory
