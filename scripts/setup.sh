#!/usr/bin/env bash
# Sets up everything `make run` and `make test` need, and only what is missing:
#   1. uv (the resolver/installer; pip's resolver backtracks for many minutes on this stack),
#   2. a Python 3.10 virtual environment in .venv with exactly the versions in requirements.lock
#      (from a local Python 3.10, else from one of uv's managed Pythons, downloaded once),
#   3. the system library libusb-1.0 that tflite-support loads at import time,
#   4. the offline default model (all-MiniLM-L6-v2) in the model cache.
# On a machine that already has all of it, it checks and returns in a few seconds.
#
#   BERTQA_NO_PYTHON_DOWNLOAD=1         use a local Python 3.10 only; never download one
#   BERTQA_PYTHON_DOWNLOAD_TIMEOUT=600  seconds that 'uv python install 3.10' may take
#
# Sourcing this file defines its functions without running the setup (tests/test_setup_python.py).
set -euo pipefail

# Where a Python 3.10 is looked for after the one on PATH and pyenv's (the tests replace the list).
python310_fixed_candidates=(/usr/bin/python3.10 /usr/local/bin/python3.10)

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

local_python310() {
  # A pyenv shim can be on PATH and still fail ("command not found" for a version that is
  # installed but not selected), so every candidate is run, not just looked up.
  local candidate pyenv_root
  local -a candidates=()
  if candidate=$(command -v python3.10 2>/dev/null); then candidates+=("$candidate"); fi
  if pyenv_root=$(pyenv root 2>/dev/null) && [ -n "$pyenv_root" ]; then
    candidates+=("$pyenv_root"/versions/3.10*/bin/python3.10)
  fi
  candidates+=(${python310_fixed_candidates[@]+"${python310_fixed_candidates[@]}"})
  for candidate in ${candidates[@]+"${candidates[@]}"}; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && runs_python310 "$candidate"; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

uv_python310() {  # $1: uv. A Python 3.10 uv already has (PATH, a venv here, its managed Pythons).
  local found
  if found=$(UV_PYTHON_DOWNLOADS=never "$1" python find 3.10 2>/dev/null) \
     && [ -n "$found" ] && runs_python310 "$found"; then
    echo "$found"; return 0
  fi
  return 1
}

install_python310() {  # $1: uv. One of uv's managed Pythons (python-build-standalone, from GitHub).
  local limit="${BERTQA_PYTHON_DOWNLOAD_TIMEOUT:-600}" status=0
  local -a time_limit=()
  # uv's own HTTP timeouts (UV_HTTP_TIMEOUT, UV_HTTP_CONNECT_TIMEOUT) end most offline attempts;
  # the limit bounds the rest (a black-holed or very slow network), so setup cannot hang.
  if timeout --foreground 5 true >/dev/null 2>&1; then time_limit=(timeout --foreground "$limit"); fi
  echo "setup: no local Python 3.10; installing one with 'uv python install 3.10' (uv's managed Pythons)" >&2
  # The only command allowed to download a Python (UV_PYTHON_DOWNLOADS=never refuses even this one).
  UV_PYTHON_DOWNLOADS=automatic ${time_limit[@]+"${time_limit[@]}"} "$1" python install 3.10 >&2 || status=$?
  if [ "$status" = 124 ] && [ ${#time_limit[@]} -gt 0 ]; then
    echo "setup: 'uv python install 3.10' did not finish within ${limit}s (BERTQA_PYTHON_DOWNLOAD_TIMEOUT)" >&2
  elif [ "$status" != 0 ]; then
    echo "setup: 'uv python install 3.10' failed (exit status $status, uv's error above)" >&2
  fi
  return "$status"
}

find_python310() {  # $1: uv. Prints the path of a Python 3.10, or says why there is none and exits 1.
  local found
  if found=$(local_python310) || found=$(uv_python310 "$1"); then
    echo "$found"; return 0
  fi
  if [ -n "${BERTQA_NO_PYTHON_DOWNLOAD:-}" ] && [ "$BERTQA_NO_PYTHON_DOWNLOAD" != 0 ]; then
    echo "setup: no local Python 3.10, and BERTQA_NO_PYTHON_DOWNLOAD is set: not downloading one" >&2
  elif install_python310 "$1"; then
    if found=$(uv_python310 "$1"); then
      echo "$found"; return 0
    fi
    echo "setup: 'uv python install 3.10' succeeded, but 'uv python find 3.10' gives no working Python 3.10" >&2
  fi
  echo "setup: Python 3.10 not found (TFX 1.16 needs Python 3.9 or 3.10). Install it, e.g." \
       "'pyenv install 3.10' or 'uv python install 3.10', and run again." >&2
  exit 1
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local venv=.venv
  local stamp="$venv/.lock-sha256"
  local lock_sha uv python310
  # uv must not fetch a Python by itself; find_python310 is the one place that may ask it to.
  export UV_PYTHON_DOWNLOADS=never

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
    # --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines),
    # nothing caches bytecode at import, and every process (each test's pipeline, each Trainer
    # and Beam worker process) compiled TensorFlow, TFX and Beam again: 30-70 s per process here.
    "$uv" pip sync --quiet --compile-bytecode --python "$venv/bin/python" requirements.lock
    # The project itself, editable and without resolving again: the lock has every dependency.
    "$uv" pip install --quiet --python "$venv/bin/python" --no-deps --editable .
    echo "$lock_sha" > "$stamp"
  fi

  # grep reads all of ldconfig's list (no -q): an early exit would fail the pipe under pipefail.
  if ! /sbin/ldconfig -p 2>/dev/null | grep 'libusb-1.0.so.0' >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing libusb-1.0 (tflite-support needs it)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0) >/dev/null
    else
      echo "setup: tflite-support needs libusb-1.0; install it with: sudo apt-get install -y libusb-1.0-0" >&2
      exit 1
    fi
  fi

  "$venv/bin/python" -m bertqa.model.model_cache >/dev/null
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
