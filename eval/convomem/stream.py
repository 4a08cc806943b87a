"""Reading a JSON array one element at a time, so a large file never sits in memory whole.

The released pre-mixed shards (``pre_mixed_testcases/.../batched_*.json``) are arrays of test cases, up to
850 MB in all; a test case is a few MB at most. :func:`iter_json_array` holds one element plus one read
chunk: it feeds ``json.JSONDecoder.raw_decode`` from a growing text buffer (no dependency), and reports a
malformed file with the element and the line and column, like ``json.loads`` would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from memory_store.errors import InvalidInput

CHUNK_CHARS = 1 << 18
#: One test case of 300 conversations is a few MB; past this a "test case" is a broken file, not data.
MAX_ELEMENT_CHARS = 512 << 20
_WHITESPACE = " \t\n\r"


def starts_with_array(path: Path) -> bool:
    """True when the file's first non-blank character is ``[`` (read a few bytes, not the file)."""
    with path.open("rb") as fh:
        while True:
            block = fh.read(4096)
            if not block:
                return False
            text = block.lstrip(b" \t\r\n\xef\xbb\xbf")
            if text:
                return text[:1] == b"["


class _Buffer:
    """A window on the file: ``text[pos:]`` is what is not consumed yet; line/column of any position."""

    def __init__(self, fh: TextIO, chunk: int) -> None:
        self.fh = fh
        self.chunk = chunk
        self.text = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line of text[0]
        self.col = 1  # column of text[0]

    def more(self, at_least: int = 0) -> bool:
        """Drop the consumed text, read another chunk (or ``at_least`` characters); False at end of file."""
        if self.eof:
            return False
        dropped = self.text[: self.pos]
        newlines = dropped.count("\n")
        if newlines:
            self.line += newlines
            self.col = len(dropped) - dropped.rfind("\n")
        else:
            self.col += len(dropped)
        data = self.fh.read(max(self.chunk, at_least))
        self.text = self.text[self.pos :] + data
        self.pos = 0
        if not data:
            self.eof = True
        return bool(data)

    def skip_blank(self) -> str:
        """The next non-blank character (consumed up to it, not past it), or "" at end of file."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def where(self, index: int) -> str:
        before = self.text[:index]
        newlines = before.count("\n")
        if newlines:
            column = index - before.rfind("\n")
            return f"line {self.line + newlines} column {column}"
        return f"line {self.line} column {self.col + index}"


def _cut_short(exc: json.JSONDecodeError, length: int) -> bool:
    """True when the error may only mean the window ends inside the element (read more and parse again);
    an error well inside the window is the file's own (raised at once, without reading the rest)."""
    return exc.pos >= length - 8 or exc.msg.startswith("Unterminated string")


def iter_json_array(path: Path, chunk_chars: int = CHUNK_CHARS) -> Iterator[tuple[int, Any]]:
    """``(index, element)`` of a JSON array file, one element in memory at a time.

    Raises :class:`InvalidInput` naming the file, the element and the position when the file is not a
    well-formed array (cut short, a missing comma, trailing data ...).
    """
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig") as fh:
        buf = _Buffer(fh, chunk_chars)

        def bad(problem: str, index: int | str) -> InvalidInput:
            where = index if isinstance(index, str) else buf.where(index)
            return InvalidInput(f"{path}: malformed JSON ({problem} at {where})")

        first = buf.skip_blank()
        if first != "[":
            raise bad("expected an array '['", buf.pos)
        buf.pos += 1
        if buf.skip_blank() == "]":
            buf.pos += 1
        else:
            index = 0
            while True:
                while True:
                    try:
                        value, end = decoder.raw_decode(buf.text, buf.pos)
                    except json.JSONDecodeError as exc:
                        if buf.eof or not _cut_short(exc, len(buf.text)):
                            raise bad(f"element {index}: {exc.msg}", exc.pos) from None
                        if len(buf.text) - buf.pos > MAX_ELEMENT_CHARS:
                            raise bad(f"element {index} is over {MAX_ELEMENT_CHARS:,} characters", buf.pos) from None
                        buf.more(at_least=len(buf.text) - buf.pos)  # a big element doubles its window: O(n)
                        continue
                    if end == len(buf.text) and not buf.eof and buf.more():
                        continue  # a number cut at the window's end would parse short: read on, parse again
                    break
                buf.pos = end
                yield index, value
                index += 1
                sep = buf.skip_blank()
                if sep == ",":
                    comma = buf.where(buf.pos)
                    buf.pos += 1
                    if buf.skip_blank() == "]":
                        raise bad("trailing comma", comma)
                    continue
                if sep == "]":
                    buf.pos += 1
                    break
                if not sep:
                    raise bad(f"the file ends after element {index - 1}, before the array's ']'", buf.pos)
                raise bad(f"after element {index - 1}: expected ',' or ']'", buf.pos)
        if buf.skip_blank():
            raise bad("extra data after the array", buf.pos)
