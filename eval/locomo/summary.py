"""LoCoMo's summary: one row per method and category, plus the headline row over categories 1-4
(adversarial questions apart, as the papers report), with J accuracy and its 95% confidence interval, token
F1, BLEU-1, evidence recall, tokens, latency and cost; the CSV and the console table (with the published
figures beside ours)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mark_eval.convomem.results import ResultRow
from mark_eval.convomem.summary import GroupStats, group_stats, mean
from mark_eval.locomo.anchors import Anchor, load_anchors
from mark_eval.locomo.categories import ADVERSARIAL, CATEGORY_NAMES, HEADLINE, OVERALL, category_number
from memory_store.atomic import write_text_atomic

COLUMNS = [
    "method",
    "category",
    "category_id",
    "questions",
    "j_percent",
    "ci95_low_percent",
    "ci95_high_percent",
    "correct_answers",
    "total_processed",
    "f1_percent",
    "bleu1_percent",
    "evidence_recall_percent",
    "avg_input_tokens",
    "avg_output_tokens",
    "avg_cost",
    "avg_response_time_ms",
    "p50_ms",
    "p95_ms",
    "avg_retrieval_ms",
    "avg_index_tokens",
    "context_overflow",
    "errors",
    "judge",
    "answer_model",
    "dialogues",
]

#: categories in the order rows are shown: the headline first, then 1-4, then adversarial
ORDER = (OVERALL, *HEADLINE, ADVERSARIAL)


class LocomoSummaryRow(GroupStats):
    method: str
    category: str
    #: LoCoMo's category number ("1-4" for the headline row)
    category_id: str
    f1_percent: float | None
    bleu1_percent: float | None
    dialogues: int
    answer_model: str

    @property
    def j_percent(self) -> float | None:
        return self.success_rate_percent


def _row(method: str, category: str, group: list[ResultRow]) -> LocomoSummaryRow:
    stats = group_stats(group)
    ok = [r for r in group if r.error is None]
    f1 = [r.metrics["f1"] for r in ok if "f1" in r.metrics]
    bleu = [r.metrics["bleu1"] for r in ok if "bleu1" in r.metrics]
    return LocomoSummaryRow(
        method=method,
        category=category,
        category_id="1-4" if category == OVERALL else str(category_number(category)),
        f1_percent=round(100 * mean(f1), 1) if f1 else None,
        bleu1_percent=round(100 * mean(bleu), 1) if bleu else None,
        dialogues=len({r.haystack_id for r in group}),
        answer_model="+".join(sorted({r.model for r in ok if r.model})),
        **stats,
    )


def summarise(rows: Iterable[ResultRow]) -> list[LocomoSummaryRow]:
    by: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        if row.category not in CATEGORY_NAMES.values():
            continue
        by[(row.method, row.category)].append(row)
        if row.category in HEADLINE:
            by[(row.method, OVERALL)].append(row)
    methods = sorted({m for m, _ in by})
    return [_row(m, c, by[(m, c)]) for m in methods for c in ORDER if (m, c) in by]


def to_csv(summary: list[LocomoSummaryRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary:
        data = row.model_dump()
        data["j_percent"] = row.j_percent
        writer.writerow({k: "" if data[k] is None else data[k] for k in COLUMNS})
    return buf.getvalue()


def write_summary_csv(path: Path, summary: list[LocomoSummaryRow]) -> None:
    write_text_atomic(path, to_csv(summary))


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def console_table(summary: list[LocomoSummaryRow]) -> Table:
    table = Table(title="LoCoMo (J = LLM judge, mem0's protocol; headline = categories 1-4)")
    for name in ["method", "category", "n", "J %", "95% CI", "F1 %", "BLEU-1 %", "recall %", "in tok", "p50 ms"]:
        table.add_column(name, justify="left" if name in {"method", "category"} else "right")
    for r in summary:
        ci = f"{r.ci95_low_percent:.0f}-{r.ci95_high_percent:.0f}" if r.ci95_low_percent is not None else "-"
        table.add_row(
            r.method,
            r.category,
            str(r.questions),
            _fmt(r.j_percent),
            ci,
            _fmt(r.f1_percent),
            _fmt(r.bleu1_percent),
            _fmt(r.evidence_recall_percent),
            _fmt(r.avg_input_tokens, ".0f"),
            _fmt(r.p50_ms, ".0f"),
        )
    judges = sorted({r.judge for r in summary if r.judge})
    table.caption = (
        f"judge: {', '.join(judges) if judges else 'none (no answers judged)'}; "
        "recall = evidence turns that reached the prompt; adversarial (category 5) is not in the headline"
    )
    return table


def anchors_table(anchors: tuple[Anchor, ...] | None = None) -> Table:
    table = Table(title="Published LoCoMo figures (each with its own answer model, prompt and judge)")
    for name in ["system", "metric", "score", "answer model", "tokens/q", "source"]:
        table.add_column(name, justify="right" if name in {"score", "tokens/q"} else "left")
    for a in anchors if anchors is not None else load_anchors():
        table.add_row(
            a.system, a.metric_label, f"{a.score:.1f}", a.model_label, _fmt(a.tokens_per_query, ".0f"), a.source
        )
    return table


def print_tables(summary: list[LocomoSummaryRow], console: Console | None = None) -> None:
    console = console or Console()
    console.print(console_table(summary))
    console.print(anchors_table())
