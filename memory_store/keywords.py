"""The words of a keyword query, the same for every engine (SQLite FTS5 and Postgres full-text search)."""

from __future__ import annotations

import re

from memory_store.text import SEARCH_STOPWORDS

_WORD = re.compile(r"\w+", re.UNICODE)


def query_words(text: str, max_terms: int = 24) -> list[str]:
    """The distinct lower-case words of a query, stopwords left out (unless nothing else is left), at most
    ``max_terms``: a search matches any of them."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w not in words:
            words.append(w)
    content = [w for w in words if w not in SEARCH_STOPWORDS]
    return (content or words)[:max_terms]
