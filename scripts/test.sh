#!/usr/bin/env bash
# Installs costwarden with its test extras into .venv and runs lint, types and the whole suite.
# Exits non-zero when anything fails, and when no test ran at all.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy (strict)"
.venv/bin/mypy
echo "== import contracts (layers, no cycles)"
.venv/bin/lint-imports
echo "== pytest"
log="$(mktemp)"
set +e
# Two workers (the machine's cores; COSTWARDEN_TEST_WORKERS to change): tests that share
# one Redis database run in one worker, one after the other (tests/conftest.py).
.venv/bin/pytest -n "${COSTWARDEN_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@" 2>&1 \
    | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 5 ] || ! grep -Eq "[0-9]+ passed" "$log"; then
    echo "error: no test ran" >&2
    exit 1
fi
exit "$status"
