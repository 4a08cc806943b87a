"""Crash safety (kill -9 mid-batch) and concurrency (threads, two processes as two app servers) on real SQLite +
chroma and on a real Postgres."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memory_store import MemoryStore, NewMemory, StoreSettings

WORKER = [sys.executable, "-m", "tests.memory_store.worker"]
ROOT = Path(__file__).resolve().parents[2]


def spawn(home: Path, user: str, batches: int, size: int, mode: str = "add", url: str = "") -> subprocess.Popen:
    """A worker process on the same store: the same home (SQLite), or the same database (``url``, Postgres)."""
    env = {k: v for k, v in os.environ.items() if k != "MARK_STORE_URL"} | ({"MARK_STORE_URL": url} if url else {})
    return subprocess.Popen(
        [*WORKER, str(home), user, str(batches), str(size), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def url_of(store: MemoryStore) -> str:
    return store.settings.store_url or ""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.15, 0.45, 0.8])
def test_kill_9_mid_batch_leaves_no_partial_record(make_store, delay):
    first = make_store("home")  # creates the schema; the worker writes the same store
    home, url = first.home, url_of(first)
    first.close()
    proc = spawn(home, "crash-user", batches=40, size=200, url=url)
    # Wait until one batch is committed, then kill at some point inside a later one (embedding, the SQLite
    # transaction or the vector write, depending on the delay).
    line = proc.stdout.readline()
    assert "batch 0 done" in line, proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = make_store("home")  # reopen: applies pending vector ops (SQLite)
    report = store.check()
    assert report.ok, report
    per_batch = collections.Counter(m.metadata["batch"] for m in store.list("crash-user", limit=10_000).items)
    assert per_batch and all(n == 200 for n in per_batch.values()), per_batch  # whole batches only
    added = {e.memory_id for e in store.history("crash-user") if e.event == "add"}
    assert len(added) == sum(per_batch.values())
    assert store.search("meeting moved to room 7", "crash-user")


def test_threads_adding_and_searching_lose_nothing(make_store):
    store = make_store("home")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for b in range(5):
                store.add_many(
                    [NewMemory(text=f"thread {n} note {b}-{i} about gardening", user_id=f"t{n}") for i in range(4)]
                )
                hits = store.search("gardening note", f"t{n}")
                assert all(h.memory.user_id == f"t{n}" for h in hits)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [store.count(f"t{n}") for n in range(4)] == [20, 20, 20, 20]
    assert store.check().ok


@pytest.mark.slow
def test_two_processes_on_one_home(make_store):
    """Two processes (two app servers) and this one's threads write the same store: nothing lost, no lock error."""
    store = make_store("home")  # creates the schema first
    procs = [spawn(store.home, f"proc{n}", batches=6, size=25, mode="search", url=url_of(store)) for n in range(2)]
    errors: list[BaseException] = []
    written = [0, 0]

    def work(n: int) -> None:  # writes while the other processes do, until they are done
        try:
            while any(p.poll() is None for p in procs) and written[n] < 300:
                b = written[n]
                store.add_many([NewMemory(text=f"thread {n} note {b}-{i}", user_id=f"local{n}") for i in range(5)])
                written[n] += 5
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "locked" not in err and "deadlock" not in err
    assert not errors, errors
    assert store.count("proc0") == 150 and store.count("proc1") == 150
    assert [store.count("local0"), store.count("local1")] == written and all(written)
    assert store.check().ok
    # This process sees both writers' vectors.
    assert store.search("proc1 batch 5 fact 3", "proc1", mode="dense")[0].memory.user_id == "proc1"


def test_reader_process_sees_writes_made_after_it_opened(tmp_path, embedder):
    home = tmp_path / "home"
    reader = MemoryStore(StoreSettings(home=home), embedder=embedder)
    reader.add("Reader's own first memory about tennis.", "shared-user")
    reader.search("tennis", "shared-user")  # load the vector graph into this process
    proc = spawn(home, "shared-user", batches=1, size=10)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    hits = reader.search("the meeting moved to room 3", "shared-user", mode="dense", limit=20)
    assert sum("meeting moved" in h.memory.text for h in hits) == 10
    reader.close()


def test_open_after_an_unclean_shutdown_reconciles_every_id(tmp_path, embedder):
    from memory_store.validation import user_key
    from memory_store.vectors import ChromaIndex

    home = tmp_path / "home"
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    kept = store.add("I collect vintage maps.", "alice")
    gone = store.add("I play the cello.", "alice")
    store.close()
    # The index diverges behind the store's back (a crash inside chroma's write, a restored backup) ...
    index = ChromaIndex(home / "vectors")
    index.delete(user_key("alice"), [gone.id])
    index.upsert(user_key("alice"), ["stray-id"], store.embed(["stray"]))
    index.close()
    # ... and a process using this home died without closing (its marker is left behind).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (home / "open" / f"{dead.stdout.strip()}.pid").touch()
    store = MemoryStore(StoreSettings(home=home), embedder=embedder)
    report = store.check()
    assert report.ok, report
    assert {h.memory.id for h in store.search("music instrument hobby", "alice", mode="dense")} == {kept.id, gone.id}
    assert not list((home / "open").glob(f"{dead.stdout.strip()}.pid"))
    store.close()
