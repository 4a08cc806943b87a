"""chromadb backend: one collection per user key, embeddings always passed explicitly.

Passing embeddings matters: a chroma collection without them falls back to its default embedding
function, which tries to download a model (and fails offline). No document text or user id is stored in
chroma, so purging SQLite and dropping the collection leaves no readable trace.

chroma's persistent client caches each collection's HNSW graph in memory; another process's writes are
not visible until the client is re-created, so `refresh()` resets it (the store calls it when the shared
vector epoch in SQLite moved).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np

PREFIX = "mark_"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _looks_like_segment(name: str) -> bool:
    return bool(_UUID.match(name))


class ChromaIndex:
    persistent = True

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._client = None
        self._collections: dict[str, object] = {}

    def _get_client(self):
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            self._client = chromadb.PersistentClient(
                path=str(self.path), settings=Settings(anonymized_telemetry=False, allow_reset=True)
            )
        return self._client

    def _collection(self, user_key: str, create: bool):
        name = PREFIX + user_key
        col = self._collections.get(name)
        if col is not None:
            return col
        client = self._get_client()
        if create:
            col = client.get_or_create_collection(name, embedding_function=None, metadata={"hnsw:space": "cosine"})
        else:
            try:
                col = client.get_collection(name, embedding_function=None)
            except Exception:  # chroma raises NotFoundError/ValueError depending on the version
                return None
        self._collections[name] = col
        return col

    def upsert(self, user_key: str, ids: list[str], vectors: np.ndarray) -> None:
        if not ids:
            return
        with self._lock:
            col = self._collection(user_key, create=True)
            step = 5000  # below chroma's max batch size (5461)
            for i in range(0, len(ids), step):
                col.upsert(ids=ids[i : i + step], embeddings=np.asarray(vectors[i : i + step], dtype=np.float32))

    def delete(self, user_key: str, ids: list[str]) -> None:
        if not ids:
            return
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is not None:
                col.delete(ids=ids)

    def drop_user(self, user_key: str) -> None:
        with self._lock:
            self._collections.pop(PREFIX + user_key, None)
            with contextlib.suppress(Exception):
                self._get_client().delete_collection(PREFIX + user_key)
            self._scrub()

    def _scrub(self) -> None:
        """Leave nothing of a dropped collection on disk.

        chroma frees the rows of a deleted collection but keeps them in free pages of its SQLite file, and
        keeps the collection's HNSW segment directory: VACUUM the file and remove segment directories that no
        live segment owns.
        """
        db_file = self.path / "chroma.sqlite3"
        if not db_file.exists():
            return
        conn = sqlite3.connect(db_file, timeout=30)
        try:
            live = {row[0] for row in conn.execute("SELECT id FROM segments")}
            conn.execute("VACUUM")
        finally:
            conn.close()
        for child in self.path.iterdir():
            if child.is_dir() and _looks_like_segment(child.name) and child.name not in live:
                shutil.rmtree(child, ignore_errors=True)

    def query(self, user_key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is None:
                return []
            n = col.count()
            if n == 0:
                return []
            res = col.query(
                query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
                n_results=min(k, n),
                include=["distances"],
            )
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    def count(self, user_key: str) -> int:
        with self._lock:
            col = self._collection(user_key, create=False)
            return 0 if col is None else col.count()

    def ids(self, user_key: str) -> set[str]:
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is None:
                return set()
            return set(col.get(include=[])["ids"])

    def user_keys(self) -> set[str]:
        with self._lock:
            names = [c if isinstance(c, str) else c.name for c in self._get_client().list_collections()]
        return {n[len(PREFIX) :] for n in names if n.startswith(PREFIX)}

    def refresh(self) -> None:
        with self._lock:
            from chromadb.api.shared_system_client import SharedSystemClient

            self._collections.clear()
            self._client = None
            SharedSystemClient.clear_system_cache()

    def reset(self) -> None:
        with self._lock:
            for key in self.user_keys():
                with contextlib.suppress(Exception):
                    self._get_client().delete_collection(PREFIX + key)
            self._collections.clear()
            self._scrub()

    def close(self) -> None:
        with self._lock:
            self._collections.clear()
            self._client = None
