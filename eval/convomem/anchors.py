"""The published ConvoMem figures (``anchors/convomem_anchors.csv``), to draw beside ours."""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources

from pydantic import BaseModel

#: The paper's default answering model; other models' anchors are left out of the plots to keep them legible.
PLOT_MODEL = "gemini_2_5_flash"


class Anchor(BaseModel):
    category: str
    evidence_count: int
    method: str
    model: str
    context_size: int
    accuracy_percent: float | None
    avg_input_tokens: float | None
    p50_ms: float | None
    total_processed: int


def _num(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def load_anchors() -> tuple[Anchor, ...]:
    text = (resources.files("mark_eval.convomem") / "anchors" / "convomem_anchors.csv").read_text(encoding="utf-8")
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        rows.append(
            Anchor(
                category=raw["category"],
                evidence_count=int(raw["evidence_count"]),
                method=raw["method"],
                model=raw["model"],
                context_size=int(raw["context_size"]),
                accuracy_percent=_num(raw["accuracy_percent"]),
                avg_input_tokens=_num(raw["avg_input_tokens"]),
                p50_ms=_num(raw["p50_ms"]),
                total_processed=int(raw["total_processed"] or 0),
            )
        )
    return tuple(rows)


def matching(category: str, evidence_count: int, sizes: set[int], model: str = PLOT_MODEL) -> list[Anchor]:
    """Anchors of the same category and evidence count (0 in the anchors = any) at the sizes we ran."""
    return [
        a
        for a in load_anchors()
        if a.category == category
        and (a.evidence_count == evidence_count or a.evidence_count == 0 or evidence_count == 0)
        and a.context_size in sizes
        and a.model == model
        and a.total_processed > 0
    ]
