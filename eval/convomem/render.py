"""Turning haystack messages into prompt text: ``speaker: text`` lines under numbered conversations.

Only speakers, texts and the conversation's position reach the prompt; no ids, no evidence flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mark_eval.convomem.schema import HaystackMessage


def line(msg: HaystackMessage) -> str:
    return f"{msg.speaker}: {msg.text}"


def conversation_header(conv_index: int, excerpt: bool = False) -> str:
    return f"Conversation {conv_index + 1}" + (" (excerpt):" if excerpt else ":")


def render_conversation(conv: Sequence[HaystackMessage]) -> str:
    if not conv:
        return ""
    return conversation_header(conv[0].conv_index) + "\n" + "\n".join(line(m) for m in conv)


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
            current = [conversation_header(msg.conv_index, excerpt=True)]
        elif msg.msg_index != last.msg_index + 1:
            current.append("...")
        current.append(line(msg))
        last = msg
    if current:
        blocks.append("\n".join(current))
    return "\n\n".join(blocks)


def render_flat(convs: Iterable[Sequence[HaystackMessage]]) -> str:
    """ConvoMem's extracted_context helper sees the history flattened, without conversation boundaries."""
    return "\n".join(line(m) for conv in convs for m in conv)
