"""A benchmark run with a slow scripted LLM, for the resume-after-kill test (run as a subprocess)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.judge import ExactJudge
from mark_eval.convomem.loaders import load_sample
from mark_eval.convomem.mixing import MixConfig, build_cases
from mark_eval.convomem.runner import RunOptions, run_benchmark
from tests.eval.fakes import answering

METHODS = ["full_context", "rag_keyword", "hybrid"]
SIZES = (1, 2, 4)


def expected_rows() -> int:
    cases = build_cases(load_sample(), MixConfig(sizes=SIZES, mode="standard")).cases
    return sum(len(c.questions) for c in cases) * len(METHODS)


def main() -> None:
    out = Path(sys.argv[1])
    cases = build_cases(load_sample(), MixConfig(sizes=SIZES, mode="standard")).cases
    _, llm = answering(lambda m: "I don't have any information about that.", delay_s=float(sys.argv[2]))
    ctx = AnswererContext(llm=llm, budget_tokens=800, retrieval="keyword")
    options = RunOptions(methods=METHODS, out_dir=out, concurrency=2, progress=False, fingerprint={"seed": 0})
    report = asyncio.run(run_benchmark(cases, options, ctx, ExactJudge()))
    print(f"asked={report.asked} done_before={report.skipped_done}")


if __name__ == "__main__":
    main()
