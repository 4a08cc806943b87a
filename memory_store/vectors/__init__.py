"""Vector-index backends behind one protocol: chromadb (default, persistent) and exact (in-memory)."""

from memory_store.vectors.base import VectorIndex
from memory_store.vectors.chroma import ChromaIndex
from memory_store.vectors.exact import ExactIndex

__all__ = ["ChromaIndex", "ExactIndex", "VectorIndex"]
