"""Turning haystack messages into prompt text: ``speaker: text`` lines under numbered conversations.

Only speakers, texts, the conversation's position and (when the data has them) the speakers' names and the
session's date reach the prompt; no ids, no evidence flags. ConvoMem's data has neither names nor dates, so
its rendering is ``Conversation k:`` and ``user: ...`` lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mark_eval.convomem.schema import HaystackMessage


def line(msg: HaystackMessage) -> str:
    return f"{msg.name or msg.speaker}: {msg.text}"


def conversation_header(conv_index: int, excerpt: bool = False, date: str | None = None) -> str:
    dated = f" ({date})" if date else ""
    return f"Conversation {conv_index + 1}{dated}" + (" (excerpt):" if excerpt else ":")


def render_conversation(conv: Sequence[HaystackMessage]) -> str:
    if not conv:
        return ""
    return conversation_header(conv[0].conv_index, date=conv[0].date) + "\n" + "\n".join(line(m) for m in conv)


def render_conversations(convs: Iterable[Sequence[HaystackMessage]]) -> str:
    return "\n\n".join(render_conversation(c) for c in convs if c)


def render_excerpts(messages: Iterable[HaystackMessage]) -> str:
    """Selected messages in chronological order, grouped by conversation; gaps shown as ``...``."""
    ordered = sorted(messages, key=lambda m: (m.conv_index, m.msg_index))
    blocks: list[str] = []
    current: list[str] = []
    last: HaystackMessage | None = None
    for msg in ordered:
        if last is None or msg.conv_index != last.conv_index:
            if current:
                blocks.append("\n".join(current))
            current = [conversation_header(msg.conv_index, excerpt=True, date=msg.date)]
        elif msg.msg_index != last.msg_index + 1:
            current.append("...")
        current.append(line(msg))
        last = msg
    if current:
        blocks.append("\n".join(current))
    return "\n\n".join(blocks)


def render_flat(convs: Iterable[Sequence[HaystackMessage]]) -> str:
    """ConvoMem's extracted_context helper sees the history flattened, without conversation boundaries;
    dated data keeps one ``[date]`` line where the date changes, or the helper could not place anything in time."""
    out: list[str] = []
    last_date: str | None = None
    for conv in convs:
        for m in conv:
            if m.date and m.date != last_date:
                out.append(f"[{m.date}]")
                last_date = m.date
            out.append(line(m))
    return "\n".join(out)
