"""The decay-aware ranking score. Every term is in [0, 1] and reported by `explain`.

    relevance = a * cos' + (1 - a) * rrf / rrf_max          (a = 0.7)
        cos'  = clamp((cosine - min_similarity) / (1 - min_similarity))
        rrf   = sum over the dense and keyword rankings of 1 / (rrf_k + rank)
    recency   = R = exp(-age_days / S)                       (Ebbinghaus forgetting curve, as in MemoryBank)
        age   = days since the memory was last touched: created, confirmed or recalled
        S     = base_strength[kind] * (1 + confirm_boost)^confirmations * (1 + recall_boost)^recalls
                (capped at 10 years): every repetition makes the memory fade more slowly
    frequency = 1 - exp(-0.3 * (confirmations + recalls))
    trust     = the memory's trust in [0, 1] (raised by confirmations and good feedback, lowered by bad)
    final     = w_relevance * relevance + w_recency * recency + w_frequency * frequency + w_trust * trust
                (halved for a superseded memory, which is only returned when history is asked for, so that
                it ranks below the fact that replaced it)

Cosine is gated before fusion (a memory under `min_similarity` that no keyword matched is not a candidate):
thresholds apply to the cosine, never to the rank-fusion score, whose scale depends on the list lengths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from memory_store.config import ScoringConfig
from memory_store.models import Memory, MemoryStatus, ScoreBreakdown

if TYPE_CHECKING:
    from memory_store.backend import Candidate

DENSE_SHARE = 0.7
SUPERSEDED_FACTOR = 0.5
MAX_STRENGTH_DAYS = 3650.0


def strength_days(memory: Memory | Candidate, cfg: ScoringConfig) -> float:
    base = cfg.base_strength_days.get(memory.kind.value, 90.0)
    s = base * (1 + cfg.confirm_boost) ** memory.confirm_count * (1 + cfg.recall_boost) ** memory.recall_count
    return min(s, MAX_STRENGTH_DAYS)


def last_touch(memory: Memory | Candidate) -> datetime:
    times = [memory.created_at, memory.last_confirmed_at, memory.last_recalled_at]
    return max(t for t in times if t is not None)


def recency(memory: Memory | Candidate, now: datetime, cfg: ScoringConfig) -> tuple[float, float, float]:
    """(R, age_days, strength_days)."""
    age = max(0.0, (now - last_touch(memory)).total_seconds() / 86400.0)
    s = strength_days(memory, cfg)
    return math.exp(-age / s), age, s


def frequency(memory: Memory | Candidate) -> float:
    return 1.0 - math.exp(-0.3 * (memory.confirm_count + memory.recall_count))


def terms(
    memory: Memory | Candidate,
    cosine: float,
    dense_rank: int | None,
    keyword_rank: int | None,
    now: datetime,
    cfg: ScoringConfig,
) -> tuple[float, float, float, float, float, float, float]:
    """(rrf, relevance, recency, age_days, strength_days, frequency, final): the score's terms as plain floats
    (a search ranks every candidate by them; `score` wraps them for the hits it returns)."""
    rrf = 0.0
    if dense_rank is not None:
        rrf += 1.0 / (cfg.rrf_k + dense_rank)
    if keyword_rank is not None:
        rrf += 1.0 / (cfg.rrf_k + keyword_rank)
    rrf_norm = rrf / (2.0 / (cfg.rrf_k + 1))
    tau = cfg.min_similarity
    cos_norm = min(1.0, max(0.0, (cosine - tau) / (1.0 - tau)))
    relevance = DENSE_SHARE * cos_norm + (1 - DENSE_SHARE) * rrf_norm
    r, age, s = recency(memory, now, cfg)
    f = frequency(memory)
    total_w = cfg.w_relevance + cfg.w_recency + cfg.w_frequency + cfg.w_trust
    final = (
        cfg.w_relevance * relevance + cfg.w_recency * r + cfg.w_frequency * f + cfg.w_trust * memory.trust
    ) / total_w
    if memory.status == MemoryStatus.superseded:
        final *= SUPERSEDED_FACTOR
    return rrf, relevance, r, age, s, f, final


def score(
    memory: Memory | Candidate,
    cosine: float,
    dense_rank: int | None,
    keyword_rank: int | None,
    now: datetime,
    cfg: ScoringConfig,
) -> ScoreBreakdown:
    rrf, relevance, r, age, s, f, final = terms(memory, cosine, dense_rank, keyword_rank, now, cfg)
    return ScoreBreakdown(
        similarity=cosine,
        dense_rank=dense_rank,
        keyword_rank=keyword_rank,
        rrf=rrf,
        relevance=relevance,
        recency=r,
        strength_days=s,
        age_days=age,
        frequency=f,
        trust=memory.trust,
        final=final,
    )


def episode_score(cosine: float, dense_rank: int | None, keyword_rank: int | None, cfg: ScoringConfig) -> float:
    """Relevance of a raw turn to a query in [0, 1]: dense and keyword evidence fused.

    Reciprocal-rank fusion with a keyword weight: on conversations, exact words (names, places, titles) are the
    stronger signal, the embedding catches paraphrases. Each ranking contributes w / (k + rank), normalised so a
    turn ranked first by both scores 1.
    """
    k = cfg.episode_rrf_k
    wd, wk = cfg.episode_dense_weight, cfg.episode_keyword_weight
    total = 0.0
    if dense_rank is not None:
        total += wd / (k + dense_rank)
    if keyword_rank is not None:
        total += wk / (k + keyword_rank)
    return total / ((wd + wk) / (k + 1))


def neighbour_smoothed(
    scores: Mapping[str, float], neighbours: Mapping[str, tuple[str | None, str | None]], weight: float
) -> dict[str, float]:
    """Episode scores with each turn lending `weight` of its score to the turns before and after it in its session,
    normalised back to [0, 1].

    A conversational answer rarely repeats the question's words ("Yeah, awesome! Glad to be part of it."): the
    turns around it do. Measured with recall on the dev dialogues (evidence turns in a 2,000-token prompt), a
    weight of 0.3 took basic facts from 68 to 75% and multi-session from 82 to 91%, the rest unchanged.
    A neighbour no ranker found becomes a candidate on its neighbours' strength alone.
    """
    if weight <= 0:
        return dict(scores)
    out = dict(scores)
    for tid, score in scores.items():
        for near in neighbours.get(tid, (None, None)):
            if near is not None:
                out[near] = out.get(near, 0.0) + weight * score
    return {tid: score / (1 + 2 * weight) for tid, score in out.items()}
