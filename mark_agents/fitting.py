"""Fitting a conversation into the extractor's context window: long turns are cut, and every cut is said.

A turn of 200,000 characters does not fit a small model's window; sent whole, the endpoint refuses it and the
turn (and whatever was extracted with it) would never become memories. Cutting keeps each turn's beginning
and end (where people usually state what matters) and gives the short turns of the exchange all their text.
"""

from __future__ import annotations

from pydantic import BaseModel

#: Put where the middle of a cut turn was.
CUT_MARKER = " [... {n:,} characters left out ...] "
#: Assume this many characters per token when turning a token budget into characters. English runs ~4;
#: code, numbers and short repeated words run ~2 (non-Latin scripts less: the endpoint's refusal then halves
#: the budget, see MemoryBuilder._extract).
CHARS_PER_TOKEN = 2


class Cut(BaseModel):
    """One turn sent to the extractor shortened."""

    turn_id: str
    chars: int
    kept: int

    def describe(self) -> str:
        return f"turn {self.turn_id} cut from {self.chars:,} to {self.kept:,} characters to fit the model's context"


def cut_text(text: str, limit: int) -> str:
    """At most about ``limit`` characters of ``text``: its beginning and its end around a marker."""
    if len(text) <= limit:
        return text
    marker_len = len(CUT_MARKER.format(n=len(text)))
    keep = max(0, limit - marker_len)
    head = keep * 2 // 3
    tail = keep - head
    left_out = len(text) - head - tail
    end = text[len(text) - tail :] if tail else ""
    return text[:head] + CUT_MARKER.format(n=left_out) + end


def fair_shares(lengths: list[int], budget: int) -> list[int]:
    """How many characters each text may keep so they add up to ``budget`` at most.

    Short texts keep all of theirs; what is left is shared equally by the longer ones (water filling).
    """
    if sum(lengths) <= budget:
        return list(lengths)
    shares = [0] * len(lengths)
    left = max(0, budget)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for rank, i in enumerate(order):
        share = min(lengths[i], left // (len(order) - rank))
        shares[i] = share
        left -= share
    return shares


def fit_turns(turns: list[tuple[str, str, str]], budget: int) -> tuple[list[tuple[str, str]], list[Cut]]:
    """``(turn_id, role, content)`` triples fitted into ``budget`` characters: ``(role, text)`` pairs and the cuts."""
    shares = fair_shares([len(c) for _, _, c in turns], budget)
    fitted: list[tuple[str, str]] = []
    cuts: list[Cut] = []
    for (turn_id, role, content), share in zip(turns, shares, strict=True):
        text = cut_text(content, share)
        if text != content:
            cuts.append(Cut(turn_id=turn_id, chars=len(content), kept=len(text)))
        fitted.append((role, text))
    return fitted, cuts
