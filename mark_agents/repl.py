"""`mark chat`: talk to a MemoryAgent in the terminal, or script it through a pipe.

    mark chat --user alice
    printf 'My dog is called Biscuit.\\n/memories\\n/exit\\n' | mark chat --user alice

On a terminal it shows a prompt, a spinner until the first token and rich tables; with piped stdin it prints
replies and command output plainly on stdout (errors and status on stderr), so it can be scripted and tested.
Memory extraction runs in the background while the user types; commands that show memories wait for it first,
and so does exit (pending exchanges are retried at the next start if the REPL is killed).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import sys
import threading
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mark_agents.agent import DEFAULT_SESSION, ChatReply, MemoryAgent
from mark_agents.config import Settings
from memory_store import InvalidInput, MarkError
from memory_store.files import private_output
from memory_store.ids import short_id
from memory_store.validation import check_optional_id, check_scope_id

log = logging.getLogger(__name__)

COMMANDS: list[tuple[str, str]] = [
    ("/memories", "what I remember about you"),
    ("/search QUERY", "search your memories, with scores"),
    ("/why", "the memories behind my last reply, with their score components"),
    ("/forget ID", "forget one memory everywhere (the short id from /memories is enough)"),
    ("/forget about TOPIC", "show every memory and message about a topic, then forget them all"),
    ("/good, /bad", "rate my last reply: the memories it used gain or lose trust"),
    ("/export [FILE]", "write your memories, history and turns as JSON lines"),
    ("/help", "this list"),
    ("/exit", "leave (Ctrl-D works too); memories still being extracted are saved first"),
]
#: Below this, waiting for background work is not worth a status line.
QUIET_WAIT_S = 0.3


class _LineReader:
    """Reads input in a daemon thread, so background extraction runs while the user types and a blocked read
    never holds up exit or Ctrl-C. A line is read only when asked for (the prompt follows the reply)."""

    def __init__(self, stdin: TextIO, console: Console, interactive: bool) -> None:
        self.stdin = stdin
        self.console = console
        self.interactive = interactive
        self._requests: queue.Queue[tuple[str, asyncio.Future[str | None], asyncio.AbstractEventLoop]] = queue.Queue()
        self._thread: threading.Thread | None = None

    async def readline(self, prompt: str) -> str | None:
        """The next line without its newline, or None at end of input."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mark-chat-input", daemon=True)
            self._thread.start()
        self._requests.put((prompt, future, loop))
        return await future

    def _work(self) -> None:
        while True:
            prompt, future, loop = self._requests.get()
            try:
                if self.interactive:
                    line: str | None = self.console.input(prompt)
                else:
                    raw = self.stdin.readline()
                    line = raw.rstrip("\r\n") if raw else None
            except EOFError:
                line = None
            except Exception as exc:
                loop.call_soon_threadsafe(_settle, future, None, exc)
                continue
            loop.call_soon_threadsafe(_settle, future, line, None)


def _settle(future: asyncio.Future[str | None], value: str | None, exc: BaseException | None) -> None:
    if future.done():  # cancelled by Ctrl-C meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


class ChatREPL:
    """One user's chat session over a MemoryAgent; `run()` returns the exit code."""

    def __init__(
        self,
        agent: MemoryAgent,
        user_id: str,
        session_id: str | None = None,
        *,
        stdin: TextIO | None = None,
        out: Console | None = None,
        err: Console | None = None,
        stream: bool = True,
        interactive: bool | None = None,
    ) -> None:
        self.agent = agent
        self.store = agent.astore
        self.user_id = check_scope_id(user_id)
        self.session_id = check_optional_id(session_id, "session id") or DEFAULT_SESSION
        self.stdin = stdin if stdin is not None else sys.stdin
        self.interactive = _isatty(self.stdin) if interactive is None else interactive
        self.out = out or Console(highlight=False, emoji=False)
        self.err = err or Console(stderr=True, highlight=False, emoji=False)
        self.stream = stream
        self.last: ChatReply | None = None
        self._reader = _LineReader(self.stdin, self.out, self.interactive)
        self._warm: asyncio.Task[object] | None = None
        self._startup: asyncio.Task[None] | None = None

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Read and answer lines until /exit or end of input, then save pending memories and close the agent."""
        code = 0
        try:
            self._start_background()
            self._banner()
            while True:
                line = await self._reader.readline(self._prompt())
                if line is None:
                    if self.interactive:
                        self.out.print()
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    if not await self._command(line):
                        break
                else:
                    await self._turn(line)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._status_line("interrupted")
            code = 130
        await self._shutdown(interrupted=code != 0)
        return code

    def _start_background(self) -> None:
        """Load the embedding model, then retry this user's unfinished extractions, while the user types."""
        # A search loads the embedding model and the user's vector collection before the first message needs them.
        self._warm = asyncio.create_task(self.store.search("warm up", self.user_id, limit=1))
        self._startup = asyncio.create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        try:
            await self._warm
            await self.agent.aprocess_pending(self.user_id)  # connects the memory model only if a turn waits
        except Exception as exc:  # never let a background task end the REPL
            log.debug("retrying pending extractions failed", exc_info=True)
            self._error(f"could not retry earlier memory extractions: {_one_line(exc)}")

    async def _shutdown(self, *, interrupted: bool) -> None:
        if not interrupted:
            try:
                await self._wait_background("saving memories from this conversation…")
            except (asyncio.CancelledError, KeyboardInterrupt):
                interrupted = True
        if interrupted:
            # Raw turns are stored already: unfinished extractions are retried at the next start.
            self._status_line("unsaved memories will be extracted at the next `mark chat` (or `mark memory rederive`)")
            await _cancel_other_tasks()
        try:
            await self.agent.aclose()  # closes what the agent owns (run_chat's agent owns its store)
        except Exception as exc:
            self._error(f"closing: {_one_line(exc)}")

    async def _wait_background(self, message: str) -> None:
        """Wait for background extraction, with a status line only if it takes a noticeable time."""
        waits: list[Awaitable[object]] = [self.agent.aflush()]
        if self._startup is not None:
            waits.append(self._startup)
        await self._wait_for(asyncio.gather(*waits, return_exceptions=True), message)

    async def _wait_for(self, work: Awaitable[object], message: str) -> None:
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=QUIET_WAIT_S)
        if done:
            return
        if self.interactive:
            with self.err.status(message):
                await task
        else:
            self._status_line(message)
            await task

    # -- chat turns -------------------------------------------------------------------------------------

    async def _turn(self, message: str) -> None:
        if self._warm is not None and not self._warm.done():  # load the embedding model once, not twice
            await self._wait_for(asyncio.gather(self._warm, return_exceptions=True), "loading the embedding model…")
        if self._startup is not None and not self._startup.done():
            # The retry of earlier extractions must not pick up this new message before its reply exists (the
            # exchange would be split). A script gets the deterministic order; a person is not kept waiting for
            # memory: a second is enough for the retry to have chosen its turns.
            if self.interactive:
                await asyncio.wait({self._startup}, timeout=1.0)
            else:
                await self._wait_for(self._startup, "catching up on memories from earlier messages…")
        printer = _ReplyPrinter(self.out, self.interactive)
        try:
            if self.stream:
                reply = await self.agent.achat(self.user_id, message, self.session_id, on_token=printer.token)
            else:
                reply = await self.agent.achat(self.user_id, message, self.session_id)
                printer.token(reply.reply)
        except MarkError as exc:
            printer.abort()
            self._error(_one_line(exc))
            return
        except Exception as exc:
            printer.abort()
            log.debug("chat turn failed", exc_info=True)
            self._error(f"unexpected {type(exc).__name__}: {_one_line(exc)}")
            return
        printer.finish(reply.reply)
        self.last = reply

    # -- slash commands -----------------------------------------------------------------------------------

    async def _command(self, line: str) -> bool:
        """Run one slash command; False means leave."""
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("exit", "quit", "q"):
            return False
        handlers = {
            "help": self._help,
            "memories": self._memories,
            "search": self._search,
            "why": self._why,
            "forget": self._forget,
            "good": self._good,
            "bad": self._bad,
            "export": self._export,
        }
        handler = handlers.get(name)
        if handler is None:
            self._error(f"unknown command /{name} (try /help)")
            return True
        try:
            await handler(arg)
        except MarkError as exc:
            self._error(_one_line(exc))
        except OSError as exc:
            self._error(_one_line(exc))
        except Exception as exc:
            log.debug("command /%s failed", name, exc_info=True)
            self._error(f"unexpected {type(exc).__name__}: {_one_line(exc)}")
        return True

    async def _help(self, arg: str) -> None:
        self._table("commands", ["command", "what it does"], [list(c) for c in COMMANDS])
        self._info("anything else is a message to the assistant")

    async def _memories(self, arg: str) -> None:
        await self._wait_background("finishing memory extraction…")
        page = await self.store.list(self.user_id, limit=100)
        if not page.items:
            self._info("no memories yet")
            return
        title = f"{page.total} memories" + (
            f" (newest {len(page.items)} shown)" if page.total > len(page.items) else ""
        )
        rows = [[short_id(m.id), m.kind.value, m.text + _status_suffix(m.status.value)] for m in page.items]
        self._table(title, ["id", "kind", "text"], rows)

    async def _search(self, arg: str) -> None:
        if not arg:
            raise InvalidInput("usage: /search QUERY")
        await self._wait_background("finishing memory extraction…")
        hits = await self.store.search(arg, self.user_id, limit=10, explain=True)
        if not hits:
            self._info("no matching memories")
            return
        rows = [
            [
                short_id(h.memory.id),
                f"{h.score:.3f}",
                h.memory.kind.value,
                h.memory.text + _status_suffix(h.memory.status.value),
            ]
            for h in hits
        ]
        self._table(f"{len(hits)} matches", ["id", "score", "kind", "text"], rows)

    async def _why(self, arg: str) -> None:
        if self.last is None:
            self._info("no reply yet")
            return
        if not self.last.memories and not self.last.recalled_turns:
            self._info("my last reply used no memories")
            return
        if self.last.memories:
            rows = []
            for m in self.last.memories:
                e = m.explain
                parts = [e.similarity, e.recency, e.frequency, e.trust, e.final] if e else [None] * 4 + [m.score]
                rows.append([short_id(m.id), m.kind, m.text, *(f"{p:.2f}" if p is not None else "-" for p in parts)])
            self._table(
                f"notes behind the last reply ({self.last.memory_ms:.0f} ms of memory work)",
                ["id", "kind", "text", "similarity", "recency", "frequency", "trust", "final"],
                rows,
            )
        if self.last.recalled_turns:
            # Earlier turns: "history" when the whole history fitted the budget, "episode" when found by search.
            rows = [
                [t.layer, t.session_id or "-", t.role, t.text if len(t.text) <= 90 else t.text[:89] + "…", t.why]
                for t in self.last.recalled_turns
            ]
            self._table("earlier turns behind the last reply", ["layer", "session", "role", "text", "why"], rows)

    async def _forget(self, arg: str) -> None:
        if not arg:
            raise InvalidInput("usage: /forget ID (a short id from /memories) or /forget about TOPIC")
        await self._wait_background("finishing memory extraction…")
        name, _, topic = arg.partition(" ")
        if name.lower() == "about":
            if not topic.strip():
                raise InvalidInput("usage: /forget about TOPIC")
            plan = await self.store.plan_forget(self.user_id, about=topic.strip())
            if not plan.memories and not plan.turns:
                self._info("nothing I remember matches that topic")
                return
            rows = [["memory", short_id(m.id), m.text] for m in plan.memories]
            rows += [[f"message ({t.role})", short_id(t.id), t.content[:200]] for t in plan.turns]
            self._table(
                f"{len(plan.memories)} memories and {len(plan.turns)} messages match", ["what", "id", "text"], rows
            )
            answer = await self._reader.readline("forget all of these? [y/N] ")
            if (answer or "").strip().lower() not in ("y", "yes"):
                self._info("kept")
                return
            report = await self.agent.aforget(self.user_id, plan=plan, reason="forgotten in chat", actor="chat")
            n = len(report.memories)
            self._info(f"forgot {n} memor{'y' if n == 1 else 'ies'}: {', '.join(short_id(m) for m in report.memories)}")
        else:
            mid = await self.store.resolve_id(arg, self.user_id)
            text = (await self.store.get(mid, self.user_id)).text
            report = await self.agent.aforget(self.user_id, mid, reason="forgotten in chat", actor="chat")
            self._info(f"forgot {short_id(mid)}: {text}")
        self.last = None  # its recalled notes and turns may hold what was just forgotten
        self._info(f"removed from {len(report.turns)} messages and {report.chat_threads} conversations too")

    async def _good(self, arg: str) -> None:
        await self._feedback(True, arg)

    async def _bad(self, arg: str) -> None:
        await self._feedback(False, arg)

    async def _feedback(self, good: bool, comment: str) -> None:
        if self.last is None:
            self._info("no reply to rate yet")
            return
        ids = await self.agent.afeedback(self.user_id, self.last.response_id, good, comment=comment)
        verdict = "good" if good else "bad"
        if ids:
            change = "raised" if good else "lowered"
            self._info(f"noted ({verdict}): trust {change} for {len(ids)} memor{'y' if len(ids) == 1 else 'ies'}")
        else:
            self._info(f"noted ({verdict}); the reply used no memories")

    async def _export(self, arg: str) -> None:
        await self._wait_background("finishing memory extraction…")
        path = Path(arg).expanduser() if arg else Path(f"mark-export-{_safe_name(self.user_id)}.jsonl")
        with private_output(path) as fh:  # written whole or not at all, no temporary file left behind
            n = await self.store.export_jsonl(fh, user_id=self.user_id)
        self._info(f"exported {n} records to {path}")

    # -- output ---------------------------------------------------------------------------------------------

    def _banner(self) -> None:
        if not self.interactive:
            return
        llm = self.agent.settings.llm
        where = llm.base_url or "the local model (started on demand)"
        self.err.print(
            f"[bold]mark chat[/] · user [cyan]{escape(self.user_id)}[/] · session [cyan]{escape(self.session_id)}[/]"
            f" · {escape(where)}\n[dim]/help for commands, /exit or Ctrl-D to leave[/]"
        )

    def _prompt(self) -> str:
        return "[bold green]you[/] › " if self.interactive else ""

    def _info(self, message: str) -> None:
        if self.interactive:
            self.out.print(Text(message, style="dim"))
        else:
            _plain(self.out, message)

    def _error(self, message: str) -> None:
        if self.interactive:
            self.err.print(Text(f"error: {message}", style="red"))
        else:
            _plain(self.err, f"error: {message}")

    def _status_line(self, message: str) -> None:
        if self.interactive:
            self.err.print(Text(message, style="dim"))
        else:
            _plain(self.err, message)

    def _table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self.interactive:
            table = Table(*headers, title=title, title_justify="left")
            for row in rows:
                table.add_row(*(Text(c) for c in row))
            self.out.print(table)
            return
        _plain(self.out, title)
        for row in rows:
            _plain(self.out, "  ".join(row))


class _ReplyPrinter:
    """Prints a reply as it streams: a spinner until the first token on a terminal, plain text in a pipe."""

    def __init__(self, out: Console, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.started = False
        self._status = None
        if interactive:
            self._status = out.status("thinking…")
            self._status.start()

    def token(self, delta: str) -> None:
        if not self.started:
            self._stop_spinner()
            self.started = True
            if self.interactive:
                self.out.print("[bold cyan]mark[/] › ", end="")
            delta = delta.lstrip()
        self.out.print(delta, end="", markup=False, highlight=False, emoji=False, soft_wrap=True)

    def finish(self, reply: str) -> None:
        if not self.started:  # an empty reply
            self.token(reply or "(no answer)")
        self.out.print()
        self._stop_spinner()

    def abort(self) -> None:
        """A failed turn: end a half-printed reply so the error starts on its own line."""
        self._stop_spinner()
        if self.started:
            self.out.print()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


async def _cancel_other_tasks() -> None:
    """Stop background extraction now (Ctrl-C): the agent can then close its connections without waiting."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def _plain(console: Console, line: str) -> None:
    console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _status_suffix(status: str) -> str:
    return "" if status == "active" else f" ({status})"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:64] or "user"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def run_repl(agent: MemoryAgent, user_id: str, session_id: str | None = None, **options: object) -> int:
    """Run a chat REPL on an existing agent (tests pass one built on a scripted fake LLM)."""
    return await ChatREPL(agent, user_id, session_id, **options).run()  # type: ignore[arg-type]


def run_chat(settings: Settings, user_id: str, session_id: str | None = None, *, stream: bool = True) -> int:
    """`mark chat`: a MemoryAgent on the configured endpoint (or the embedded local model) and the REPL."""
    check_scope_id(user_id)
    check_optional_id(session_id, "session id")

    async def main() -> int:
        agent = MemoryAgent(settings)
        return await run_repl(agent, user_id, session_id, stream=stream)

    return asyncio.run(main())
