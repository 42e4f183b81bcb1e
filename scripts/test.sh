#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit tests on tiny random models, plus a few steps of
# the real default model. Extra arguments go to pytest (e.g. scripts/test.sh -k rlhf).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
