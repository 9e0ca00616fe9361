#!/usr/bin/env bash
# Evaluate a KARL tokenizer; every option of run_scripts/evaluate.py passes through:
#   bash run_scripts/evaluate.sh --checkpoint CKPT --data_path DIR --output_dir OUT [--max_images 100] [...]
# List options (--epsilons, --budgets, ...) take values space- or comma-separated, as `karl` does.
# For rFID's network code and the offline FD-EffNetLite0: KARL_PIP_EXTRAS="test,metrics".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec "$VENV_PY" "$REPO_ROOT/run_scripts/evaluate.py" "$@"
