"""Input checks at the boundary, so bad input fails loudly before anything is written."""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Mapping
from typing import Any

from memory_store.errors import InvalidInput

MAX_USER_ID_CHARS = 256
MAX_MEMORY_CHARS = 20_000
MAX_TURN_CHARS = 200_000
TURN_ROLES = ("user", "assistant", "system")
TURN_STATUSES = ("pending", "done", "failed", "skipped")


def _check_unicode(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid unicode (position {exc.start})") from None


def check_scope_id(value: object, what: str = "user id") -> str:
    """User, agent and session ids are opaque strings: any printable text, never used in a path or a query."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidInput(f"{what} is empty")
    if len(value) > MAX_USER_ID_CHARS:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {MAX_USER_ID_CHARS}")
    _check_unicode(value, what)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidInput(f"{what} contains control characters")
    return value


def check_optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_scope_id(value, what)


def check_text(value: object, what: str = "memory text", limit: int = MAX_MEMORY_CHARS) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text):,} characters; the limit is {limit:,}")
    _check_unicode(text, what)
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character")
    return text


def check_turn(data: Mapping[str, Any]) -> dict[str, Any]:
    """A raw turn's fields, checked as every write checks them (`add_turns` and `import_jsonl` share this).

    Returns a copy with the user id, the message (stripped), the role (lower case) and the status normalised.
    """
    out = dict(data)
    if out.get("id") is not None:
        check_scope_id(out["id"], "turn id")
    out["user_id"] = check_scope_id(out.get("user_id"))
    check_optional_id(out.get("agent_id"), "agent id")
    check_optional_id(out.get("session_id"), "session id")
    out["content"] = check_text(out.get("content"), "message", limit=MAX_TURN_CHARS)
    role = str(out.get("role", "user")).lower()
    if role not in TURN_ROLES:
        raise InvalidInput(f"role must be user, assistant or system, not {role!r}")
    out["role"] = role
    status = out.get("extraction_status") or "pending"
    if status not in TURN_STATUSES:
        raise InvalidInput(f"extraction status must be one of {', '.join(TURN_STATUSES)}, not {status!r}")
    out["extraction_status"] = status
    return out


@functools.lru_cache(maxsize=4096)
def user_key(user_id: str) -> str:
    """A fixed-length, path-safe name for a user (vector collections): never the id itself. Cached: a bulk write
    names each row's user key, and a hash costs ~1 µs against ~0.1 µs for a cache hit."""
    return "u" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:40]


#: Prefix of a user's episode (raw turn) vectors in the vector index, beside the notes' ``u...`` key.
EPISODE_KEY_PREFIX = "e"


def episode_key(user_id: str) -> str:
    """The vector-index key of a user's episodes: the same hash as `user_key`, another namespace."""
    return EPISODE_KEY_PREFIX + user_key(user_id)[1:]


def is_episode_key(key: str) -> bool:
    return key.startswith(EPISODE_KEY_PREFIX)


def episode_key_of(key: str) -> str:
    """The episode key that belongs to a user key (purge drops both)."""
    return EPISODE_KEY_PREFIX + key[1:]


def user_key_of(key: str) -> str:
    """The user key that an episode key belongs to."""
    return "u" + key[1:]
