"""Token F1 and BLEU-1 of an answer against LoCoMo's gold answer: the lexical scores the LoCoMo papers print
beside the LLM judge (LoCoMo, A-MEM, MemoryOS, mem0).

F1 is SQuAD's: lower-case, punctuation and the articles a/an/the removed, then the harmonic mean of
precision and recall over the multiset of shared tokens. BLEU-1 is Papineni et al.'s with unigrams only:
clipped unigram precision times the brevity penalty (what ``nltk``'s ``sentence_bleu`` with weights
(1, 0, 0, 0) computes), on lower-cased tokens with punctuation removed and articles kept. No stemming.
Both are in [0, 1]; an empty answer scores 0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}‘’“”–—]")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def tokens(text: str, drop_articles: bool = False) -> list[str]:
    text = _PUNCT.sub(" ", str(text).lower())
    if drop_articles:
        text = _ARTICLES.sub(" ", text)
    return text.split()


def token_f1(prediction: str, gold: str) -> float:
    pred = tokens(prediction, drop_articles=True)
    ref = tokens(gold, drop_articles=True)
    if not pred or not ref:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, gold: str) -> float:
    pred = tokens(prediction)
    ref = tokens(gold)
    if not pred or not ref:
        return 0.0
    ref_counts = Counter(ref)
    clipped = sum(min(n, ref_counts[t]) for t, n in Counter(pred).items())
    precision = clipped / len(pred)
    if precision == 0:
        return 0.0
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * precision


def lexical_scores(prediction: str, gold: str) -> dict[str, float]:
    return {"f1": round(token_f1(prediction, gold), 4), "bleu1": round(bleu1(prediction, gold), 4)}
