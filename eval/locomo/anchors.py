"""The published LoCoMo figures (``anchors/locomo_anchors.csv``), shown beside ours in the table and the plot.

Only figures stated in the project's research notes (vendors' and papers' claims, each with its own answer
model, answer prompt and judge; an empty ``answer_model`` means the source does not say): they place our
number, they are not a like-for-like comparison.
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources

from pydantic import BaseModel


class Anchor(BaseModel):
    system: str
    #: ``j`` (LLM judge accuracy, %) or ``f1`` (token F1, %)
    metric: str
    #: ``overall`` or a category name (``multi_hop`` ...)
    category: str
    score: float
    answer_model: str | None
    tokens_per_query: float | None
    p95_latency_s: float | None
    source: str
    note: str

    @property
    def model_label(self) -> str:
        return self.answer_model or "answer model not stated"

    @property
    def metric_label(self) -> str:
        what = "J" if self.metric == "j" else self.metric.upper()
        return what if self.category == "overall" else f"{what} ({self.category})"


def _num(text: str | None) -> float | None:
    return float(text) if text and text.strip() else None


@cache
def load_anchors() -> tuple[Anchor, ...]:
    text = (resources.files("mark_eval.locomo") / "anchors" / "locomo_anchors.csv").read_text(encoding="utf-8")
    return tuple(
        Anchor(
            system=raw["system"],
            metric=raw["metric"],
            category=raw["category"],
            score=float(raw["score"]),
            answer_model=raw["answer_model"].strip() or None,
            tokens_per_query=_num(raw["tokens_per_query"]),
            p95_latency_s=_num(raw["p95_latency_s"]),
            source=raw["source"],
            note=raw["note"],
        )
        for raw in csv.DictReader(io.StringIO(text))
    )


def j_anchors() -> list[Anchor]:
    """The overall J figures (categories 1-4), highest first: what the plot sets beside our headline."""
    return sorted((a for a in load_anchors() if a.metric == "j" and a.category == "overall"), key=lambda a: -a.score)
