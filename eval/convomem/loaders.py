"""Reading ConvoMem data: the released layout, single test-case files, and the bundled sample.

Every file is classified by its content (``evidence_items`` payload, array of test cases, or one test-case
object) and by its path (category directory, ``<N>_evidence``, ``filler_conversations``). Anything unusable
raises :class:`~memory_store.errors.InvalidInput` naming the file and the problem, before any output exists.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mark_eval.convomem.cases import assemble_case
from mark_eval.convomem.categories import find_category
from mark_eval.convomem.schema import (
    Conversation,
    EvidenceItem,
    EvidencePayload,
    Item,
    PremixedRef,
    Question,
    RawTestCase,
    TestCase,
)
from mark_eval.convomem.stream import iter_json_array, starts_with_array
from memory_store.errors import InvalidInput

_N_EVIDENCE = re.compile(r"^(\d+)_evidence$")
_FILLER_MARKERS = ("filler_conversations", "irrelevant")


class NotConvoMem(InvalidInput):
    """A JSON file that is not ConvoMem data (or not a category we know): fatal when named, skipped in a walk."""


class ConvoMemData(BaseModel):
    """What a data path holds: items to mix, filler by persona, and ready-made (pre-mixed) test cases."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    items: list[Item] = Field(default_factory=list)
    filler: dict[str, list[Conversation]] = Field(default_factory=dict)
    premixed: list[TestCase] = Field(default_factory=list)
    #: test cases of pre-mixed shards (arrays), read again one at a time when run (:func:`iter_streamed`)
    streamed: list[PremixedRef] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    #: files of a directory walk that were not ConvoMem data (e.g. dataset_info.json), with the reason
    skipped: list[str] = Field(default_factory=list)
    #: the questions to ask (``--limit``), chosen after the haystacks are built; None = every question
    asked: frozenset[str] | None = None

    def merge(self, other: ConvoMemData) -> None:
        self.items.extend(other.items)
        for person, convs in other.filler.items():
            self.filler.setdefault(person, []).extend(convs)
        self.premixed.extend(other.premixed)
        self.streamed.extend(other.streamed)
        self.sources.extend(other.sources)

    @property
    def filler_count(self) -> int:
        return sum(len(v) for v in self.filler.values())

    def asked_questions(self) -> list[Question]:
        """The questions a run asks: every one, or with ``--limit`` the chosen items' (pre-mixed test cases
        were already cut to their asked questions)."""
        if self.asked is None:
            return self.questions()
        keep = set(self.asked) | {q.qid for case in [*self.premixed, *self.streamed] for q in case.questions}
        return [q for q in self.questions() if q.qid in keep]

    def questions(self) -> list[Question]:
        seen: dict[str, Question] = {}
        for item in self.items:
            seen.setdefault(item.question.qid, item.question)
        for case in [*self.premixed, *self.streamed]:
            for q in case.questions:
                seen.setdefault(q.qid, q)
        return list(seen.values())


def load_data(path: Path) -> ConvoMemData:
    """Load a file or a directory tree (every ``*.json`` under it, in sorted order)."""
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise InvalidInput(f"{path}: no .json files found")
    data = ConvoMemData()
    for file in files:
        part = ConvoMemData()
        try:
            _load_file(file, part, root=path if path.is_dir() else path.parent)
        except NotConvoMem as exc:
            if path.is_file():
                raise
            data.skipped.append(str(exc))
            continue
        data.merge(part)
    if not data.items and not data.premixed and not data.streamed:
        why = f" (skipped: {data.skipped[0]})" if data.skipped else " (only filler conversations?)"
        raise InvalidInput(f"{path}: no questions found{why}")
    return data


def load_sample() -> ConvoMemData:
    """The small ConvoMem-shaped sample shipped in the package (hand-written, all six categories)."""
    root = resources.files("mark_eval.convomem") / "sample"
    data = ConvoMemData()
    names = sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".json"))
    for name in names:
        text = (root / name).read_text(encoding="utf-8")
        _ingest(Path("sample") / name, _parse_json(Path(name), text), data)
    return data


def _load_file(file: Path, data: ConvoMemData, root: Path) -> None:
    rel = file.relative_to(root) if file.is_relative_to(root) else file
    try:
        if starts_with_array(file):  # a pre-mixed shard, maybe hundreds of MB: streamed, never read whole
            _ingest_stream(file, rel, data)
            return
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file}: not UTF-8 text ({exc.reason})") from None
    _ingest(rel, _parse_json(file, text), data, shown=file)


def _raw_case(raw: Any, shown: Path, index: int) -> RawTestCase:
    if not isinstance(raw, dict) or "evidenceItems" not in raw:
        raise InvalidInput(f"{shown}: element {index}: expected a test case with 'evidenceItems'")
    try:
        return RawTestCase.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{shown}: element {index}: {where}: {err['msg']}") from None


def _ingest_stream(file: Path, rel: Path, data: ConvoMemData) -> None:
    """Index a shard's test cases (their questions and sizes), one at a time; the conversations are dropped
    and read again when the case is run."""
    data.sources.append(str(rel))
    n_evidence = next((int(m.group(1)) for part in rel.parts if (m := _N_EVIDENCE.match(part.lower()))), None)
    path_category = _category_from_path(rel)
    count = 0
    for i, raw in iter_json_array(file):
        case = _raw_case(raw, file, i)
        questions = _premixed_questions(case, path_category, n_evidence, rel, file, index=i, single=False)
        data.streamed.append(PremixedRef(path=file, index=i, context_size=case.context_size, questions=questions))
        count += 1
    if not count:
        raise InvalidInput(f"{file}: empty array (expected test cases)")


def iter_streamed(refs: list[PremixedRef]) -> Iterator[TestCase]:
    """The test cases of ``refs``, assembled one at a time: each shard is read once, front to back, and only
    the chosen elements become test cases."""
    by_path: dict[Path, dict[int, PremixedRef]] = {}
    for ref in refs:
        by_path.setdefault(ref.path, {})[ref.index] = ref
    for path, wanted in by_path.items():
        last = max(wanted)
        for i, raw in iter_json_array(path):
            ref = wanted.get(i)
            if ref is not None:
                case = _raw_case(raw, path, i)
                yield assemble_case(ref.context_size, list(case.conversations), ref.questions, ref.repeats)
            if i >= last:
                break


def _parse_json(file: Path, text: str) -> Any:
    if not text.strip():
        raise InvalidInput(f"{file}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{file}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _validation_message(file: Path, exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "top level"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return InvalidInput(f"{file}: {where}: {err['msg']}{more}")


def _ingest(rel: Path, payload: Any, data: ConvoMemData, shown: Path | None = None) -> None:
    shown = shown or rel
    parts = [p.lower() for p in rel.parts]
    data.sources.append(str(rel))
    is_filler = any(m in part for part in parts[:-1] for m in _FILLER_MARKERS) or rel.stem.lower().startswith("filler")
    n_evidence = next((int(m.group(1)) for part in parts if (m := _N_EVIDENCE.match(part))), None)
    path_category = _category_from_path(rel)
    try:
        if isinstance(payload, dict) and "evidence_items" in payload:
            parsed = EvidencePayload.model_validate(payload)
            if is_filler:
                _add_filler(parsed, rel, data, shown)
            else:
                _add_items(parsed.evidence_items, path_category, n_evidence, rel, data, shown)
        elif isinstance(payload, dict) and "evidenceItems" in payload:
            case = RawTestCase.model_validate(payload)
            data.premixed.append(_premixed(case, path_category, n_evidence, rel, shown, index=0, single=True))
        elif isinstance(payload, list):
            if not payload:
                raise InvalidInput(f"{shown}: empty array (expected test cases)")
            for i, raw in enumerate(payload):
                case = _raw_case(raw, shown, i)
                data.premixed.append(_premixed(case, path_category, n_evidence, rel, shown, index=i, single=False))
        else:
            raise NotConvoMem(
                f"{shown}: not a ConvoMem file (expected an object with 'evidence_items' or 'evidenceItems', "
                "or an array of test cases)"
            )
    except ValidationError as exc:
        raise _validation_message(shown, exc) from None


def _category_from_path(rel: Path) -> str | None:
    for part in reversed([rel.stem, *rel.parts[:-1]]):
        name = find_category(part)
        if name is not None:
            return name
    return None


def _item_category(item: EvidenceItem, path_category: str | None, shown: Path, index: int) -> str:
    if path_category:
        return path_category
    if item.category and (name := find_category(item.category)):
        return name
    raise NotConvoMem(
        f"{shown}: evidence item {index}: cannot tell its benchmark category (put the file under a "
        "category directory such as user_evidence/ or name the file after the category)"
    )


def _question(item: EvidenceItem, category: str, n_evidence: int, rel: Path) -> Question:
    texts = [m.text for m in item.message_evidences]
    conv_ids = [c.cid for c in item.conversations]
    return Question(
        qid=Question.make_id(category, item.question, item.answer, texts, conv_ids),
        category=category,
        evidence_count=n_evidence,
        question=item.question,
        answer=item.answer,
        evidence_texts=tuple(texts),
        evidence_conversation_ids=tuple(conv_ids),
        person_id=item.person_id,
        source=str(rel),
    )


def _check_question(item: EvidenceItem, shown: Path, where: str) -> None:
    if not item.question.strip():
        raise InvalidInput(f"{shown}: {where}: empty question")
    if not item.answer.strip():
        raise InvalidInput(f"{shown}: {where}: empty answer")


def _add_items(
    items: list[EvidenceItem], category: str | None, n: int | None, rel: Path, data: ConvoMemData, shown: Path
) -> None:
    if not items:
        raise InvalidInput(f"{shown}: evidence_items is empty")
    for i, item in enumerate(items):
        where = f"evidence_items.{i}"
        _check_question(item, shown, where)
        if not item.conversations:
            raise InvalidInput(f"{shown}: {where}: no evidence conversations (empty haystack)")
        for j, conv in enumerate(item.conversations):
            if not conv.messages:
                raise InvalidInput(f"{shown}: {where}.conversations.{j}: conversation has no messages")
        cat = _item_category(item, category, shown, i)
        if not item.person_id:  # the reference's fallback: <personId>_<Role>.json
            item = item.model_copy(update={"person_id": person_from_file_name(rel)})
        question = _question(item, cat, n if n is not None else len(item.conversations), rel)
        data.items.append(Item(question=question, conversations=list(item.conversations)))


def person_from_file_name(rel: Path) -> str:
    """The persona of a released file named ``<personId>_<Role>.json`` (the reference reads it there when an
    item has no ``personId``)."""
    return rel.stem.split("_")[0]


def _add_filler(payload: EvidencePayload, rel: Path, data: ConvoMemData, shown: Path) -> None:
    fallback_person = person_from_file_name(rel)
    # ConvoMem stamps filler containsEvidence=true at generation; the flag is never trusted nor shown.
    for i, item in enumerate(payload.evidence_items):
        for j, conv in enumerate(item.conversations):
            if not conv.messages:
                raise InvalidInput(f"{shown}: evidence_items.{i}.conversations.{j}: conversation has no messages")
            data.filler.setdefault(item.person_id or fallback_person, []).append(conv)


def _premixed(
    raw: RawTestCase, category: str | None, n: int | None, rel: Path, shown: Path, index: int, single: bool
) -> TestCase:
    questions = _premixed_questions(raw, category, n, rel, shown, index, single)
    return assemble_case(raw.context_size, list(raw.conversations), questions)


def _premixed_questions(
    raw: RawTestCase, category: str | None, n: int | None, rel: Path, shown: Path, index: int, single: bool
) -> list[Question]:
    """A pre-mixed test case checked (a haystack, no conversation twice, questions) and its questions."""
    if not raw.conversations or not any(c.messages for c in raw.conversations):
        raise InvalidInput(f"{shown}: test case {index}: empty haystack (no conversations with messages)")
    if not raw.evidence_items:
        raise InvalidInput(f"{shown}: test case {index}: no evidenceItems")
    ids = [c.cid for c in raw.conversations]
    dupes = {cid for cid in ids if ids.count(cid) > 1}
    if dupes:
        raise InvalidInput(f"{shown}: test case {index}: conversation listed twice: {sorted(dupes)[0]}")
    questions: list[Question] = []
    for i, item in enumerate(raw.evidence_items):
        _check_question(item, shown, f"test case {index}: evidenceItems.{i}")
        cat = _item_category(item, category, shown, i)
        # A single-object file (the LoCoMo conversion) mixes evidence counts: 0 = "any", as in the anchors.
        count = n if n is not None else (0 if single else len(item.conversations))
        questions.append(_question(item, cat, count, rel))
    return questions


def group_counts(data: ConvoMemData) -> dict[tuple[str, int], int]:
    """Questions per (category, evidence count), for messages and the CLI's dry summary."""
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for q in data.questions():
        counts[(q.category, q.evidence_count)] += 1
    return dict(counts)
