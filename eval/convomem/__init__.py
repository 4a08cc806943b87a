"""ConvoMem benchmark: full context vs RAG vs MARK memory vs hybrid, across conversation counts.

Pipeline: ``load_data`` / ``load_sample`` -> ``select_questions`` -> ``build_cases`` (seeded mixing at each
conversation count) -> ``run_benchmark`` (answerers by name from the registry, a judge, evidence recall)
-> ``results.jsonl``, ``summary.csv``, plots. ``run_bench`` measures prompt sizes and retrieval without
any LLM call. Names are loaded on first use, so ``mark --help`` does not import the whole benchmark.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # data
    "Conversation": "schema",
    "EvidenceItem": "schema",
    "EvidencePayload": "schema",
    "Haystack": "schema",
    "Message": "schema",
    "Question": "schema",
    "RawTestCase": "schema",
    "TestCase": "schema",
    "ConvoMemData": "loaders",
    "load_data": "loaders",
    "load_sample": "loaders",
    "CATEGORIES": "categories",
    "CORE_CATEGORIES": "categories",
    "resolve_category": "categories",
    # test cases
    "DEFAULT_SIZES": "mixing",
    "MixConfig": "mixing",
    "build_cases": "mixing",
    "select_questions": "mixing",
    "synthetic_data": "synthetic",
    # methods
    "Answer": "answerers",
    "Answerer": "answerers",
    "AnswererContext": "answerers",
    "Selection": "answerers",
    "create": "answerers",
    "method_names": "answerers",
    "register": "answerers",
    "resolve_methods": "answerers",
    # judging and metrics
    "ExactJudge": "judge",
    "Judge": "judge",
    "LLMJudge": "judge",
    "Verdict": "judge",
    "leniency_check": "judge",
    "parse_verdict": "judge",
    "evidence_recall": "recall",
    # running and outputs
    "RunOptions": "runner",
    "RunReport": "runner",
    "run_benchmark": "runner",
    "ResultRow": "results",
    "ResultsFile": "results",
    "SummaryRow": "summary",
    "summarise": "summary",
    "write_plots": "plots",
    "load_anchors": "anchors",
    "BenchConfig": "bench",
    "BenchResult": "bench",
    "run_bench": "bench",
}

__all__ = [
    "CATEGORIES",
    "CORE_CATEGORIES",
    "DEFAULT_SIZES",
    "Answer",
    "Answerer",
    "AnswererContext",
    "BenchConfig",
    "BenchResult",
    "Conversation",
    "ConvoMemData",
    "EvidenceItem",
    "EvidencePayload",
    "ExactJudge",
    "Haystack",
    "Judge",
    "LLMJudge",
    "Message",
    "MixConfig",
    "Question",
    "RawTestCase",
    "ResultRow",
    "ResultsFile",
    "RunOptions",
    "RunReport",
    "Selection",
    "SummaryRow",
    "TestCase",
    "Verdict",
    "build_cases",
    "create",
    "evidence_recall",
    "leniency_check",
    "load_anchors",
    "load_data",
    "load_sample",
    "method_names",
    "parse_verdict",
    "register",
    "resolve_category",
    "resolve_methods",
    "run_bench",
    "run_benchmark",
    "select_questions",
    "summarise",
    "synthetic_data",
    "write_plots",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from mark_eval.convomem.anchors import load_anchors
    from mark_eval.convomem.answerers import (
        Answer,
        Answerer,
        AnswererContext,
        Selection,
        create,
        method_names,
        register,
        resolve_methods,
    )
    from mark_eval.convomem.bench import BenchConfig, BenchResult, run_bench
    from mark_eval.convomem.categories import CATEGORIES, CORE_CATEGORIES, resolve_category
    from mark_eval.convomem.judge import ExactJudge, Judge, LLMJudge, Verdict, leniency_check, parse_verdict
    from mark_eval.convomem.loaders import ConvoMemData, load_data, load_sample
    from mark_eval.convomem.mixing import DEFAULT_SIZES, MixConfig, build_cases, select_questions
    from mark_eval.convomem.plots import write_plots
    from mark_eval.convomem.recall import evidence_recall
    from mark_eval.convomem.results import ResultRow, ResultsFile
    from mark_eval.convomem.runner import RunOptions, RunReport, run_benchmark
    from mark_eval.convomem.schema import (
        Conversation,
        EvidenceItem,
        EvidencePayload,
        Haystack,
        Message,
        Question,
        RawTestCase,
        TestCase,
    )
    from mark_eval.convomem.summary import SummaryRow, summarise
    from mark_eval.convomem.synthetic import synthetic_data
