"""Hides the start-up messages of TFX's imports that say nothing about the run, and only those.

local_runner.py and kubeflow_runner.py import this module first (after their environment
settings), before anything imports TensorFlow or TFX; importing it is what installs the two
filters, since the runners do nothing else with it. Without them a run's first screen held
several FutureWarnings and three CUDA errors, on a machine without a GPU, before its first line.

- FutureWarning "You are using a non-supported Python version (3.10...)": google.api_core's
  `_python_version_support` issues one for each Google client library TFX imports (api_core,
  bigquery, bigquery_storage, pubsub; aiplatform's v1, v1beta1 and schema modules under the
  Kubeflow runner). It is Google's support calendar, not this run's problem: TFX 1.16 pins the
  lock to Python 3.10. The filter names both that module and that message, so any other
  FutureWarning, from Google's libraries too, still shows.
- "Unable to register cuDNN factory" (and cuFFT, cuBLAS): "Attempting to register factory for
  plugin ... when one has already been registered". TensorFlow 2.16's wheel links XLA's CUDA
  plugins into both libtensorflow_framework.so.2 and libtensorflow_cc.so.2, so loading them
  registers each plugin twice, and the second registration is logged at ERROR while
  `import tensorflow` loads the libraries, GPU or not. No setting hides these lines alone:
  TF_CPP_MIN_LOG_LEVEL=2 hides only INFO and WARNING and 3 would hide every error;
  CUDA_VISIBLE_DEVICES="" and GLOG_minloglevel change nothing (TensorFlow's tsl logging reads
  neither; measured). So TensorFlow's first import runs with file descriptor 2 through a pipe
  that drops exactly those three lines and copies every other line on to stderr as it comes;
  fd 2 is restored as soon as that import ends, error or not.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import threading
import warnings

PYTHON_VERSION_WARNING = r"You are using a non-supported Python version"
PYTHON_VERSION_WARNING_MODULE = r"google\.api_core\._python_version_support$"
CUDA_FACTORY_LINE = re.compile(rb"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory "
                               rb"for plugin cu(DNN|FFT|BLAS) when one has already been registered")


class _DroppingStderr:
    """File descriptor 2 through a pipe while inside: lines matching `pattern` are dropped, the
    rest is copied to the real stderr line by line (C and C++ code writes to the descriptor,
    not to sys.stderr, so only a descriptor-level filter sees TensorFlow's log lines)."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern

    def __enter__(self):
        sys.stderr.flush()
        self._stderr = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)  # fd 2 holds the only write end: restoring it ends the copy
        self._copier = threading.Thread(target=self._copy, args=(read,), name="quiet-startup-stderr", daemon=True)
        self._copier.start()
        return self

    def _copy(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if not self.pattern.search(line):
                    os.write(self._stderr, line)

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._stderr, 2)
        # A process started during the import may hold the pipe open; do not wait on it.
        self._copier.join(timeout=5)
        os.close(self._stderr)
        return False


class _QuietLoader(importlib.abc.Loader):
    """tensorflow's own loader, run with the CUDA factory lines dropped from stderr."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            with _DroppingStderr(CUDA_FACTORY_LINE):
                self._loader.exec_module(module)
        finally:
            # Afterwards tensorflow is as if imported without this hook.
            module.__loader__ = module.__spec__.loader = self._loader


class _FirstTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first `import tensorflow` (the one that loads its libraries), then
    leaves the import system; `--help` and the rest that never import TensorFlow pay nothing."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


warnings.filterwarnings("ignore", message=PYTHON_VERSION_WARNING, category=FutureWarning,
                        module=PYTHON_VERSION_WARNING_MODULE)
if "tensorflow" not in sys.modules and not any(isinstance(f, _FirstTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _FirstTensorFlowImport())
