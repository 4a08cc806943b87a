"""Privacy: purge every trace of a user, and forget one fact everywhere (memory_store.forgetter does the work)."""

from __future__ import annotations

from memory_store import forgetter
from memory_store.core.base import StoreBase
from memory_store.errors import InvalidInput
from memory_store.models import ForgetPlan, ForgetReport, PurgeReport
from memory_store.validation import check_scope_id, user_key


class PrivacyOps(StoreBase):
    def purge_user(self, user_id: str) -> PurgeReport:
        """Remove every trace of a user: memories, raw turns, history, feedback, keyword index, vectors."""
        check_scope_id(user_id)
        with self.backend.transaction() as tx:
            counts = tx.purge_user(user_id)
        self.backend.scrub_user(user_id, refill=False)
        self._forget_recent_embeddings()
        user_key.cache_clear()  # the process's cache of user keys held the purged user's id
        return PurgeReport(
            user_id=user_id,
            memories=counts["memories"],
            turns=counts["turns"],
            history=counts["history"],
            feedback=counts["feedback"],
        )

    def plan_forget(self, user_id: str, memory_id: str | None = None, *, about: str | None = None) -> ForgetPlan:
        """What `forget` would remove: one note (an id or unique prefix) with its earlier or later versions, or
        every note and episode matching a topic (hybrid search, above a similarity threshold)."""
        return forgetter.plan(self, user_id, memory_id, about)

    def forget(
        self,
        user_id: str,
        memory_id: str | None = None,
        *,
        about: str | None = None,
        plan: ForgetPlan | None = None,
        reason: str = "forgotten on request",
        actor: str = "api",
    ) -> ForgetReport:
        """Forget a fact everywhere the store holds it, so nothing recalls or re-derives it (memory_store.forgetter):
        its notes, its clauses in the turns (redacted in place, re-embedded), the text of its history (a keyed hash
        stays), and a fingerprint of hashed tokens that extraction and recall consult. `plan`: a `plan_forget`
        result shown to the user first (what was shown is what goes)."""
        if plan is None:
            plan = self.plan_forget(user_id, memory_id, about=about)
        elif plan.user_id != check_scope_id(user_id):
            raise InvalidInput("the forget plan belongs to another user")
        self._forget_recent_embeddings()
        return forgetter.forget(self, plan, reason=reason, actor=actor)
