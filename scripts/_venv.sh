# Sourced by scripts/*: make .venv and install the project into it (quietly, once per change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
install_project() {  # $1: pip extras spec, e.g. "" or "[test]"
  local stamp=".venv/.installed$1"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1"
    touch "$stamp"
  fi
}
