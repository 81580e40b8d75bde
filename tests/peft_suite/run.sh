#!/usr/bin/env bash
# Run PEFT's own custom-model tests with the RepAdapter rows of repadapter_rows.py added.
# Usage: tests/peft_suite/run.sh /path/to/peft-<version>/tests [extra pytest args]
# The tests folder comes from the PEFT release you have installed (e.g. its sdist:
# `pip download peft==$(python -c 'import peft; print(peft.__version__)') --no-deps --no-binary :all:`);
# its helpers need `pip install diffusers datasets`.
set -euo pipefail
peft_tests=$(realpath "$1"); shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
cp -r "$peft_tests" "$work/tests" && touch "$work/tests/__init__.py"  # PEFT imports its helpers relatively
cd "$work"
PYTHONPATH="$root/src:$here${PYTHONPATH:+:$PYTHONPATH}" python -m pytest tests/test_custom_models.py \
    -p repadapter_rows -p no:cacheprovider -k RepAdapter -q -rs "$@"
