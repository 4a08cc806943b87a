"""The vector-index protocol: the small surface every backend implements (and the conformance suite tests).

Vectors are grouped per user key (a hash of the user id), so a query can never see another user's vectors
and purging a user drops one group. The index is derived data: SQLite keeps every embedding, so an index
can always be rebuilt from it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    #: True if the index survives a restart on its own (else the store refills it from SQLite on open).
    persistent: bool

    def upsert(self, user_key: str, ids: list[str], vectors: np.ndarray) -> None: ...

    def delete(self, user_key: str, ids: list[str]) -> None: ...

    def follows_rows(self, user_key: str) -> bool:
        """True when the index holds no copy of this group and reads it from the rows at its next use: a write
        already committed to the rows then needs nothing applied (the outbox skips reading its vectors)."""
        ...

    def drop_user(self, user_key: str) -> None: ...

    def query(self, user_key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest ids in the user's group with their cosine similarity, best first."""
        ...

    def count(self, user_key: str) -> int: ...

    def ids(self, user_key: str) -> set[str]: ...

    def user_keys(self) -> set[str]: ...

    def refresh(self) -> None:
        """Forget in-process caches: another process changed the index on disk."""
        ...

    def reset(self) -> None:
        """Delete everything (before a rebuild)."""
        ...

    def close(self) -> None: ...
