#!/usr/bin/env bash
# Creates (if missing) the Python virtual environment <repo>/.venv and installs
# scripts/requirements.txt into it; prints the venv's python path on stdout.
#
# Idempotent and quick when everything is already installed. Works from any
# working directory. On a fresh Debian/Ubuntu machine without the venv module
# it installs python3-venv with apt-get when run as root.
#
# Environment: PYTHON (default python3) picks the interpreter the venv is made from.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
req="$repo/scripts/requirements.txt"
python="${PYTHON:-python3}"

log() { echo "setup-python: $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
    if ! command -v "$python" >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "$python not found; installing python3 and python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update >&2
            apt-get install -y python3 python3-venv >&2
        fi
        command -v "$python" >/dev/null || { log "error: $python not found; install Python 3.10+"; exit 1; }
    fi
    log "creating $venv"
    if ! "$python" -m venv "$venv" >&2; then
        rm -rf "$venv"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            log "python venv module missing; installing python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update >&2
            apt-get install -y python3-venv >&2 || true
            # Debian splits ensurepip per minor version (python3.X-venv).
            apt-get install -y "python${pyver}-venv" >&2 2>/dev/null || true
            "$python" -m venv "$venv" >&2
        else
            log "error: '$python -m venv' failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv) or rerun as root"
            exit 1
        fi
    fi
fi

vpy="$venv/bin/python"

# Fast path: every pinned requirement is already installed at its exact version.
satisfied() {
    "$vpy" - "$req" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if version(name.strip()) != want.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! satisfied; then
    log "installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned packages from scripts/requirements.txt"
    "$vpy" -m pip install --disable-pip-version-check -q -r "$req" >&2
    satisfied || { log "error: requirements still not satisfied after pip install"; exit 1; }
fi

echo "$vpy"
