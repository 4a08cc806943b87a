"""Pre-mixed shards are streamed: the array reader, and a generated multi-case shard loaded and run with
bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.loaders import iter_streamed, load_data
from mark_eval.convomem.mixing import MixConfig, build_cases, select_questions
from mark_eval.convomem.results import ResultsFile
from mark_eval.convomem.runner import RunOptions, run_benchmark
from mark_eval.convomem.stream import iter_json_array, starts_with_array
from memory_store.errors import InvalidInput

TRICKY = 'a "quoted" ], {braces}, back\\slash, é ✓ 𝄞 and a\nnewline'


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
def test_reader_gives_every_element_whatever_the_chunk(tmp_path: Path, chunk: int) -> None:
    values = [{"text": TRICKY * (i % 5), "n": [i, 2.5, None, True, -1e-3], "k": i} for i in range(40)]
    values += [12345678, "plain", [], {}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(values, indent=1, ensure_ascii=False), encoding="utf-8")
    got = list(iter_json_array(path, chunk_chars=chunk))
    assert [i for i, _ in got] == list(range(len(values)))
    assert [v for _, v in got] == values
    assert starts_with_array(path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('[{"a": 1}, {"a": 2}', "the file ends after element 1"),
        ('[{"a": 1}, {"a" 2}]', "element 1: Expecting ':' delimiter at line 1 column 17"),
        ('[{"a": 1},\n {"a": 2},]', "trailing comma at line 2 column 10"),
        ('[{"a": 1}] [', "extra data after the array"),
        ('[{"a": 1} {"a": 2}]', "after element 0: expected ',' or ']'"),
        ('[{"a": "unterminated', "element 0: Unterminated string"),
        ('{"a": 1}', "expected an array"),
    ],
)
def test_reader_reports_malformed_files_with_the_position(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidInput) as info:
        list(iter_json_array(path, chunk_chars=3))
    assert str(path) in str(info.value) and needle in str(info.value)
    assert "malformed JSON" in str(info.value)


def _shard(root: Path, n_cases: int, n_convs: int) -> Path:
    """A released-layout shard: ``n_cases`` test cases of ``n_convs`` conversations, one question each."""
    folder = root / "core_benchmark" / "pre_mixed_testcases" / "user_evidence" / "1_evidence"
    folder.mkdir(parents=True)
    path = folder / "batched_000.json"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[\n")
        for c in range(n_cases):
            convs = [
                {
                    "id": f"c{c}-{k}",
                    "messages": [
                        {"speaker": "user" if m % 2 == 0 else "assistant", "text": f"case {c} conv {k} msg {m} " * 8}
                        for m in range(6)
                    ],
                }
                for k in range(n_convs)
            ]
            fact = f"My locker number in case {c} is {1000 + c}."
            convs[n_convs // 2]["messages"][2]["text"] = fact
            item = {
                "question": f"What is my locker number ({c})?",
                "answer": str(1000 + c),
                "message_evidences": [{"speaker": "user", "text": fact}],
                "conversations": [convs[n_convs // 2]],
                "personId": "p1",
            }
            case = {"evidenceItems": [item], "conversations": convs, "contextSize": n_convs}
            fh.write(("," if c else "") + json.dumps(case) + "\n")
        fh.write("]\n")
    return path


def test_a_multi_case_shard_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    shard = _shard(tmp_path / "convomem", n_cases=120, n_convs=100)
    size = shard.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        data = load_data(tmp_path / "convomem")
        _, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seen = 0
        for case in iter_streamed(data.streamed):
            assert len(case.haystack) == 100 and case.evidence_mids[case.questions[0].qid]
            seen += 1
        _, run_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data.streamed) == seen == 120 and not data.premixed
    # json.load of the whole file peaks at about 3.5 times its size; streaming holds one test case and a chunk
    assert load_peak < size / 3 and run_peak < size / 3, (load_peak, run_peak, size)


async def test_a_streamed_shard_runs_one_case_at_a_time(tmp_path: Path) -> None:
    _shard(tmp_path / "convomem", n_cases=12, n_convs=20)
    data = select_questions(load_data(tmp_path / "convomem"), None, None, limit=5)
    mixed = build_cases(data, MixConfig(sizes=(20,)))
    assert not mixed.cases and mixed.count() == 5
    out = tmp_path / "out"
    options = RunOptions(methods=["rag_keyword"], out_dir=out, retrieval_only=True, progress=False)
    report = await run_benchmark(mixed, options, AnswererContext(retrieval="keyword", budget_tokens=600), None)
    rows = ResultsFile(out / "results.jsonl").load()
    assert report.asked == len(rows) == 5
    assert all(r.evidence_recall == 1.0 for r in rows.values())
