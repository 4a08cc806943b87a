"""The one settings object of a `mark` run, built from ``--home`` and the environment.

A bad value in the environment (``MARK_LLM_TIMEOUT=abc``, ``MARK_VECTOR_BACKEND=nope``) is the user's input:
it becomes one :class:`~memory_store.errors.InvalidInput` line naming the variable and what it accepts, never
a pydantic traceback. Every command builds its settings through here, so this is the only place that says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from mark_agents.config import Settings, env_variable
from memory_store.errors import InvalidInput

#: Longer given values are cut in the message (a value may be a key or a long path).
_SHOWN_VALUE_CHARS = 40
_FIELD = re.compile(r'field "([^"]+)"')


def build_settings(home: Path | None) -> Settings:
    """Settings from the environment (``home`` overrides ``MARK_HOME``); a bad value raises InvalidInput."""
    try:
        return Settings(**({"home": home} if home is not None else {}))
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None
    except SettingsError as exc:  # a JSON-valued variable (MARK_SCORING, MARK_AGENT ...) that is not JSON
        match = _FIELD.search(str(exc))
        name = env_variable((match.group(1),)) if match else "a MARK_ variable"
        raise InvalidInput(f"{name} is not valid: it takes a JSON object") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line: the variable, the value given and what pydantic says it accepts (the first error of several)."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    name = env_variable(loc)
    shown = ""
    given = os.environ.get(name)
    if given is not None:
        cut = given if len(given) <= _SHOWN_VALUE_CHARS else given[:_SHOWN_VALUE_CHARS] + "…"
        shown = f"={cut!r}"
    field = ".".join(str(p) for p in loc[1:]) if name in ("MARK_SCORING", "MARK_AGENT") and len(loc) > 1 else ""
    where = f" (field {field})" if field else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}{shown} is not valid{where}: {first.get('msg', 'invalid value')}{more}"
