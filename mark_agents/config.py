"""Settings of the agents: the store's settings plus the LLM endpoint(s) they talk to.

The chat model and the memory model (extraction and resolution of notes) are each an
OpenAI-compatible endpoint, or (``base_url`` None) an embedded local model server that
:mod:`mark_agents.local_llm` starts on demand. Everything is read from the
environment with the ``MARK_`` prefix, built once by the caller and passed down; nothing here starts a server.

Environment variables (an empty value counts as unset):

========================================  ==========================================================
``MARK_LLM_BASE_URL``                     endpoint; falls back to ``OPENAI_BASE_URL``
``MARK_LLM_API_KEY``                      key; falls back to ``OPENAI_API_KEY``
``MARK_LLM_MODEL``                        model name sent to the endpoint (default ``local``)
``MARK_LLM_TIMEOUT``                      read timeout in seconds (``MARK_LLM_TIMEOUT_S`` also works)
``MARK_LLM_MAX_RETRIES``                  retries on 429, 5xx, connection errors and timeouts
``MARK_LLM_TEMPERATURE``                  sampling temperature
``MARK_LLM_PRICE_INPUT_PER_MTOK``         USD per 1M prompt tokens (overrides the built-in table)
``MARK_LLM_PRICE_OUTPUT_PER_MTOK``        USD per 1M completion tokens
``MARK_LLM_LOCAL_MODEL``                  a bundled model by name (``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``)
``MARK_LLM_MODEL_PATH``                   a GGUF for the local server (``MARK_LLM_LOCAL_MODEL_PATH``; wins over a name)
``MARK_LLM_N_CTX``                        local server context size (``MARK_LLM_LOCAL_N_CTX``)
``MARK_LLM_THREADS``                      local server threads (``MARK_LLM_LOCAL_THREADS``)
``MARK_LLM_IDLE_SECONDS``                 a local server stops after this long without a request (0 = never)
``MARK_LLM_SERVER_DIR``                   registry of the running local servers (shared by data directories)
``MARK_MEMORY_LLM_*``                     the same names for the memory model (no ``OPENAI_*`` fallback)
========================================  ==========================================================

A memory model is configured as soon as one of its variables is set; the fields it does not set are copied
from the chat LLM's resolved settings (so ``MARK_MEMORY_LLM_MODEL=gpt-4o-mini`` alone means "same endpoint and
key, another model"), except that naming a local model (``*_LOCAL_MODEL``, ``*_MODEL_PATH``) means the embedded
server, whatever endpoint the chat uses. Unconfigured, the memory model is the chat model, or, when the chat
runs the default embedded model, the default embedded memory model (:attr:`Settings.memory`). Explicit
constructor arguments always win over the environment (``memory_llm=None`` too). Other roles (the evaluator's
judge and helper, ``MARK_JUDGE_*``, ``MARK_HELPER_*``) are read the same way by their own package with
:func:`role_llm_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mark_agents.bundled_models import BUNDLED_MODELS, DEFAULT_CHAT_MODEL, DEFAULT_MEMORY_MODEL
from memory_store.config import StoreSettings
from memory_store.errors import InvalidInput

#: Environment suffix (after ``MARK_LLM_`` / ``MARK_JUDGE_``) -> LLMSettings field. Several spellings per field
#: are accepted; the first one that is set wins.
_ENV_FIELDS: dict[str, tuple[str, ...]] = {
    "base_url": ("BASE_URL",),
    "model": ("MODEL",),
    "api_key": ("API_KEY",),
    "timeout_s": ("TIMEOUT", "TIMEOUT_S"),
    "max_retries": ("MAX_RETRIES",),
    "temperature": ("TEMPERATURE",),
    "price_input_per_mtok": ("PRICE_INPUT_PER_MTOK",),
    "price_output_per_mtok": ("PRICE_OUTPUT_PER_MTOK",),
    "local_model": ("LOCAL_MODEL",),
    "local_model_path": ("MODEL_PATH", "LOCAL_MODEL_PATH"),
    "local_n_ctx": ("N_CTX", "LOCAL_N_CTX"),
    "local_threads": ("THREADS", "LOCAL_THREADS"),
    "local_idle_s": ("IDLE_SECONDS", "LOCAL_IDLE_SECONDS"),
    "local_server_dir": ("SERVER_DIR", "LOCAL_SERVER_DIR"),
}

#: Fallbacks for the chat LLM only: the names every OpenAI-compatible tool already understands.
_OPENAI_FALLBACKS: dict[str, str] = {"base_url": "OPENAI_BASE_URL", "api_key": "OPENAI_API_KEY"}
#: Settings field of each role -> its environment prefix.
_ROLE_PREFIX: dict[str, str] = {"llm": "MARK_LLM_", "memory_llm": "MARK_MEMORY_LLM_"}
#: Fields that say which endpoint (or which local model) a role talks to: a role that names a local model
#: inherits none of the chat's endpoint fields, nor the chat's choice of local model.
_ENDPOINT_FIELDS = ("base_url", "api_key", "model", "local_model", "local_model_path")


class LLMSettings(BaseModel):
    """One OpenAI-compatible endpoint and how to call it (``base_url`` None = the embedded local server)."""

    base_url: str | None = None
    model: str = "local"
    api_key: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    temperature: float = 0.0
    #: USD per 1M tokens; when set they override the built-in price table (see ``mark_agents.llm.price_for``).
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    #: A bundled model by name (see :mod:`mark_agents.bundled_models`); None = the role's default.
    local_model: str | None = None
    #: Any GGUF file (wins over ``local_model``; not verified: it is the user's file).
    local_model_path: Path | None = None
    local_n_ctx: int = Field(default=8192, ge=256)
    #: Threads of the local server; default = the CPUs this process may use.
    local_threads: int | None = Field(default=None, ge=1)
    #: A local server stops by itself after this many seconds without a request (0 = never); clients that
    #: find it gone start it again, so this only bounds how long an unused model holds its ~1 GB.
    local_idle_s: float = Field(default=900.0, ge=0)
    #: Registry of the running local servers, shared by every data directory; default
    #: ``<user cache dir>/mark/llm-servers``.
    local_server_dir: Path | None = None

    @field_validator("local_model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and value not in BUNDLED_MODELS:
            raise ValueError(
                f"unknown bundled model (known: {', '.join(BUNDLED_MODELS)}); for a GGUF file set *_MODEL_PATH"
            )
        return value

    @property
    def is_local(self) -> bool:
        """True when calls go to the embedded local server rather than a configured endpoint."""
        return not self.base_url

    @property
    def names_local_model(self) -> bool:
        """True when a local model is chosen explicitly (by name or file), not left to the role's default."""
        return self.local_model is not None or self.local_model_path is not None


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name)
    return value if value not in (None, "") else None


def llm_env_values(prefix: str, environ: Mapping[str, str], *, openai_fallback: bool) -> dict[str, str]:
    """The LLMSettings fields set in ``environ`` under ``prefix`` (e.g. ``MARK_LLM_``), as raw strings."""
    found: dict[str, str] = {}
    for field, suffixes in _ENV_FIELDS.items():
        for suffix in suffixes:
            value = _env(prefix + suffix, environ)
            if value is not None:
                found[field] = value
                break
        else:
            if openai_fallback and field in _OPENAI_FALLBACKS:
                value = _env(_OPENAI_FALLBACKS[field], environ)
                if value is not None:
                    found[field] = value
    return found


def env_variable(loc: Sequence[object], environ: Mapping[str, str] | None = None) -> str:
    """The environment variable behind a settings field (a pydantic error location), to name it in an error.

    Of several spellings of an LLM field, the one actually set in ``environ`` is named.
    """
    environ = os.environ if environ is None else environ
    head = str(loc[0]) if loc else ""
    field = str(loc[1]) if len(loc) > 1 else ""
    if head in _ROLE_PREFIX and field in _ENV_FIELDS:
        prefix = _ROLE_PREFIX[head]
        names = [prefix + suffix for suffix in _ENV_FIELDS[field]]
        if head == "llm" and field in _OPENAI_FALLBACKS:
            names.append(_OPENAI_FALLBACKS[field])
        return next((n for n in names if _env(n, environ) is not None), names[0])
    return "MARK_" + head.upper()


class AgentConfig(BaseModel):
    """How the MARK agents extract, resolve and recall memories."""

    #: "combined": one LLM call per turn extracts all three kinds (the default, for cost);
    #: "three": the paper's three agents, one call each.
    extraction_mode: Literal["combined", "three"] = "combined"
    #: A new note at least this similar (cosine) to an existing one is the same fact: it confirms it.
    duplicate_similarity: float = 0.88
    #: Existing notes at least this similar are checked by the LLM: same, replaces, conflicts or unrelated.
    related_similarity: float = 0.5
    max_related: int = 2
    max_notes_per_turn: int = 8
    #: Characters of conversation one extraction call sees at most (less when the model's window is smaller):
    #: longer turns are cut, keeping their beginning and end, and the cut is recorded in the memory history.
    extract_max_chars: int = Field(default=24_000, ge=1000)
    #: Trust of a new note by kind: what the user said beats what was inferred.
    trust_by_kind: dict[str, float] = Field(
        default_factory=lambda: {"user_question": 0.7, "llm_response": 0.6, "residual": 0.5}
    )
    #: Tokens of memory (notes and earlier turns) put into each reply's prompt; a history this small is given whole.
    recall_budget_tokens: int = 1500
    recall_limit: int = 12
    #: How episodes (raw turns) are searched: hybrid, or one ranker alone (to measure the fusion against).
    recall_episode_mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    #: Earlier messages of the session sent with each reply.
    history_messages: int = 8
    max_tokens_reply: int = 400
    #: Failed extractions are retried this many times (then kept as failed, never dropped silently).
    max_attempts: int = 3


class Settings(StoreSettings):
    """Store settings plus the chat LLM and the (optional) memory model."""

    llm: LLMSettings = Field(default_factory=LLMSettings)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    #: The model that extracts and resolves memory notes; None = see :attr:`memory`.
    memory_llm: LLMSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _llm_from_environment(cls, data: Any) -> Any:
        """Fill ``llm`` / ``memory_llm`` from MARK_LLM_* (then OPENAI_*) and MARK_MEMORY_LLM_* explicitly.

        pydantic-settings would only read a nested model from one JSON variable (``MARK_LLM``); the flat
        names are what users type. Values given to the constructor (or via ``MARK_LLM`` JSON) win.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        environ = os.environ
        llm = _merge_env(data.get("llm"), llm_env_values("MARK_LLM_", environ, openai_fallback=True))
        data["llm"] = llm
        role_env = llm_env_values(_ROLE_PREFIX["memory_llm"], environ, openai_fallback=False)
        if "memory_llm" not in data and role_env:
            data["memory_llm"] = _inherit(llm, role_env)
        elif isinstance(data.get("memory_llm"), dict):
            data["memory_llm"] = _merge_env(data["memory_llm"], role_env)
        return data

    @property
    def models_dir(self) -> Path:
        """Where bundled local models are assembled (``<home>/models``)."""
        return self.home / "models"

    @property
    def memory(self) -> LLMSettings:
        """The memory model's settings: ``memory_llm`` if configured, else the chat model's.

        When the chat runs the embedded model it was given by default (no model named), the memory model is
        the default embedded memory model instead, which the measurement chose apart from the chat's.
        """
        if self.memory_llm is not None:
            return self.memory_llm
        if self.llm.is_local and not self.llm.names_local_model and DEFAULT_MEMORY_MODEL != DEFAULT_CHAT_MODEL:
            return self.llm.model_copy(update={"local_model": DEFAULT_MEMORY_MODEL})
        return self.llm


def role_llm_settings(prefix: str, llm: LLMSettings, environ: Mapping[str, str], **given: Any) -> LLMSettings | None:
    """Another role's endpoint (``MARK_JUDGE_``, ``MARK_HELPER_`` ...): the chat's settings under the role's own
    variables and ``given`` fields; None when neither sets anything. A bad value raises InvalidInput naming it."""
    role_env: dict[str, Any] = {**llm_env_values(prefix, environ, openai_fallback=False), **given}
    if not role_env:
        return None
    try:
        return LLMSettings.model_validate(_inherit(llm, role_env))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else ""
        suffixes = _ENV_FIELDS.get(field, (field.upper(),))
        name = next((prefix + s for s in suffixes if _env(prefix + s, environ) is not None), prefix + suffixes[0])
        given_value = _env(name, environ)
        shown = f"={given_value[:40]!r}" if given_value is not None else ""
        raise InvalidInput(f"{name}{shown} is not valid: {first.get('msg', 'invalid value')}") from None


def _inherit(llm: Any, role_env: dict[str, Any]) -> dict[str, Any]:
    """A role configured from the environment: the chat's resolved settings under the role's own values.

    A role that names a local model runs the embedded server: the chat's endpoint, key, model name and local
    model are not inherited (MARK_MEMORY_LLM_LOCAL_MODEL=... beside a hosted chat model means a local one).
    """
    base = llm.model_dump() if isinstance(llm, LLMSettings) else LLMSettings.model_validate(llm).model_dump()
    if "local_model" in role_env or "local_model_path" in role_env:
        for field in _ENDPOINT_FIELDS:
            base.pop(field, None)
    return {**base, **role_env}


def _merge_env(given: Any, env_values: dict[str, str]) -> Any:
    """Environment values under explicit ones: a given LLMSettings object is taken as is, a dict is completed."""
    if given is None:
        return dict(env_values)
    if isinstance(given, dict):
        return {**env_values, **given}
    return given
