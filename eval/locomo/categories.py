"""LoCoMo's question categories (the ``category`` number of each ``qa`` entry) and which ones make the headline.

The numbering is the released data's: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial.
The J figures vendors publish are over categories 1-4; adversarial questions are reported apart.
"""

from __future__ import annotations

CATEGORY_NAMES: dict[int, str] = {
    1: "multi_hop",
    2: "temporal",
    3: "open_domain",
    4: "single_hop",
    5: "adversarial",
}
ADVERSARIAL = "adversarial"
#: categories 1-4, in LoCoMo's order
HEADLINE: tuple[str, ...] = ("multi_hop", "temporal", "open_domain", "single_hop")
#: the summary's row over categories 1-4
OVERALL = "overall_1_4"
#: the gold answer of an adversarial question: the dialogue does not say it
NOT_MENTIONED = "Not mentioned in the conversation"


def category_number(name: str) -> int:
    return next(n for n, v in CATEGORY_NAMES.items() if v == name)
