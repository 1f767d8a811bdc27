"""pipeline/quiet_startup.py: the runners' start-up hides TFX's Python-version FutureWarnings and
TensorFlow's duplicate CUDA factory lines, and nothing else.

Each check runs in a fresh interpreter: both messages come once per process, at the first import
of TensorFlow and the Google client libraries, which this test process has long done.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _stderr_of(code: str) -> str:
    # The runners' own environment settings, and no PYTHONWARNINGS or pytest filters of ours.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.e2e
def test_the_runners_start_up_hides_the_python_version_warnings_and_cuda_factory_lines_only():
    # local_runner's start-up path, then what a run imports: TFX with its Google client libraries.
    stderr = _stderr_of(
        "import warnings\n"
        "import local_runner\n"
        "import tfx.v1\n"
        "warnings.warn('a FutureWarning of another module', FutureWarning)\n"
        "warnings.warn_explicit('You are using a non-supported Python version (elsewhere)', FutureWarning,\n"
        "                       'other.py', 1, module='other')\n")
    assert "Unable to register" not in stderr, stderr
    assert "non-supported Python version (3." not in stderr, stderr
    # Narrow: the same category from elsewhere, even with the same words, still shows.
    assert "FutureWarning: a FutureWarning of another module" in stderr, stderr
    assert "non-supported Python version (elsewhere)" in stderr, stderr


def test_the_descriptor_filter_drops_the_cuda_factory_lines_and_passes_every_other_line():
    stderr = _stderr_of(
        "import os\n"
        "from pipeline import quiet_startup\n"
        "with quiet_startup._DroppingStderr(quiet_startup.CUDA_FACTORY_LINE):\n"
        "    os.write(2, b'E cuda_dnn.cc:10575] Unable to register cuDNN factory: Attempting to register factory '\n"
        "                b'for plugin cuDNN when one has already been registered\\n')\n"
        "    os.write(2, b'E some_op.cc:1] a real error\\n')\n"
        "    os.write(2, b'E cuda_blas.cc:1442] Unable to register cuBLAS factory: something else\\n')\n"
        "os.write(2, b'after the import\\n')\n")
    assert stderr.splitlines() == ["E some_op.cc:1] a real error",
                                   "E cuda_blas.cc:1442] Unable to register cuBLAS factory: something else",
                                   "after the import"], stderr
