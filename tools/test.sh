#!/usr/bin/env bash
# The README's test command: install everything the tests read (tools/setup.sh), then run them.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
python3 -m pytest -q "$@"
