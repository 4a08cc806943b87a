"""mem0 (the ``mem0ai`` library, optional extra ``mem0``) without telemetry, downloads or model calls.

Shared by ``mark bench store --compare mem0`` (memory_store.bench_compare) and the ``mem0`` method of ``mark eval
convomem`` (mark_eval.convomem.answerers.mem0_memory), so that neither imports the other.

- :func:`import_mem0`: the ``mem0`` package with its telemetry off (no PostHog event, no notice fetched from
  GitHub: mem0's notices are gated by the same flag) and spaCy's model download disabled (mem0 would fetch
  ``en_core_web_sm`` on first use when spaCy is installed; without it, BM25 text is not lemmatised and no entities
  are extracted). Its home directory (``MEM0_DIR``, where it writes ``config.json``) goes under ``home`` unless the
  environment already names one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType


def available() -> bool:
    """Whether mem0ai is installed (without importing it)."""
    return importlib.util.find_spec("mem0") is not None


def import_mem0(home: Path | None) -> ModuleType:
    """The ``mem0`` package with telemetry off and spaCy downloads disabled, its files under ``home``.

    Raises ImportError when mem0ai is not installed: callers turn it into their own one-line error."""
    os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is imported: no event ever leaves the machine
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MEM0_DIR", str(home))
    import mem0
    from mem0.memory import main as mem0_main
    from mem0.memory import telemetry
    from mem0.utils import spacy_models

    # mem0 may have been imported earlier in the process with telemetry on: switch every copy of the flag off
    telemetry.MEM0_TELEMETRY = False
    mem0_main.MEM0_TELEMETRY = False  # type: ignore[attr-defined]
    telemetry._oss_telemetry_shutting_down = True
    telemetry.client_telemetry.posthog = None
    # spaCy, when installed, downloads en_core_web_sm on first use: never at run time here (plain BM25 text).
    spacy_models._load_failed_lemma = True
    spacy_models._load_failed_full = True
    return mem0
