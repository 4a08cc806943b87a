"""Pydantic models of ConvoMem's JSON (field names verbatim from the released files) and of our test cases.

The raw models mirror the Scala case classes (``evidence_items`` vs ``evidenceItems`` and all), so a file
either validates or the loader can say exactly which field is wrong. Everything the system under test may
see is reduced to :class:`Haystack` (speaker + text per message); ids and evidence flags stay outside it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


def normalise_speaker(speaker: str) -> str:
    """ConvoMem writes ``User``/``Assistant`` in raw files and ``user``/``assistant`` in pre-mixed ones."""
    return speaker.strip().lower()


class Message(BaseModel):
    """``speaker`` is the role (``user``/``assistant``); ``name`` the person's real name when the data has one
    (LoCoMo's dialogues are between two named people, ConvoMem's have none)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    speaker: str
    text: str
    name: str | None = None

    @field_validator("speaker")
    @classmethod
    def _lower(cls, value: str) -> str:
        return normalise_speaker(value)


class Conversation(BaseModel):
    """One chat session; ``id`` is filled from the content when a file leaves it null.

    ``date`` is the session's date as the data writes it (LoCoMo: "4:04 pm on 20 January, 2023"), shown to
    the answering model; ``started_at`` its parsed form when it could be parsed. ConvoMem has neither.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    messages: list[Message]
    id: str | None = None
    contains_evidence: bool | None = Field(default=None, alias="containsEvidence")
    model_name: str | None = None
    date: str | None = None
    started_at: datetime | None = None

    def model_post_init(self, _context: object) -> None:
        if not self.id:
            digest = hashlib.sha1(
                "\n".join(f"{m.speaker}:{m.text}" for m in self.messages).encode("utf-8", "surrogatepass")
            ).hexdigest()[:16]
            self.id = f"conv-{digest}"

    @property
    def cid(self) -> str:
        """The id, never None after validation."""
        return self.id or ""


class EvidenceItem(BaseModel):
    """One question with its answer (fact, abstention sentence or rubric) and its evidence conversations."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    question: str
    answer: str
    message_evidences: list[Message] = Field(default_factory=list)
    conversations: list[Conversation] = Field(default_factory=list)
    category: str | None = None
    scenario_description: str | None = None
    person_id: str | None = Field(default=None, alias="personId")
    use_case_model_name: str | None = None
    core_model_name: str | None = None


class EvidencePayload(BaseModel):
    """A raw file of ``evidence_questions/`` or ``filler_conversations/``."""

    model_config = ConfigDict(extra="ignore")

    evidence_items: list[EvidenceItem]
    checkpoint: str | None = None


class RawTestCase(BaseModel):
    """A pre-mixed test case (``pre_mixed_testcases/`` arrays, or one object per file as in the LoCoMo set)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    evidence_items: list[EvidenceItem] = Field(alias="evidenceItems")
    conversations: list[Conversation]
    context_size: int = Field(alias="contextSize")


class Question(BaseModel):
    """An evidence item placed in the benchmark: category, evidence count and a stable id for resuming."""

    model_config = ConfigDict(frozen=True)

    qid: str
    category: str
    evidence_count: int
    question: str
    answer: str
    evidence_texts: tuple[str, ...]
    evidence_conversation_ids: tuple[str, ...]
    person_id: str | None = None
    source: str = ""
    #: an answer known to be wrong (LoCoMo's adversarial answer), for the judge's leniency check
    distractor: str | None = None

    @staticmethod
    def make_id(category: str, question: str, answer: str, evidence: list[str], conv_ids: list[str]) -> str:
        """Content-derived, so a rerun (resume) finds the same id whatever the file order."""
        blob = "\x1f".join([category, question, answer, *evidence, *conv_ids])
        return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Item(BaseModel):
    """A question plus its evidence conversations (the unit the mixers place into haystacks)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: Question
    conversations: list[Conversation]


class HaystackMessage(BaseModel):
    """A message as the system under test sees it, plus its position (``mid``) for recall bookkeeping.

    ``name`` and ``date`` (the speaker's name, the session's date) are set only when the data has them.
    """

    model_config = ConfigDict(frozen=True)

    mid: str
    conv_index: int
    msg_index: int
    speaker: str
    text: str
    name: str | None = None
    date: str | None = None


class Haystack(BaseModel):
    """The ordered conversations of one test case. The only thing answerers receive besides the question."""

    model_config = ConfigDict(frozen=True)

    hid: str
    conversations: tuple[tuple[HaystackMessage, ...], ...]
    #: per conversation: its date as written and parsed (all None for ConvoMem)
    dates: tuple[str | None, ...] = ()
    started_at: tuple[datetime | None, ...] = ()

    @classmethod
    def build(cls, conversations: list[Conversation]) -> Haystack:
        # model_construct: the messages were validated on load, and a 300-conversation haystack has ~15k
        convs = tuple(
            tuple(
                HaystackMessage.model_construct(
                    mid=f"{ci}:{mi}",
                    conv_index=ci,
                    msg_index=mi,
                    speaker=m.speaker,
                    text=m.text,
                    name=m.name,
                    date=conv.date,
                )
                for mi, m in enumerate(conv.messages)
            )
            for ci, conv in enumerate(conversations)
        )
        hid = hashlib.sha1("\x1f".join(c.cid for c in conversations).encode()).hexdigest()[:16]
        return cls.model_construct(
            hid=hid,
            conversations=convs,
            dates=tuple(c.date for c in conversations),
            started_at=tuple(c.started_at for c in conversations),
        )

    @cached_property
    def messages(self) -> list[HaystackMessage]:
        return [m for conv in self.conversations for m in conv]

    def __len__(self) -> int:
        return len(self.conversations)


class PremixedRef(BaseModel):
    """A test case of a pre-mixed shard, by position: its questions are known from the loading pass, its
    conversations are read again from the file when the case is run (a shard is never held in memory whole)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    index: int
    context_size: int
    questions: list[Question]
    repeats: dict[str, int] = Field(default_factory=dict)

    def repeat(self, qid: str) -> int:
        return self.repeats.get(qid, 0)


class TestCase(BaseModel):
    """A haystack at a target conversation count and the questions asked against it (each independently)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    __test__ = False  # not a pytest class

    context_size: int
    conversation_ids: list[str]
    haystack: Haystack
    questions: list[Question]
    #: message ids (``conv:msg``) of each question's evidence messages inside this haystack
    evidence_mids: dict[str, list[str]] = Field(default_factory=dict)
    #: how many earlier haystacks of the same size already ask a question (batched re-asking); 0 when absent
    repeats: dict[str, int] = Field(default_factory=dict)

    def repeat(self, qid: str) -> int:
        return self.repeats.get(qid, 0)
