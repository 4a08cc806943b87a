"""Errors the store raises. Each carries the CLI exit code, so the shell layer maps them without guessing."""

from __future__ import annotations


class MarkError(Exception):
    """Base of every error a user of mark may see. The CLI prints its message on one line."""

    exit_code = 1


class InvalidInput(MarkError, ValueError):
    """The caller passed something unusable (empty text, a bad user id, a malformed file)."""

    exit_code = 2


class NotFound(MarkError, KeyError):
    """No such record in this user's scope (records of other users are indistinguishable from missing)."""

    exit_code = 1

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "not found"


class StoreError(MarkError):
    """The store is unusable: a locked, corrupt or inconsistent data directory."""

    exit_code = 1


def first_error(exc: Exception) -> str:
    """One line from a pydantic ValidationError (or any error): field and message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    return str(exc).splitlines()[0]


class Conflict(StoreError):
    """A write broke a constraint of the stored data (a duplicate id): the transaction was rolled back."""

    exit_code = 2
