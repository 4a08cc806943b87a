"""Test cases at any conversation count: ConvoMem's batched (default) and standard mixers, seeded.

Batched, as the reference's ``BatchedTestCasesGenerator`` built every published run and the released
pre-mixed files: at each size the items that fit are shuffled and packed, up to 100 per haystack, while their
evidence conversations fit the size; other items' evidence is filler for each question, topped up with the
filler conversations of the items' personas; when that makes fewer than ten haystacks, items are asked again
(round robin, each time in a new haystack with fresh filler) until there are ten. ``--limit`` picks which
questions are *asked* after that construction, so it never changes a haystack.

Rules kept from the reference code: sizes below an item's evidence-conversation count are dropped; evidence
conversations take random slots but keep their order (changing facts stay chronological). Departures, on
purpose: the RNG is seeded per (size, item or batch) so a subset or a rerun gives the same haystacks; no
conversation is ever placed twice (ConvoMem's pooled top-up could re-pick one); when the filler runs out a
size is skipped with a warning (or is an error with ``on_short="error"``) instead of being quietly smaller;
the re-asked haystacks go round the shuffled items and respect the size (the reference restarts every extra
haystack at the same item and may overfill small sizes).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mark_eval.convomem.cases import assemble_case
from mark_eval.convomem.loaders import ConvoMemData, iter_streamed
from mark_eval.convomem.schema import Conversation, Item, PremixedRef, Question, TestCase
from memory_store.errors import InvalidInput

DEFAULT_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 10, 20, 30, 50, 70, 100, 150, 200, 300)
MixMode = Literal["standard", "batched"]


class MixConfig(BaseModel):
    sizes: tuple[int, ...] = DEFAULT_SIZES
    mode: MixMode = "batched"
    seed: int = 0
    batch_cap: int = Field(default=100, ge=1)
    #: batched: items are asked again until a size has this many haystacks (the reference's minimum)
    min_cases: int = Field(default=10, ge=1)
    on_short: Literal["skip", "error"] = "skip"


class MixResult(BaseModel):
    """The test cases of a run: ``cases`` in memory (mixed here, or small pre-mixed files) and ``streamed``
    ones of pre-mixed shards, read one at a time. ``all_cases`` gives every test case; ``metas`` what
    planning needs (size, questions, repeats) without reading any conversation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cases: list[TestCase] = Field(default_factory=list)
    streamed: list[PremixedRef] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def count(self) -> int:
        return len(self.cases) + len(self.streamed)

    def metas(self) -> Iterator[TestCase | PremixedRef]:
        yield from self.cases
        yield from self.streamed

    def all_cases(self) -> Iterator[TestCase]:
        yield from self.cases
        yield from iter_streamed(self.streamed)


class ShortOfFiller(Exception):
    """Internal: not enough distinct conversations to reach a size."""


def select_questions(
    data: ConvoMemData, categories: set[str] | None, evidence_count: int | None, limit: int | None
) -> ConvoMemData:
    """Filter by category and evidence count; ``limit`` marks the first N questions of each (category,
    evidence count) in file order as the ones asked (``ConvoMemData.asked``). Every item of the chosen groups
    stays: batched mixing packs them all, so a limit never changes the haystacks or their distractors."""

    def keep(q: Question) -> bool:
        return (categories is None or q.category in categories) and (
            evidence_count is None or q.evidence_count == evidence_count
        )

    chosen: dict[tuple[str, int], list[str]] = defaultdict(list)

    def take(q: Question) -> bool:
        if not keep(q):
            return False
        ids = chosen[(q.category, q.evidence_count)]
        if q.qid in ids:
            return True
        if limit is not None and len(ids) >= limit:
            return False
        ids.append(q.qid)
        return True

    items = [it for it in data.items if keep(it.question)]
    asked = frozenset(it.question.qid for it in items if take(it.question))
    premixed: list[TestCase] = []
    streamed: list[PremixedRef] = []
    seen: dict[tuple[str, int], int] = defaultdict(int)
    entries: list[TestCase | PremixedRef] = [*data.premixed, *data.streamed]
    for case in sorted(entries, key=lambda c: c.context_size):
        qs = [q for q in case.questions if take(q)]
        if qs:
            repeats = {}
            for q in qs:  # a released shard may ask a question again at the same size, in another haystack
                repeats[q.qid] = seen[(q.qid, case.context_size)]
                seen[(q.qid, case.context_size)] += 1
            kept = case.model_copy(update={"questions": qs, "repeats": repeats})
            (premixed if isinstance(kept, TestCase) else streamed).append(kept)  # type: ignore[arg-type]
    return ConvoMemData(
        items=items,
        filler=data.filler,
        premixed=premixed,
        streamed=streamed,
        sources=data.sources,
        asked=asked if limit is not None else None,
    )


def build_cases(data: ConvoMemData, config: MixConfig, sizes_given: bool = True) -> MixResult:
    """Test cases for every size: pre-mixed ones as they are (filtered by size), items mixed with filler.
    Only the questions of ``data.asked`` (all when None) are asked; a haystack with none of them is left out."""
    result = MixResult()
    wanted = set(config.sizes)
    for case in data.premixed:
        if not sizes_given or case.context_size in wanted:
            result.cases.append(case)
    result.streamed = [ref for ref in data.streamed if not sizes_given or ref.context_size in wanted]
    groups: dict[tuple[str, int], list[Item]] = defaultdict(list)
    for item in data.items:
        groups[(item.question.category, item.question.evidence_count)].append(item)
    asked = data.asked
    for (category, n), items in sorted(groups.items()):
        items = sorted(items, key=lambda it: it.question.qid)
        for size in sorted(wanted):
            fitting = [it for it in items if len(it.conversations) <= size]
            if not fitting:
                continue
            try:
                if config.mode == "standard":
                    made = [
                        _standard(it, size, data.filler, config.seed)
                        for it in fitting
                        if asked is None or it.question.qid in asked
                    ]
                else:
                    made = _batched(fitting, size, data.filler, config, f"{category}|{n}", asked)
            except ShortOfFiller as exc:
                msg = f"{category} {n}-evidence: size {size} skipped: {exc}"
                if config.on_short == "error":
                    raise InvalidInput(msg) from None
                result.warnings.append(msg)
                continue
            result.cases.extend(made)
    return result


def _unique(convs: Iterable[Conversation], exclude: set[str]) -> list[Conversation]:
    out: list[Conversation] = []
    seen = set(exclude)
    for conv in convs:
        if conv.cid not in seen:
            seen.add(conv.cid)
            out.append(conv)
    return out


def _draw_filler(
    rng: random.Random,
    need: int,
    preferred: Sequence[str],
    filler: dict[str, list[Conversation]],
    used: set[str],
    quotas: dict[str, int] | None = None,
) -> list[Conversation]:
    """Same-persona filler first (per-persona quotas when given), then any persona; never a conversation twice."""
    chosen: list[Conversation] = []
    taken = set(used)
    for person in preferred:
        pool = _unique(filler.get(person, []), taken)
        want = need - len(chosen) if quotas is None else min(quotas.get(person, 0), need - len(chosen))
        picked = rng.sample(pool, min(max(want, 0), len(pool)))
        chosen.extend(picked)
        taken.update(c.cid for c in picked)
    if len(chosen) < need:
        pool = _unique((c for person in sorted(filler) for c in filler[person]), taken)
        picked = rng.sample(pool, min(need - len(chosen), len(pool)))
        chosen.extend(picked)
    if len(chosen) < need:
        total = len(_unique((c for p in filler.values() for c in p), used))
        raise ShortOfFiller(f"needs {need} filler conversations, only {total} distinct ones available")
    return chosen[:need]


def _place(
    rng: random.Random, size: int, groups: list[list[Conversation]], filler: list[Conversation]
) -> list[Conversation]:
    """Random slots for each group's conversations, kept in the group's order; filler in the rest."""
    slots: list[Conversation | None] = [None] * size
    perm = rng.sample(range(size), size)
    cursor = 0
    for convs in groups:
        positions = sorted(perm[cursor : cursor + len(convs)])
        cursor += len(convs)
        for pos, conv in zip(positions, convs, strict=True):
            slots[pos] = conv
    rest = iter(filler)
    return [slot if slot is not None else next(rest) for slot in slots]


def _standard(item: Item, size: int, filler: dict[str, list[Conversation]], seed: int) -> TestCase:
    rng = random.Random(f"{seed}|standard|{size}|{item.question.qid}")
    evidence = _unique(item.conversations, set())
    need = size - len(evidence)
    person = item.question.person_id or ""
    fill = _draw_filler(rng, need, [person], filler, {c.cid for c in evidence}) if need > 0 else []
    convs = _place(rng, len(evidence) + len(fill), [evidence], fill)
    return assemble_case(size, convs, [item.question])


def _pack(order: Iterable[Item], size: int, cap: int, stop_after: int | None = None) -> list[list[Item]]:
    """The reference's packing: items in order into a batch while their evidence conversations fit the size
    and the batch holds fewer than ``cap``; an item sharing a conversation with the batch starts a new one."""
    batches: list[list[Item]] = []
    current: list[Item] = []
    used: set[str] = set()
    for item in order:
        ids = {c.cid for c in item.conversations}
        full = len(used | ids) > size or len(current) >= cap or bool(used & ids)
        if current and full:
            batches.append(current)
            if stop_after is not None and len(batches) >= stop_after:
                return batches
            current, used = [], set()
        current.append(item)
        used |= ids
    if current:
        batches.append(current)
    return batches


def batch_items(items: list[Item], size: int, config: MixConfig, group: str) -> list[list[Item]]:
    """Every item that fits once, shuffled and packed; then, while there are fewer than ``min_cases``
    batches, more batches going round the same shuffled order (items asked again, in new haystacks)."""
    rng = random.Random(f"{config.seed}|batched|{size}|{group}")
    order = list(items)
    rng.shuffle(order)
    batches = _pack(order, size, config.batch_cap)
    missing = config.min_cases - len(batches)
    if missing > 0:
        batches += _pack(itertools.cycle(order), size, config.batch_cap, stop_after=missing)
    return batches


def _batched(
    items: list[Item],
    size: int,
    filler: dict[str, list[Conversation]],
    config: MixConfig,
    group: str,
    asked: frozenset[str] | None,
) -> list[TestCase]:
    cases: list[TestCase] = []
    seen: dict[str, int] = defaultdict(int)
    for index, batch in enumerate(batch_items(items, size, config, group)):
        repeats = {}
        for it in batch:
            repeats[it.question.qid] = seen[it.question.qid]
            seen[it.question.qid] += 1
        questions = [it.question for it in batch if asked is None or it.question.qid in asked]
        if not questions:
            continue  # nobody asks here: the haystack is never built (the others do not depend on it)
        rng = random.Random(f"{config.seed}|batched|{size}|{group}|{index}")
        evidence = [_unique(it.conversations, set()) for it in batch]
        used = {c.cid for convs in evidence for c in convs}
        need = size - len(used)
        persons: dict[str, int] = defaultdict(int)
        for it in batch:
            persons[it.question.person_id or ""] += 1
        quotas = {p: max(1, round(need * k / len(batch))) for p, k in persons.items()}
        fill = _draw_filler(rng, need, sorted(persons), filler, used, quotas) if need > 0 else []
        convs = _place(rng, len(used) + len(fill), evidence, fill)
        cases.append(assemble_case(size, convs, questions, repeats={q.qid: repeats[q.qid] for q in questions}))
    return cases
