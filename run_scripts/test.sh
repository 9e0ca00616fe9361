#!/usr/bin/env bash
# Run the test suite in the project's virtualenv (created/updated by _venv.sh).
#   bash run_scripts/test.sh [pytest args...]     e.g.  bash run_scripts/test.sh tests/test_data.py -q
# Exit status: pytest's; "no tests collected" (pytest exit 5) is reported and counts as a failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO_ROOT"  # pytest testpaths and repo-relative paths below

status=0
"$VENV_PY" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit 5); treating this as a failure" >&2
fi
exit "$status"
