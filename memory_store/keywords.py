"""The words of a keyword query, the same for every engine (SQLite FTS5 and Postgres full-text search)."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
#: Words too common to rank by: they match most rows and cost time without telling memories apart
#: ("user": the MARK agents write every note as "The user ...").
STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i if in is it its me my "
    "of on or our she so that the their them they this to was we were what when where which who why will "
    "with you your user users".split()
)


def query_words(text: str, max_terms: int = 24) -> list[str]:
    """The distinct lower-case words of a query, stopwords left out (unless nothing else is left), at most
    ``max_terms``: a search matches any of them."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w not in words:
            words.append(w)
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:max_terms]
