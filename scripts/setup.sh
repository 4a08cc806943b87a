#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the CPU build of torch, the project (editable),
# its dev tools and the embedded local model. Safe to run again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
fi
# This machine's pip configuration may name local package folders that do not exist; pip warns about each. The
# editable build warns that the checkout's folders shadow installed packages: that is what an editable install is.
pip_install() {
  "$VENV/bin/pip" install -q "$@" 2> >(sed -e "/^WARNING: Location '.*' is ignored/d" \
    -e '/BuildBackendWarning: Editable installation/,/with strategy, WheelFile/d' >&2)
}
# CPU torch first: a plain `torch` requirement could otherwise pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  pip_install torch==2.13.0
fi
stamp="$VENV/.mark-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "Installing mark and its dependencies (the first run builds llama-cpp-python: ~6 min)..." >&2
  pip_install -e ".[dev,local,mem0,compare]"
  touch "$stamp"
fi
