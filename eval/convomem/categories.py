"""The benchmark categories: canonical names (ConvoMem's result directories), aliases and judge kinds.

Canonical names match ``convomem_anchors.csv`` so our summary rows line up with the published ones.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel

from memory_store.errors import InvalidInput


class JudgeKind(StrEnum):
    """Which of ConvoMem's judge prompts grades a category (§3.6 of the research notes)."""

    USER_FACTS = "user_facts"  # single/multi-evidence variants chosen by evidence count
    DEFAULT = "default"
    ABSTENTION = "abstention"
    RUBRIC = "rubric"
    TEMPORAL = "temporal"


class CategorySpec(BaseModel):
    name: str
    label: str
    judge: JudgeKind
    aliases: tuple[str, ...] = ()


CATEGORIES: dict[str, CategorySpec] = {
    spec.name: spec
    for spec in [
        CategorySpec(
            name="user_facts",
            label="User facts",
            judge=JudgeKind.USER_FACTS,
            aliases=("user_evidence", "user", "simple_evidence"),
        ),
        CategorySpec(
            name="assistant_facts",
            label="Assistant facts",
            judge=JudgeKind.DEFAULT,
            aliases=("assistant_facts_evidence", "assistant"),
        ),
        CategorySpec(
            name="changing",
            label="Changing facts",
            judge=JudgeKind.DEFAULT,
            aliases=("changing_evidence", "changing_facts", "changed_evidence"),
        ),
        CategorySpec(
            name="abstention", label="Abstention", judge=JudgeKind.ABSTENTION, aliases=("abstention_evidence",)
        ),
        CategorySpec(
            name="preferences",
            label="Preferences",
            judge=JudgeKind.RUBRIC,
            aliases=("preference_evidence", "preference"),
        ),
        CategorySpec(
            name="implicit_connection",
            label="Implicit connections",
            judge=JudgeKind.RUBRIC,
            aliases=("implicit_connection_evidence", "implicit_connections", "implicit"),
        ),
        # LoCoMo as converted by the ConvoMem authors; labelled by LoCoMo's raw category id (see notes §6).
        CategorySpec(
            name="locomo_basic_facts",
            label="LoCoMo c1",
            judge=JudgeKind.DEFAULT,
            aliases=("locomo_category_1", "category_1_basic_facts"),
        ),
        CategorySpec(
            name="locomo_temporal",
            label="LoCoMo c2 (temporal)",
            judge=JudgeKind.TEMPORAL,
            aliases=("locomo_category_2", "category_2_temporal"),
        ),
        CategorySpec(
            name="locomo_reasoning",
            label="LoCoMo c3 (rubric)",
            judge=JudgeKind.RUBRIC,
            aliases=("locomo_category_3", "category_3_reasoning"),
        ),
        CategorySpec(
            name="locomo_multi_session",
            label="LoCoMo c4",
            judge=JudgeKind.DEFAULT,
            aliases=("locomo_category_4", "category_4_multi_session"),
        ),
        CategorySpec(
            name="locomo_abstention",
            label="LoCoMo c5 (abstention)",
            judge=JudgeKind.ABSTENTION,
            aliases=("locomo_category_5", "category_5_abstention"),
        ),
    ]
}

#: The six ConvoMem categories, in the paper's order.
CORE_CATEGORIES: tuple[str, ...] = (
    "user_facts",
    "assistant_facts",
    "changing",
    "abstention",
    "preferences",
    "implicit_connection",
)

_ALIASES: dict[str, str] = {}
for _spec in CATEGORIES.values():
    _ALIASES[_spec.name] = _spec.name
    for _alias in _spec.aliases:
        _ALIASES[_alias] = _spec.name


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def find_category(text: str) -> str | None:
    """The canonical name for a name, alias, directory or file name, or None."""
    key = _key(text)
    if key in _ALIASES:
        return _ALIASES[key]
    for alias, name in sorted(_ALIASES.items(), key=lambda kv: -len(kv[0])):
        if key.startswith(alias + "_"):
            return name
    return None


def resolve_category(text: str) -> str:
    """Like :func:`find_category` but an unknown name is the user's error (exit code 2)."""
    name = find_category(text)
    if name is None:
        raise InvalidInput(f"unknown category {text!r}; choose one of: {', '.join(CATEGORIES)}")
    return name


def spec(name: str) -> CategorySpec:
    return CATEGORIES[name]
