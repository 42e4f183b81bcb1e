#!/usr/bin/env bash
# The demo, from nothing: install, post-train the embedded default model with the DPO pipeline
# (SFT -> DPO -> merged model, on data_samples/), then ask the result a question.
# About 15 minutes on a 2-core CPU. Pass another pipeline file to run it instead, e.g.
#   bash scripts/demo.sh pipelines/rlhf.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
PIPELINE=${1:-pipelines/dpo.yaml}
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
.venv/bin/posttrain pipeline "$PIPELINE"
OUTPUT=$(.venv/bin/python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output'])" "$PIPELINE")
echo
echo "posttrain chat $OUTPUT/merge --prompt 'How do I make a cup of tea?'"
.venv/bin/posttrain chat "$OUTPUT/merge" --prompt "How do I make a cup of tea?" --temperature 0 --max-new-tokens 96
echo
echo "Report: $OUTPUT/report.html   Talk to it: source .venv/bin/activate && posttrain chat $OUTPUT/merge"
