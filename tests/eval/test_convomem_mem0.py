"""The ``mem0`` method: the mem0ai library with the run's embedding model, in memory. Mem0's extraction LLM is a
scripted fake here (one memory per user message); the real-endpoint run is ``test_convomem_llm``'s business."""

from __future__ import annotations

import builtins
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from mark_eval.convomem.answerers import AnswererContext, create
from mark_eval.convomem.answerers.mem0_memory import MEM0_MISSING, Mem0Memory, require_mem0
from mark_eval.convomem.loaders import load_sample
from mark_eval.convomem.mixing import MixConfig, build_cases
from memory_store.errors import MarkError
from tests.eval.fakes import answering, prompt_text, sent


class ScriptedMem0LLM:
    """Mem0's own LLM interface (not mark's client, which the answer call goes through): every user line of the new
    messages becomes a memory."""

    def __init__(self) -> None:
        self.calls = 0

    def generate_response(self, messages: list[dict[str, str]], response_format: Any = None, **kwargs: Any) -> str:
        self.calls += 1
        prompt = messages[-1]["content"]
        new = prompt.split("## New Messages", 1)[1].split("## Observation Date", 1)[0]
        said = re.findall(r"^user: (.+)$", new, re.MULTILINE)
        return json.dumps({"memory": [{"id": str(i), "text": f"The user said: {t}"} for i, t in enumerate(said)]})


async def test_mem0_adds_searches_and_answers_with_a_scripted_llm(tmp_path: Path, shared_embedder: Any) -> None:
    pytest.importorskip("mem0", reason="the mem0 extra (mem0ai) is not installed")
    case = build_cases(load_sample(), MixConfig(sizes=(6,), mode="standard", seed=3)).cases[0]
    question = case.questions[0]
    mem0_llm = ScriptedMem0LLM()
    answer, answer_llm = answering(lambda m: "Biscuit")
    ctx = AnswererContext(llm=answer_llm, work_dir=tmp_path, embedder_factory=lambda: shared_embedder)
    answerer = Mem0Memory(ctx, mem0_llm=mem0_llm)
    answerer.name = "mem0"
    await answerer.prepare(case.haystack)
    assert mem0_llm.calls == len(case.haystack), "one extraction per conversation, as the reference adds them"
    ans = await answerer.answer(case.haystack, question.question)
    assert ans.error is None and ans.text == "Biscuit"
    prompt = prompt_text(sent(answer)[-1])
    assert "MEMORIES" in prompt and "The user said:" in prompt
    evidence = case.evidence_mids[question.qid]
    assert evidence and set(evidence) <= set(ans.context_mids), "the evidence conversation's memory was found"
    assert ans.route.startswith("mem0:") and "failed" not in ans.route
    assert (tmp_path / "mem0-home" / "history.db").exists()
    assert sys.modules["mem0.memory.telemetry"].MEM0_TELEMETRY is False
    await answerer.aclose()


def test_mem0_is_registered_and_needs_an_llm_to_select() -> None:
    from mark_eval.convomem.answerers import needs_llm_to_select

    assert isinstance(create("mem0", AnswererContext()), Mem0Memory)
    assert needs_llm_to_select("mem0")


def test_a_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from mark_eval.convomem.answerers.mem0_memory import import_mem0

    real_find, real_import = importlib.util.find_spec, builtins.__import__
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mem0" else real_find(name, *a))

    def no_mem0(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "mem0" or name.startswith("mem0."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mem0)
    for call in (require_mem0, lambda: import_mem0(None)):
        with pytest.raises(MarkError) as info:
            call()
        assert str(info.value) == MEM0_MISSING and "\n" not in MEM0_MISSING
        assert "pip install 'mark-memory[mem0]'" in MEM0_MISSING
