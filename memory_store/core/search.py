"""Search: hybrid (dense + keyword), decay-ranked search of notes, and hybrid search of episodes (raw turns)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime

import numpy as np

from memory_store import scoring
from memory_store.backend import Candidate
from memory_store.core.base import StoreBase
from memory_store.core.memories import memory_filter
from memory_store.errors import InvalidInput
from memory_store.models import EpisodeHit, MemoryKind, SearchHit
from memory_store.validation import check_scope_id, episode_key, user_key

#: A query's vector, or a future of one still being computed: keyword search runs meanwhile (torch and SQLite both
#: release the GIL), and the vector is waited for only when the dense half needs it.
QueryVector = np.ndarray | Future[np.ndarray]

#: With a filter (kind, session, time), scopes up to this size are searched exactly from the rows.
EXACT_FILTER_LIMIT = 5000
#: The index's similarity and the rows' may differ in the last float bits: a search is cut short only below this.
SIMILARITY_SLACK = 1e-5


def _check_query(query: str, mode: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("search query is empty")
    if mode not in ("hybrid", "dense", "keyword"):
        raise InvalidInput(f"unknown search mode {mode!r} (hybrid, dense, keyword)")


class SearchOps(StoreBase):
    def _query_vector(self, query: str, given: QueryVector | None) -> np.ndarray:
        vector = given.result() if isinstance(given, Future) else given
        if vector is None:
            vector = self.embed([query.strip()])[0]
        return np.asarray(vector, dtype=np.float32)

    def search(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 10,
        kinds: Sequence[MemoryKind | str] | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_history: bool = False,
        mode: str = "hybrid",
        explain: bool = False,
        query_embedding: QueryVector | None = None,
        min_similarity: float | None = None,
    ) -> list[SearchHit]:
        """Hybrid (dense + keyword), decay-ranked search in one user's memories. See scoring.py for the score.

        `min_similarity`: only memories at least this similar to the query (cosine); when not even the nearest one
        is, the search stops there (recall asks this of notes that must be as close as the episode excerpts)."""
        check_scope_id(user_id)
        _check_query(query, mode)
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        flt = memory_filter(kinds, session_id, agent_id, since, until, include_history)
        key = user_key(user_id)
        fetch = max(limit * 4, 40)
        filtered = bool(kinds or session_id or agent_id or since or until or include_history)
        kw: list[tuple[str, float]] | None = None
        if mode == "hybrid" and isinstance(query_embedding, Future) and not query_embedding.done():
            kw = self.backend.keyword_search(key, query, fetch)  # while the query is still being embedded
        qv = self._query_vector(query, query_embedding) if mode != "keyword" else None
        if min_similarity is not None and qv is not None and not filtered:
            nearest = self.backend.nearest(key, qv, 1)
            if not nearest or nearest[0][1] < min_similarity - SIMILARITY_SLACK:
                return []

        dense: list[str] = []
        keyword: list[str] = []
        rows: dict[str, tuple[Candidate, float | None]] | None = None  # read with the candidates by one engine call
        forgot_nothing = False  # the engine saw, in that same call, that the user forgot nothing
        exact_cos: dict[str, float] = {}
        if qv is not None:
            if filtered and self.backend.count_memories(user_id, flt) <= EXACT_FILTER_LIMIT:
                # Selective filter: score the filtered rows exactly instead of hoping ANN over-fetch finds them.
                vecs = [(i, e) for i, e in self.backend.filtered_vectors(user_id, flt) if e is not None]
                if vecs:
                    sims = np.stack([e for _, e in vecs]) @ qv
                    order = np.argsort(-sims)[:fetch]
                    dense = [vecs[i][0] for i in order]
                    exact_cos = {vecs[i][0]: float(sims[i]) for i in order}
            elif not filtered and mode == "hybrid" and kw is None:
                dense, keyword, rows, forgot_nothing = self.backend.hybrid_candidates(user_id, qv, fetch, query, fetch)
            else:
                n: int | None = None
                k = fetch
                while True:
                    found = self.backend.nearest(key, qv, k)  # applies pending vector writes first
                    dense = [i for i, _ in found]
                    if filtered and len(found) == k:
                        n = self.backend.vector_count(key) if n is None else n
                        if k < n and self.backend.count_memories(user_id, flt.with_ids(dense)) < limit:
                            k *= 4
                            continue
                    break
        if rows is None:
            if kw is None:
                kw = self.backend.keyword_search(key, query, fetch) if mode != "dense" else []
            keyword = [i for i, _ in kw]
            # The scope guard: only this user's rows come back, each with its similarity to the query.
            rows = self.backend.candidates_by_ids(list(dict.fromkeys(dense + keyword)), user_id, qv)
        candidates = list(dict.fromkeys(dense + keyword))
        allowed = {i for i, (m, _) in rows.items() if flt.admits(m)}
        now = self.clock()
        cfg = self.settings.scoring
        dense_rank = {}
        for i in dense:
            if i in allowed:
                dense_rank[i] = len(dense_rank) + 1
        keyword_rank = {}
        for i in keyword:
            if i in allowed:
                keyword_rank[i] = len(keyword_rank) + 1
        scored: list[tuple[float, str, float]] = []  # (final, id, cosine)
        for mid in candidates:
            if mid not in allowed:
                continue
            cand, sim = rows[mid]
            if qv is not None:
                cos = exact_cos.get(mid)
                if cos is None:
                    cos = sim if sim is not None else 0.0
                if cos < cfg.min_similarity and mid not in keyword_rank:
                    continue
                if min_similarity is not None and cos < min_similarity:
                    continue
            else:
                cos = 0.0
            final = scoring.terms(cand, cos, dense_rank.get(mid), keyword_rank.get(mid), now, cfg)[-1]
            scored.append((final, mid, cos))
        scored.sort(key=lambda t: (-t[0], t[1]))
        guard = None if forgot_nothing or not scored else self.forget_guard(user_id)
        hits: list[SearchHit] = []
        for final, mid, cos in scored:  # best first: only the hits returned are decoded in full
            memory = rows[mid][0].memory()
            # Second line of defence: forgetting removed these notes already.
            if guard is not None and guard.blocks_note(memory.text, memory.source.turn_ids, memory.created_at):
                continue
            b = scoring.score(memory, cos, dense_rank.get(mid), keyword_rank.get(mid), now, cfg) if explain else None
            hits.append(SearchHit(memory=memory, score=final, explain=b))
            if len(hits) == limit:
                break
        return hits

    def search_episodes(
        self,
        query: str,
        user_id: str,
        *,
        limit: int = 20,
        mode: str = "hybrid",
        query_embedding: QueryVector | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[EpisodeHit]:
        """Hybrid search over everything the user and the assistant said (raw turns), best first.

        The turns are the episodic layer under the notes: what extraction missed is still found here. Scored by
        `scoring.episode_score` (dense and keyword fused; no decay: an old statement is as true as a new one
        unless a note superseded it, which `Turn.outdated_by` says), then, in hybrid mode, each turn lends part
        of its score to its neighbours in the session (`scoring.neighbour_smoothed`: an answer rarely repeats the
        question's words, the turns around it do). `dense` and `keyword` are the single rankers, unsmoothed, kept
        to measure the pipeline against.
        """
        check_scope_id(user_id)
        _check_query(query, mode)
        fetch = max(limit * 3, 60)
        excluded = set(exclude_ids)
        # Keywords first: a query vector still being computed is waited for only after them.
        keyword = (
            [i for i, _ in self.backend.episode_keyword_search(user_key(user_id), query, fetch + len(excluded))]
            if mode != "dense"
            else []
        )
        dense: list[str] = []
        qv = None
        if mode != "keyword":
            qv = self._query_vector(query, query_embedding)
            dense = [i for i, _ in self.backend.nearest(episode_key(user_id), qv, fetch + len(excluded))]
        dense = [i for i in dense if i not in excluded]
        keyword = [i for i in keyword if i not in excluded]
        candidates = list(dict.fromkeys(dense + keyword))
        dense_rank = {i: n for n, i in enumerate(dense, 1)}
        keyword_rank = {i: n for n, i in enumerate(keyword, 1)}
        cfg = self.settings.scoring
        fused = {i: scoring.episode_score(0.0, dense_rank.get(i), keyword_rank.get(i), cfg) for i in candidates}
        near: dict[str, tuple[str | None, str | None]] = {}
        if mode == "hybrid" and cfg.episode_neighbour_weight > 0 and candidates:
            # The best 2 x limit lend (a deeper turn's share rarely lifts anything into the limit; measured on the
            # dev dialogues, 2 x limit kept every gain of lending from all, 1 x limit lost a tenth of them).
            lenders = heapq.nlargest(2 * limit, candidates, key=fused.__getitem__)
            near = self.backend.turn_neighbours(user_id, lenders)
            fused = scoring.neighbour_smoothed(fused, near, cfg.episode_neighbour_weight)
            fused = {i: s for i, s in fused.items() if i not in excluded}
        ranked = sorted(fused, key=lambda i: -fused[i])
        guard = self.forget_guard(user_id)
        hits: list[EpisodeHit] = []
        start = 0
        # Only the turns that can make the cut are read (in rounds, while forgetting's guard drops some), with
        # every turn tied with the last one, so the order by (score, position) is the same as reading them all.
        while start < len(ranked) and len(hits) < limit:
            end = min(len(ranked), start + limit - len(hits))
            while end < len(ranked) and fused[ranked[end]] == fused[ranked[end - 1]]:
                end += 1
            rows = self.backend.turns_by_ids(user_id, ranked[start:end])  # the scope guard: only this user's turns
            start = end
            for tid, (turn, emb) in rows.items():
                if guard is not None:  # second line of defence: forgetting redacted these turns already
                    turn = guard.guard_turn(turn)
                    if not guard.has_content(turn.content):
                        continue
                cos = float(emb @ qv) if qv is not None and emb is not None and emb.shape == qv.shape else 0.0
                hits.append(
                    EpisodeHit(
                        turn=turn,
                        score=fused[tid],
                        similarity=cos,
                        dense_rank=dense_rank.get(tid),
                        keyword_rank=keyword_rank.get(tid),
                        neighbours=near.get(tid),
                    )
                )
        hits.sort(key=lambda h: (-h.score, h.turn.seq or 0))
        return hits[:limit]
