#!/usr/bin/env bash
# Quickstart (interim): environment + embedded demo data. Later steps (train, evaluate, report) are
# appended as further `step` lines. Each finished step is remembered in a stamp file, so a rerun skips
# it; delete $STATE_DIR (or one stamp) to redo steps, or set QUICKSTART_FORCE=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO_ROOT"  # the repo-relative paths below

DEMO_DATA_DIR="${DEMO_DATA_DIR:-$REPO_ROOT/datasets/demo}"
STATE_DIR="${QUICKSTART_STATE_DIR:-$REPO_ROOT/output_dir/quickstart/.steps}"
mkdir -p "$STATE_DIR"

# step NAME [--creates PATH] COMMAND...: run COMMAND unless its stamp says it already succeeded with the
# same command line (and PATH, when given, still exists).
step() {
    local name="$1"; shift
    local creates=""
    if [ "${1:-}" = "--creates" ]; then creates="$2"; shift 2; fi
    local stamp="$STATE_DIR/$name.done" command_line="$*"
    if [ "${QUICKSTART_FORCE:-0}" != "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$command_line" ] &&
       { [ -z "$creates" ] || [ -e "$creates" ]; }; then
        echo "== [$name] already done (stamp $stamp)"
        return 0
    fi
    echo "== [$name] $command_line"
    local start=$SECONDS
    "$@"
    echo "$command_line" > "$stamp"
    echo "== [$name] done in $((SECONDS - start)) s"
}

# The generator itself is idempotent too: with the same settings it leaves existing data untouched.
step demo_data --creates "$DEMO_DATA_DIR/metadata.csv" "$VENV_PY" run_scripts/prepare_demo_data.py --output_dir "$DEMO_DATA_DIR"

cat <<MSG

Demo data: $DEMO_DATA_DIR (train/ and val/ by family, metadata.csv with complexity levels).
Next:
  bash run_scripts/test.sh                 # the test suite
  python run_scripts/create_imagenet100.py --imagenet_dir SRC --imagenet100_dir DST   # real data
Training and evaluation steps will be added to this script as they land.
MSG
