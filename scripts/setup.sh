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
# llama-cpp-python compiles llama.cpp for the CPU it is built on (-march=native). On a Xeon with AMX, in a virtual
# machine that does not enable AMX, that build's AMX kernels crash the model server at its first answer (seen here:
# a segfault in ggml_backend_amx_mul_mat). So on x86_64 it is built once for any AVX2 CPU, as a wheel kept in our own
# cache: pip's cache keys a source build by the source archive, not by these flags, and would hand the native build
# back.
LLAMA=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)
llama_stamp="$VENV/.llama-$LLAMA-portable"
if [ "$(uname -m)" = x86_64 ] && [ ! -f "$llama_stamp" ]; then
  wheels="${MARK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mark/wheels}/avx2"
  wheel=$(ls "$wheels"/llama_cpp_python-"$LLAMA"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    echo "Building llama-cpp-python $LLAMA for any AVX2 CPU (once per machine: ~5 min)..." >&2
    mkdir -p "$wheels"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      "$VENV/bin/pip" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$wheels" \
      "llama-cpp-python==$LLAMA" 2> >(sed -e "/^WARNING: Location '.*' is ignored/d" >&2)
    wheel=$(ls "$wheels"/llama_cpp_python-"$LLAMA"-*.whl | head -1)
  fi
  pip_install --force-reinstall --no-deps "$wheel"
  touch "$llama_stamp"
fi
stamp="$VENV/.mark-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "Installing mark and its dependencies..." >&2
  pip_install -e ".[dev,local,mem0,compare]"
  touch "$stamp"
fi
