"""``mark bench convomem``: what each method would send to the model, without calling it.

On a generated ConvoMem-shaped corpus, for each haystack size: input tokens per question (mean and max),
retrieval time per question, index build time per haystack, harness overhead (mixing + prompt building
outside retrieval), and evidence recall at the token budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from mark_agents.llm import estimate_tokens
from mark_eval.convomem.answerers import AnswererContext, create, needs_llm_to_select
from mark_eval.convomem.mixing import MixConfig, build_cases
from mark_eval.convomem.recall import evidence_recall
from mark_eval.convomem.render import render_conversation
from mark_eval.convomem.synthetic import synthetic_data


class BenchConfig(BaseModel):
    conversations: int = 300
    sizes: tuple[int, ...] = (10, 50, 150, 300)
    questions: int = 12
    methods: list[str]
    budget_tokens: int = 4000
    seed: int = 0


class BenchRow(BaseModel):
    method: str
    context_size: int
    questions: int
    avg_input_tokens: float
    max_input_tokens: int
    avg_retrieval_ms: float
    p90_retrieval_ms: float
    avg_index_ms: float
    avg_overhead_ms: float
    evidence_recall_percent: float | None


class BenchResult(BaseModel):
    config: BenchConfig
    tokens_per_conversation: float
    mixing_ms_per_case: dict[int, float]
    corpus_ms: float
    rows: list[BenchRow]


def run_bench(config: BenchConfig, embedder_factory: Callable[[], Any]) -> BenchResult:
    return asyncio.run(_run(config, embedder_factory))


async def _run(config: BenchConfig, embedder_factory: Callable[[], Any]) -> BenchResult:
    started = time.perf_counter()
    data = synthetic_data(n_filler=config.conversations, n_items=config.questions, seed=config.seed)
    corpus_ms = (time.perf_counter() - started) * 1000.0
    sample = data.filler[next(iter(data.filler))][:20]
    from mark_eval.convomem.schema import Haystack

    per_conv = sum(estimate_tokens(render_conversation(c)) for c in Haystack.build(sample).conversations)
    ctx = AnswererContext(llm=None, budget_tokens=config.budget_tokens, embedder_factory=embedder_factory)
    methods = [m for m in config.methods if not needs_llm_to_select(m)]
    answerers = {m: create(m, ctx) for m in methods}
    stats: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    mixing: dict[int, float] = {}
    for size in config.sizes:
        t0 = time.perf_counter()
        cases = build_cases(data, MixConfig(sizes=(size,), seed=config.seed, mode="standard")).cases
        mixing[size] = (time.perf_counter() - t0) * 1000.0 / max(1, len(cases))
        for case in cases:
            for method, answerer in answerers.items():
                s = stats[(method, size)]
                t0 = time.perf_counter()
                await answerer.prepare(case.haystack)
                s["index"].append((time.perf_counter() - t0) * 1000.0)
                for q in case.questions:
                    t0 = time.perf_counter()
                    sel = await answerer.select(case.haystack, q.question)
                    total_ms = (time.perf_counter() - t0) * 1000.0
                    s["tokens"].append(sel.input_tokens)
                    s["retrieval"].append(sel.retrieval_ms)
                    s["overhead"].append(max(0.0, total_ms - sel.retrieval_ms) + mixing[size] / len(case.questions))
                    r = evidence_recall(case.evidence_mids.get(q.qid, []), sel.context_mids)
                    if r is not None:
                        s["recall"].append(r)
                answerer.release(case.haystack)
    rows = []
    for (method, size), s in sorted(stats.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        retrieval = sorted(s["retrieval"])
        rows.append(
            BenchRow(
                method=method,
                context_size=size,
                questions=len(s["tokens"]),
                avg_input_tokens=round(_mean(s["tokens"]), 1),
                max_input_tokens=int(max(s["tokens"], default=0)),
                avg_retrieval_ms=round(_mean(retrieval), 2),
                p90_retrieval_ms=round(retrieval[int(0.9 * (len(retrieval) - 1))], 2) if retrieval else 0.0,
                avg_index_ms=round(_mean(s["index"]), 1),
                avg_overhead_ms=round(_mean(s["overhead"]), 2),
                evidence_recall_percent=round(100 * _mean(s["recall"]), 1) if s["recall"] else None,
            )
        )
    return BenchResult(
        config=config,
        tokens_per_conversation=round(per_conv / max(1, len(sample)), 1),
        mixing_ms_per_case={k: round(v, 2) for k, v in mixing.items()},
        corpus_ms=round(corpus_ms, 1),
        rows=rows,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def print_bench(result: BenchResult, console: Console) -> None:
    table = Table(title=f"ConvoMem retrieval bench (budget {result.config.budget_tokens} tokens, no LLM calls)")
    for name in [
        "method",
        "convs",
        "questions",
        "avg in tok",
        "max in tok",
        "retrieval ms",
        "p90 ms",
        "index ms/haystack",
        "overhead ms",
        "evidence recall %",
    ]:
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in result.rows:
        table.add_row(
            r.method,
            str(r.context_size),
            str(r.questions),
            f"{r.avg_input_tokens:,.0f}",
            f"{r.max_input_tokens:,}",
            f"{r.avg_retrieval_ms:.1f}",
            f"{r.p90_retrieval_ms:.1f}",
            f"{r.avg_index_ms:,.0f}",
            f"{r.avg_overhead_ms:.1f}",
            "-" if r.evidence_recall_percent is None else f"{r.evidence_recall_percent:.1f}",
        )
    table.caption = (
        f"~{result.tokens_per_conversation:,.0f} tokens per generated conversation; index = embedding + BM25 "
        "build per haystack (cached embeddings after the first); overhead = mixing + prompt building"
    )
    console.print(table)
