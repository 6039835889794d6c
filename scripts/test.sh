#!/usr/bin/env bash
# Installs costwarden with its test extras into .venv and runs lint, types and the whole suite.
# Exits non-zero when anything fails, and when no test ran at all.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is written (to the gitignored __pycache__ folders) even where the machine turns it off
# for everything: with PYTHONDONTWRITEBYTECODE set, every pytest worker re-rewrote the asserts of
# all 489 test modules and every CLI and gateway subprocess recompiled the package from source
# (measured: collecting the suite 24.7 s -> 7.4 s, `costwarden --help` 1.14 s -> 0.90 s).
unset PYTHONDONTWRITEBYTECODE

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# The browser tests (tests/browser) drive Debian's Chromium with Playwright (never a browser
# that Playwright downloads): install the package when it is missing (fonts-liberation: the
# fonts that Chromium recommends, for the screenshots in docs/screenshots).
if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (Debian's package)"
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        as_root=(sudo)
    fi
    apt_install() {
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
    }
    if ! apt_install; then
        "${as_root[@]}" apt-get update -qq
        apt_install
    fi
fi

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy (strict)"
.venv/bin/mypy
echo "== import contracts (layers, no cycles)"
.venv/bin/lint-imports
# Two phases: most tests in three workers (COSTWARDEN_TEST_WORKERS to change), then the
# "serial" ones one at a time (tests/conftest.py: those that share a Redis database, and the
# end-to-end tests that time real processes). Three on a 2-core machine: the tests wait on
# loopback servers and subprocesses much of the time (the phase used 134 % CPU with three);
# measured 2026-12-03, the phase took 594 s with two workers, 481 s with three, 480 s with four.
run_phase() {
    local title="$1" log="$2"
    shift 2
    echo "== pytest ($title)"
    set +e
    .venv/bin/pytest --durations=10 "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    set -e
    return "$status"
}
parallel_log="$(mktemp)"
serial_log="$(mktemp)"
status=0
run_phase "in parallel" "$parallel_log" -n "${COSTWARDEN_TEST_WORKERS:-3}" -m "not serial" "$@" \
    || status=$?
serial=0
run_phase "one at a time" "$serial_log" -m serial "$@" || serial=$?
# Exit 5 is "no test selected": a phase may select none when given a few paths, not both.
for code in "$status" "$serial"; do
    if [ "$code" -ne 0 ] && [ "$code" -ne 5 ]; then
        exit "$code"
    fi
done
if ! grep -Eq "[0-9]+ passed" "$parallel_log" "$serial_log"; then
    echo "error: no test ran" >&2
    exit 1
fi
exit 0
