#!/usr/bin/env bash
# Sets up everything `make run` and `make test` need, and only what is missing:
#   1. uv (the resolver/installer; pip's resolver backtracks for many minutes on this stack),
#   2. a Python 3.10 virtual environment in .venv with exactly the versions in requirements.lock,
#   3. the system library libusb-1.0 that tflite-support loads at import time,
#   4. the offline default model (all-MiniLM-L6-v2) in the model cache.
# On a machine that already has all of it, it checks and returns in a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.lock-sha256"
export UV_PYTHON_DOWNLOADS=never   # use a local Python 3.10; uv must not fetch one from the internet

find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
  if [ -x .tools/bin/uv ]; then echo .tools/bin/uv; return; fi
  echo "setup: installing uv into .tools/ (from PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target .tools 'uv==0.13.9' >&2
  echo .tools/bin/uv
}

runs_python310() {
  "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

find_python310() {
  # A pyenv shim can be on PATH and still fail ("command not found" for a version that is
  # installed but not selected), so every candidate is run, not just looked up.
  local candidate
  for candidate in "$(command -v python3.10 2>/dev/null)" "$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10 \
                   /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && runs_python310 "$candidate"; then
      echo "$candidate"; return
    fi
  done
  if candidate=$("$1" python find 3.10 2>/dev/null) && runs_python310 "$candidate"; then
    echo "$candidate"; return
  fi
  echo "setup: Python 3.10 not found (TFX 1.16 needs Python 3.9 or 3.10). Install it, e.g. 'pyenv install 3.10', and run again." >&2
  exit 1
}

lock_sha=$(sha256sum requirements.lock setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sha" ]; then
  uv=$(find_uv)
  python310=$(find_python310 "$uv")
  if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $python310"
    # --seed puts pip in the venv: TFX installs module-file wheels with `python -m pip`.
    "$uv" venv --seed --quiet --python "$python310" "$venv"
  fi
  echo "setup: installing the locked dependencies (requirements.lock)"
  "$uv" pip sync --quiet --python "$venv/bin/python" requirements.lock
  # The project itself, editable and without resolving again: the lock has every dependency.
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps --editable .
  echo "$lock_sha" > "$stamp"
fi

if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libusb-1.0 (tflite-support needs it)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0) >/dev/null
  else
    echo "setup: tflite-support needs libusb-1.0; install it with: sudo apt-get install -y libusb-1.0-0" >&2
    exit 1
  fi
fi

"$venv/bin/python" -m bertqa.model.model_cache >/dev/null
