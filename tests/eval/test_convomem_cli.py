"""The real CLI in a subprocess: bad input exits 2 with one line and no traceback or output; a
retrieval-only run on the sample needs no LLM and writes every output."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eval.cli_runs import ROOT, mark
from tests.eval.conftest import write_released_layout


def _bad_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / "data" / "user_evidence" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


GOOD_ITEM = (
    '{"question": "q?", "answer": "a", "message_evidences": [{"speaker": "User", "text": "hi"}], '
    '"conversations": [{"messages": [{"speaker": "User", "text": "hi"}]}]}'
)


@pytest.mark.parametrize(
    ("case", "content", "extra", "needle"),
    [
        ("malformed", '{"evidence_items": [', (), "malformed JSON"),
        ("truncated", '{"evidence_items": [' + GOOD_ITEM[:60], (), "malformed JSON"),
        ("missing_field", '{"evidence_items": [{"answer": "a", "conversations": []}]}', (), "Field required"),
        (
            "empty_haystack",
            '{"evidenceItems": [{"question": "q", "answer": "a"}], "conversations": [], "contextSize": 3}',
            (),
            "empty haystack",
        ),
        ("unknown_category", '{"evidence_items": [' + GOOD_ITEM + "]}", ("--category", "gossip"), "unknown category"),
        (
            "unknown_method",
            '{"evidence_items": [' + GOOD_ITEM + "]}",
            ("--methods", "full_context,magic"),
            "unknown method",
        ),
        ("bad_sizes", '{"evidence_items": [' + GOOD_ITEM + "]}", ("--sizes", "1,two"), "--sizes"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(
    tmp_path: Path, case: str, content: str, extra: tuple[str, ...], needle: str
) -> None:
    bad = _bad_file(tmp_path, f"{case}.json", content)
    out = tmp_path / "out"
    proc = mark("eval", "convomem", "--data", str(tmp_path / "data"), "--out", str(out), *extra, home=tmp_path / "h")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert needle in lines[0]
    if case in {"malformed", "truncated", "missing_field", "empty_haystack"}:
        assert str(bad) in lines[0]
    assert not out.exists()


def test_data_or_sample_is_required(tmp_path: Path) -> None:
    proc = mark("eval", "convomem", "--out", str(tmp_path / "o"), home=tmp_path / "h")
    assert proc.returncode == 2 and "--sample" in proc.stderr and "Traceback" not in proc.stderr


def test_retrieval_only_sample_run_writes_everything_without_an_llm(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = mark(
        "eval",
        "convomem",
        "--sample",
        "--retrieval-only",
        "--methods",
        "full_context,rag_keyword,hybrid,mark",
        "--sizes",
        "1,2,4",
        "--out",
        str(out),
        "--no-progress",
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped with --retrieval-only" in proc.stdout and "mark" in proc.stdout
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    methods = {r["method"] for r in rows}
    assert methods == {"full_context", "rag_keyword", "hybrid"}
    full = [r for r in rows if r["method"] == "full_context"]
    assert all(r["evidence_recall_percent"] == "100.0" for r in full)
    assert all(r["success_rate_percent"] == "" and r["total_processed"] == "0" for r in rows)
    assert (out / "input_tokens.png").exists() and (out / "results.jsonl").exists()
    # the same command again: nothing new to ask (resume point), outputs rewritten
    again = mark(
        "eval",
        "convomem",
        "--sample",
        "--retrieval-only",
        "--methods",
        "full_context,rag_keyword,hybrid",
        "--sizes",
        "1,2,4",
        "--out",
        str(out),
        "--no-progress",
        home=tmp_path / "h",
    )
    assert again.returncode == 0 and "0 asked now" in again.stdout
    # other settings into the same directory are refused
    other = mark(
        "eval", "convomem", "--sample", "--retrieval-only", "--seed", "7", "--out", str(out), home=tmp_path / "h"
    )
    assert other.returncode == 2 and "seed" in other.stderr


def test_released_layout_retrieval_only(tmp_path: Path) -> None:
    data = write_released_layout(tmp_path / "convomem")
    out = tmp_path / "out"
    proc = mark(
        "eval",
        "convomem",
        "--data",
        str(data),
        "--retrieval-only",
        "--methods",
        "rag_keyword",
        "--sizes",
        "1,2,4,6",
        "--out",
        str(out),
        "--no-progress",
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["category"], r["context_size"]) for r in rows} >= {("user_facts", "2"), ("changing", "4")}


def test_bench_convomem_small(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = mark(
        "bench",
        "convomem",
        "--conversations",
        "12",
        "--sizes",
        "4,12",
        "--questions",
        "3",
        "--methods",
        "full_context,rag_keyword,hybrid",
        "--budget-tokens",
        "3000",
        "--json",
        str(out),
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads(out.read_text())
    rows = {(r["method"], r["context_size"]): r for r in result["rows"]}
    assert rows[("full_context", 12)]["avg_input_tokens"] > 12 * 1000
    assert rows[("rag_keyword", 12)]["max_input_tokens"] <= 3000
    assert rows[("hybrid", 12)]["max_input_tokens"] <= 3000


def test_mark_without_extraction_in_retrieval_only_makes_no_request_to_any_model(tmp_path):
    """`--methods mark --mark-extraction off --retrieval-only`: episodes only, not one HTTP request to a model
    (the endpoint is a local server that counts what it receives), and evidence recall is reported."""
    import http.server
    import os
    import threading

    requests: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(self.path)
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "MARK_LLM_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1", "MARK_LLM_MAX_RETRIES": "0"}
    out = tmp_path / "run"
    try:
        args = ["eval", "convomem", "--sample", "--methods", "mark,rag", "--mark-extraction", "off"]
        args += ["--retrieval-only", "--out", str(out), "--no-progress"]
        done = subprocess.run(
            [sys.executable, "-m", "mark_cli.main", "--home", str(tmp_path / "home"), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert requests == []
    rows = list(csv.DictReader((out / "summary.csv").open()))
    mark_rows = [r for r in rows if r["method"] == "mark"]
    assert mark_rows and all(r["evidence_recall_percent"] not in ("", None) for r in mark_rows)


def test_a_bad_judge_variable_is_one_line_naming_it(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MARK_JUDGE_TEMPERATURE": "hot"}
    r = mark("eval", "convomem", "--sample", "--out", str(tmp_path / "out"), home=tmp_path / "home", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "MARK_JUDGE_TEMPERATURE='hot' is not valid" in r.stderr
    assert not (tmp_path / "out").exists()
