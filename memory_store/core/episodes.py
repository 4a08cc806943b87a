"""Episodes and feedback: raw turns stored before any LLM sees them, their extraction queue, and reply verdicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memory_store.core.base import StoreBase, new_id
from memory_store.errors import InvalidInput
from memory_store.models import Feedback, Memory, Turn
from memory_store.validation import check_scope_id, check_turn


class TurnOps(StoreBase):
    if TYPE_CHECKING:  # memory_store.core.memories

        def adjust_trust(
            self, memory_ids: Iterable[str], user_id: str, delta: float, *, reason: str, actor: str = "api"
        ) -> list[Memory]: ...

    def add_turns(self, turns: Sequence[dict[str, Any] | Turn]) -> list[Turn]:
        """Store raw conversation messages (before any LLM sees them): nothing is lost if extraction fails."""
        out = []
        now = self.clock()
        for n, t in enumerate(turns):
            try:
                data = check_turn(t.model_dump() if isinstance(t, Turn) else dict(t))
            except InvalidInput as exc:
                raise InvalidInput(f"turn {n}: {exc}") from None
            out.append(
                Turn(
                    id=data.get("id") or new_id(),
                    user_id=data["user_id"],
                    agent_id=data.get("agent_id"),
                    session_id=data.get("session_id"),
                    role=data["role"],
                    content=data["content"],
                    created_at=data.get("created_at") or now,
                    extraction_status=data["extraction_status"],
                    metadata=data.get("metadata") or {},
                )
            )
        if out:
            self._store_turns(out)
        return out

    def _store_turns(self, turns: list[Turn]) -> None:
        """Write turns with their vectors (one embedding pass); the episode index follows."""
        vectors = self.embed([t.content for t in turns])
        with self.backend.transaction() as tx:
            tx.add_turns(turns, vectors, self.embedder.model_id)

    def turns(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        status: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Turn]:
        check_scope_id(user_id)
        return self.backend.turns(user_id, session_id, status, limit, offset, newest_first)

    def set_turns_status(
        self, turn_ids: Sequence[str], status: str, *, error: str | None = None, count_attempt: bool = True
    ) -> None:
        if status not in ("pending", "done", "failed", "skipped"):
            raise InvalidInput(f"unknown turn status {status!r}")
        with self.backend.transaction() as tx:
            tx.set_turns_status(list(turn_ids), status, error, count_attempt)

    def retryable_turns(self, user_id: str, max_attempts: int = 3) -> list[Turn]:
        """Turns still waiting for memory extraction (pending, or failed fewer than max_attempts times)."""
        check_scope_id(user_id)
        return self.backend.retryable_turns(user_id, max_attempts)

    def users_with_pending_turns(self, max_attempts: int = 3) -> list[str]:
        return self.backend.pending_turn_users(max_attempts)

    def episode_window(self, turn: Turn, *, before: int = 1, after: int = 1) -> list[Turn]:
        """A turn with its neighbours in the same session, in order: a short answer keeps what it answers."""
        if turn.seq is None:
            raise InvalidInput("the turn has no store position (was it read from this store?)")
        return self.backend.session_window(turn.user_id, turn.session_id, turn.seq, before, after)

    def episode_neighbours(
        self, user_id: str, turn_ids: Sequence[str], *, known: Mapping[str, tuple[str | None, str | None]] | None = None
    ) -> dict[str, tuple[Turn | None, Turn | None]]:
        """Each turn's previous and next turn in its session, for many turns in two reads (recall shows a short
        answer with its question). `known`: neighbour ids a search already looked up. A turn without a session
        has no neighbours here (`episode_window` reads those)."""
        check_scope_id(user_id)
        near = dict(known or {})
        unknown = [t for t in turn_ids if t not in near]
        if unknown:
            near.update(self.backend.turn_neighbours(user_id, unknown))
        wanted = list(dict.fromkeys(n for t in turn_ids for n in near.get(t, (None, None)) if n))
        rows = self.backend.turns_by_ids(user_id, wanted) if wanted else {}

        def turn(tid: str | None) -> Turn | None:
            return rows[tid][0] if tid is not None and tid in rows else None

        return {t: (turn(near[t][0]), turn(near[t][1])) for t in turn_ids if t in near}

    def history_size(self, user_id: str, *, cap: int | None = None) -> tuple[int, int]:
        """(turns, characters) of the user's conversation history: tells recall whether all of it fits. With
        `cap`, at most that many turns are counted (recall only needs to know whether the history is small)."""
        check_scope_id(user_id)
        return self.backend.history_size(user_id, cap)

    # -- feedback ---------------------------------------------------------------------------------------------

    def add_feedback(
        self,
        user_id: str,
        response_id: str,
        memory_ids: Sequence[str],
        value: int,
        *,
        comment: str = "",
        trust_step: float = 0.1,
    ) -> Feedback:
        """A good (+1) or bad (-1) verdict on a reply: recorded, and the trust of the memories used moves."""
        check_scope_id(user_id)
        if value not in (1, -1):
            raise InvalidInput("feedback value must be +1 (good) or -1 (bad)")
        fb = Feedback(
            id=new_id(),
            user_id=user_id,
            response_id=response_id,
            memory_ids=list(memory_ids),
            value=value,
            comment=comment,
            created_at=self.clock(),
        )
        with self.backend.transaction() as tx:
            tx.add_feedback(fb)
        if memory_ids:
            self.adjust_trust(
                memory_ids, user_id, trust_step * value, reason=f"feedback {'good' if value > 0 else 'bad'}"
            )
        return fb

    def feedback(self, user_id: str) -> list[Feedback]:
        check_scope_id(user_id)
        return self.backend.feedback(user_id)
