"""Evidence recall: the share of a question's evidence messages that reached the answer prompt."""

from __future__ import annotations

from collections.abc import Iterable


def evidence_recall(evidence_mids: list[str], context_mids: Iterable[str]) -> float | None:
    """None when the question has no located evidence (abstention items may still have some)."""
    if not evidence_mids:
        return None
    seen = set(context_mids)
    return sum(1 for mid in evidence_mids if mid in seen) / len(evidence_mids)


def evidence_in_prompt(evidence_mids: list[str], context_mids: Iterable[str]) -> list[str]:
    seen = set(context_mids)
    return [mid for mid in evidence_mids if mid in seen]
