"""A small Okapi BM25 over short documents (haystack messages), for the keyword arm of RAG."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import numpy as np

from memory_store.text import SEARCH_STOPWORDS as STOPWORDS

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords, with a crude plural/possessive strip."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in STOPWORDS:
            continue
        tok = tok.removesuffix("'s")
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


class BM25:
    """Okapi BM25 (k1=1.2, b=0.75) with postings, scoring every document for a query in one pass."""

    def __init__(self, documents: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(documents)
        tokens = [tokenize(d) for d in documents]
        self.lengths = np.array([len(t) for t in tokens], dtype=np.float32)
        self.avgdl = float(self.lengths.mean()) if self.n and self.lengths.sum() else 1.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for doc, toks in enumerate(tokens):
            for term, tf in Counter(toks).items():
                self.postings[term].append((doc, tf))

    def scores(self, query: str) -> np.ndarray:
        scores = np.zeros(self.n, dtype=np.float32)
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.avgdl)
        for term in set(tokenize(query)):
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (self.n - len(posting) + 0.5) / (len(posting) + 0.5))
            docs = np.fromiter((d for d, _ in posting), dtype=np.int64, count=len(posting))
            tfs = np.fromiter((tf for _, tf in posting), dtype=np.float32, count=len(posting))
            scores[docs] += idf * tfs * (self.k1 + 1) / (tfs + norm[docs])
        return scores
