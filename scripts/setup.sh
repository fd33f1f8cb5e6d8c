#!/usr/bin/env bash
# Create .venv (Python 3.11, 3.12 or 3.13) and install lookalike with its test tools, at the exact
# versions of constraints.txt (torch 2.15.0 + torchvision 0.29.1 from PyPI). Idempotent and quick
# when nothing changed: the install is skipped while pyproject.toml, constraints.txt and the
# Python version are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

supported() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }

if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null && supported "$candidate"; then
            PYTHON=$(command -v "$candidate")
            break
        fi
    done
fi
if [ -z "${PYTHON:-}" ] || ! supported "$PYTHON"; then
    echo "lookalike needs Python 3.11, 3.12 or 3.13 (found ${PYTHON:-none}); set PYTHON=/path/to/python3.x" >&2
    exit 1
fi
if [ -x .venv/bin/python ] && ! supported .venv/bin/python; then
    echo ".venv has an unsupported Python ($(.venv/bin/python --version)); remove .venv and run again" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.lookalike-installed
want=$(cat pyproject.toml constraints.txt <(.venv/bin/python --version) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
    echo "$want" > "$stamp"
fi
# The console's browser test drives Debian's chromium, headless (playwright's own browser
# download cannot work offline). Installed when missing and possible (root with apt-get).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the console's browser test" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
            || echo "could not install chromium: the console's browser test will fail" >&2
    else
        echo "chromium is missing: run 'apt-get install chromium' as root for the console's" \
            "browser test" >&2
    fi
fi
echo "lookalike is installed in .venv ($(.venv/bin/lookalike --version))"
