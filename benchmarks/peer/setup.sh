#!/usr/bin/env bash
# Sets up benchmarks/.peer-venv (Python 3.11) for the peer runtimes of `make bench`; returns at
# once when it is there. PyTorch: on this project's machines `pip install torch==2.13.0` takes the
# CPU build on local disk; elsewhere, to avoid PyPI's multi-GB CUDA build, set
#   PEER_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=benchmarks/.peer-venv
stamp=$venv/.installed
if [ -f "$stamp" ] && cmp -s "$stamp" benchmarks/peer/requirements.txt; then exit 0; fi
python311=""
for candidate in python3.11 "$HOME/.pyenv/versions/3.11.7/bin/python3.11"; do
  if command -v "$candidate" >/dev/null 2>&1; then python311=$(command -v "$candidate"); break; fi
done
if [ -z "$python311" ]; then
  echo "bench: the peer runtimes need Python 3.11 (python3.11 on PATH); install it, or run benchmarks without --peer" >&2
  exit 1
fi
echo "bench: creating $venv with $python311 (ONNX Runtime, PyTorch, transformers; not in the project's lock)" >&2
"$python311" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ${PEER_PIP_ARGS:-} -r benchmarks/peer/requirements.txt
cp benchmarks/peer/requirements.txt "$stamp"
