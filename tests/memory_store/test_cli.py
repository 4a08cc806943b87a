"""`mark memory ...` through the real console script in a subprocess: JSON output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory_store.ids import short_id

ROOT = Path(__file__).resolve().parents[2]


def mark(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mark_cli.main", "--home", str(home), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=180,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


def test_add_search_list_history_forget_json(home):
    r = mark(home, "memory", "add", "My dog is called Biscuit.", "--user", "alice", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    r = mark(home, "memory", "search", "dog's name", "--user", "alice", "--json")
    hits = json.loads(r.stdout)
    assert hits[0]["memory"]["id"] == added["id"] and set(hits[0]["explain"]) >= {"similarity", "recency", "final"}
    page = json.loads(mark(home, "memory", "list", "--user", "alice", "--json").stdout)
    assert page["total"] == 1
    assert json.loads(mark(home, "memory", "list", "--user", "bob", "--json").stdout)["total"] == 0
    r = mark(home, "memory", "forget", short_id(added["id"]), "--user", "alice", "--json")
    report = json.loads(r.stdout)
    assert report["deleted"] == added["id"] and report["memories"] == [added["id"]]
    events = json.loads(mark(home, "memory", "history", "--user", "alice", "--json").stdout)
    assert [e["event"] for e in events] == ["add", "forget"]
    assert "Biscuit" not in json.dumps(events)  # history keeps that it was forgotten, not the text
    assert json.loads(mark(home, "memory", "check", "--json").stdout)["ok"] is True


def test_export_import_purge(home, tmp_path):
    mark(home, "memory", "add", "I moved to Lisbon.", "--user", "carol")
    out = tmp_path / "carol.jsonl"
    assert mark(home, "memory", "export", "--user", "carol", "-o", str(out)).returncode == 0
    other = tmp_path / "other-home"
    r = mark(other, "memory", "import", str(out), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["records"] >= 2
    r = mark(other, "memory", "purge", "--user", "carol", "--yes", "--json")
    assert json.loads(r.stdout)["memories"] == 1


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["memory", "add", "   ", "--user", "alice"], 2, "empty"),
        (["memory", "add", "text", "--user", ""], 2, "user id is empty"),
        (["memory", "search", "", "--user", "alice"], 2, "empty"),
        (["memory", "forget", "nope", "--user", "alice"], 1, "no memory"),
        (["memory", "import", "/definitely/not/here.jsonl"], 2, "no such file"),
        (["memory", "purge", "--user", "alice"], 2, "--yes"),
        (["memory", "export"], 2, "--user"),
    ],
)
def test_errors_are_one_clear_line(home, args, code, message):
    r = mark(home, *args, stdin="")
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr


def test_malformed_import_file(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"mark-memory-export","version":1}\n{"type": "memory", "id": 3\n')
    r = mark(home, "memory", "import", str(bad))
    assert r.returncode == 2 and "line 2" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.postgres
def test_pg_dev_starts_a_local_postgres_that_the_store_uses(tmp_path):
    """The README's one-liner: `export MARK_STORE_URL=$(mark memory pg-dev)`, then the store lives in Postgres."""
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="mark-pgdev-")) / "pg"  # outside pytest's root (see tests/pg_fixtures.py)
    try:
        r = mark(tmp_path, "memory", "pg-dev", "--dir", str(where))
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip()
        assert url.startswith("postgresql://") and "\n" not in url
        os.environ["MARK_STORE_URL"] = url
        try:
            assert mark(tmp_path, "memory", "add", "My dog is called Biscuit.", "--user", "alice").returncode == 0
            hits = json.loads(mark(tmp_path, "memory", "search", "dog", "--user", "alice", "--json").stdout)
            assert hits[0]["memory"]["text"] == "My dog is called Biscuit."
        finally:
            del os.environ["MARK_STORE_URL"]
        assert not list(tmp_path.glob("*/memory.db")) and not (tmp_path / "memory.db").exists()  # not SQLite
        r = mark(tmp_path, "memory", "pg-dev", "--dir", str(where), "--stop")
        assert r.returncode == 0 and "stopped" in r.stdout, r.stderr
        assert not (where / "postmaster.pid").exists()  # Postgres removes it when it has shut down
        r = mark(tmp_path, "memory", "pg-dev", "--dir", str(tmp_path / "none"), "--stop")
        assert r.returncode == 2 and "no local Postgres" in r.stderr and "Traceback" not in r.stderr
    finally:
        if (where / "postmaster.pid").exists():  # a failure above left it running
            mark(tmp_path, "memory", "pg-dev", "--dir", str(where), "--stop")
        shutil.rmtree(where.parent, ignore_errors=True)
