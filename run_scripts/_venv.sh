# Shared virtualenv bootstrap, sourced (not executed) by the run_scripts/*.sh entry points:
#   source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# Creates or reuses <repo>/.venv (found from this file's path, not the working directory), installs the
# project with `pip install -e ".[test]"` when pyproject.toml changed since the last install (a stamp
# file holds its hash), and exports:
#   REPO_ROOT  the repository root
#   VENV_DIR   the virtualenv (override with KARL_VENV_DIR)
#   VENV_PY    its python; PATH starts with its bin/
#   PYTHONPATH starts with REPO_ROOT (`python -m engine.main_train` works from any working directory)
# Settings: PYTHON (interpreter that creates the venv; default python3.11, else python3 >= 3.10),
#           KARL_PIP_EXTRAS (default "test,metrics"), KARL_SKIP_INSTALL=1 (use the venv as is).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${KARL_VENV_DIR:-$REPO_ROOT/.venv}"
VENV_PY="$VENV_DIR/bin/python"

_karl_die() { echo "_venv.sh: error: $*" >&2; return 1; }

_karl_pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return 0; fi
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

_karl_setup_venv() {
    if [ ! -x "$VENV_PY" ]; then
        local base_python
        base_python="$(_karl_pick_python)" || _karl_die "no python3.11 (or python3 >= 3.10) found; install it or set PYTHON=/path/to/python" || return 1
        echo "_venv.sh: creating $VENV_DIR with $base_python" >&2
        "$base_python" -m venv "$VENV_DIR" ||
            _karl_die "'$base_python -m venv' failed (on Debian/Ubuntu: apt-get install python3.11-venv)" || return 1
    fi
    [ "${KARL_SKIP_INSTALL:-0}" = "1" ] && return 0

    local extras="${KARL_PIP_EXTRAS-test,metrics}" spec stamp wanted
    spec="$REPO_ROOT"; [ -n "$extras" ] && spec="$REPO_ROOT[$extras]"
    stamp="$VENV_DIR/.karl_install_stamp"
    wanted="$( (cat "$REPO_ROOT/pyproject.toml"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && return 0

    echo "_venv.sh: installing the project into $VENV_DIR (pip install -e \"$spec\")" >&2
    # flock (when available) keeps two concurrent scripts from installing into the same venv at once.
    if command -v flock >/dev/null 2>&1; then
        ( flock 9
          [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && exit 0
          "$VENV_PY" -m pip install -e "$spec" && echo "$wanted" > "$stamp"
        ) 9>"$VENV_DIR/.karl_install.lock" || _karl_die "pip install -e \"$spec\" failed (see the messages above)" || return 1
    else
        "$VENV_PY" -m pip install -e "$spec" && echo "$wanted" > "$stamp" ||
            _karl_die "pip install -e \"$spec\" failed (see the messages above)" || return 1
    fi
}

_karl_setup_venv || return 1 2>/dev/null || exit 1
export REPO_ROOT VENV_DIR VENV_PY
export PATH="$VENV_DIR/bin:$PATH"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
