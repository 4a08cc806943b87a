"""A benchmark run with a slow scripted fake LLM, for the resume-after-kill test (run as a subprocess)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.judge import ExactJudge
from mark_eval.convomem.loaders import load_sample
from mark_eval.convomem.mixing import MixConfig, build_cases
from mark_eval.convomem.runner import RunOptions, run_benchmark
from tests.eval.fakes import ScriptedFakeLLM

METHODS = ["full_context", "rag_keyword", "hybrid"]
SIZES = (1, 2, 4)


def expected_rows() -> int:
    cases = build_cases(load_sample(), MixConfig(sizes=SIZES, mode="standard")).cases
    return sum(len(c.questions) for c in cases) * len(METHODS)


class SlowFake(ScriptedFakeLLM):
    async def chat(self, messages, **kwargs):  # type: ignore[no-untyped-def, override]
        await asyncio.sleep(float(sys.argv[2]))
        return await super().chat(messages, **kwargs)


def main() -> None:
    out = Path(sys.argv[1])
    cases = build_cases(load_sample(), MixConfig(sizes=SIZES, mode="standard")).cases
    fake = SlowFake(lambda m, label: "I don't have any information about that.")
    ctx = AnswererContext(llm=fake, budget_tokens=800, retrieval="keyword")
    options = RunOptions(methods=METHODS, out_dir=out, concurrency=2, progress=False, fingerprint={"seed": 0})
    report = asyncio.run(run_benchmark(cases, options, ctx, ExactJudge()))
    print(f"asked={report.asked} done_before={report.skipped_done}")


if __name__ == "__main__":
    main()
