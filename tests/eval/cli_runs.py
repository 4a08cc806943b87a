"""The real ``mark`` CLI in a subprocess, as the evaluator's CLI tests run it (one home for the command line,
its working directory and, for the ``llm`` tests, the local model server's environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def mark(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mark_cli.main", "--home", str(home), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def mark_with_local_model(
    request: pytest.FixtureRequest, tmp_path: Path, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``mark`` with ``MARK_LLM_*`` pointing at the local model server; skips when its fixture is not there."""
    try:
        settings = request.getfixturevalue("llm_settings")
    except pytest.FixtureLookupError:
        pytest.skip("the llm_settings fixture (tests/llm_fixtures.py) is not available")
    env = {**os.environ, "MARK_LLM_BASE_URL": settings.llm.base_url, "MARK_LLM_MODEL": settings.llm.model}
    return mark(*args, home=tmp_path / "home", env=env, timeout=timeout)
