#!/usr/bin/env bash
# Create .venv (Python 3.11) and install lookalike with its test tools. Idempotent and quick
# when nothing changed: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "lookalike needs Python 3.11 (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.lookalike-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch 2.15.0 + torchvision 0.29.1 come from PyPI (CUDA build; runs on the CPU too).
    .venv/bin/python -m pip install --quiet -e '.[test]'
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
