"""Exact (brute-force) backend: vectors in process memory, loaded per user from SQLite on first use.

Useful as the reference implementation in the conformance suite and for small deployments: per-user
groups are small, and a matrix product over a few thousand 384-d vectors takes well under a millisecond.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

Loader = Callable[[str], tuple[list[str], np.ndarray]]


class ExactIndex:
    persistent = False

    def __init__(self, loader: Loader | None = None) -> None:
        self._loader = loader
        self._lock = threading.RLock()
        self._groups: dict[str, dict[str, np.ndarray]] = {}
        self._matrix: dict[str, tuple[list[str], np.ndarray]] = {}

    def _group(self, user_key: str) -> dict[str, np.ndarray]:
        group = self._groups.get(user_key)
        if group is None:
            group = {}
            if self._loader is not None:
                ids, vectors = self._loader(user_key)
                group = {i: v for i, v in zip(ids, vectors, strict=True)}
            self._groups[user_key] = group
        return group

    def follows_rows(self, user_key: str) -> bool:
        with self._lock:
            return self._loader is not None and user_key not in self._groups

    def upsert(self, user_key: str, ids: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            group = self._group(user_key)
            for i, v in zip(ids, np.asarray(vectors, dtype=np.float32), strict=True):
                group[i] = v
            self._matrix.pop(user_key, None)

    def delete(self, user_key: str, ids: list[str]) -> None:
        with self._lock:
            group = self._group(user_key)
            for i in ids:
                group.pop(i, None)
            self._matrix.pop(user_key, None)

    def drop_user(self, user_key: str) -> None:
        with self._lock:
            self._groups[user_key] = {}
            self._matrix.pop(user_key, None)

    def query(self, user_key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            cached = self._matrix.get(user_key)
            if cached is None:
                group = self._group(user_key)
                ids = list(group)
                matrix = np.stack(list(group.values())) if ids else np.zeros((0, len(vector)), np.float32)
                cached = self._matrix[user_key] = (ids, matrix)
        ids, matrix = cached
        if not ids:
            return []
        sims = matrix @ np.asarray(vector, dtype=np.float32)
        k = min(k, len(ids))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(ids[i], float(sims[i])) for i in top]

    def count(self, user_key: str) -> int:
        with self._lock:
            return len(self._group(user_key))

    def ids(self, user_key: str) -> set[str]:
        with self._lock:
            return set(self._group(user_key))

    def user_keys(self) -> set[str]:
        with self._lock:
            return {k for k, g in self._groups.items() if g}

    def refresh(self) -> None:
        with self._lock:
            self._groups.clear()
            self._matrix.clear()

    def reset(self) -> None:
        self.refresh()

    def close(self) -> None:
        self.refresh()
