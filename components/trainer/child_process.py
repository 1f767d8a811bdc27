"""Runs one phase of the Trainer (train or export) in a fresh Python process, and waits for it.

    python -m components.trainer.child_process PHASE JOB_FILE ERROR_FILE PARENT_PID

Why a process of its own: see module.run_fn. The phases themselves are in phases.py, which
imports neither this module nor module.py. multiprocessing's spawn would re-import the
runner's __main__ (and with it TFX and Beam) in the child, so this starts the interpreter
itself. The child dies with its parent (PR_SET_PDEATHSIG): a killed pipeline must not leave a
training that keeps writing checkpoints under a resumed one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile

PHASES = ("train", "export")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class TrainerProcessError(RuntimeError):
    """A phase's process failed; the message is the child's error, its traceback is in the log above."""


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_phase(phase: str, job) -> None:
    """Runs phases.<phase>_phase(job) in a child process; raises TrainerProcessError if it fails."""
    if phase not in PHASES:
        raise ValueError(f"unknown Trainer phase {phase!r} (one of {PHASES})")
    with tempfile.TemporaryDirectory(prefix=f"bertqa-{phase}-") as scratch:
        job_file, error_file = os.path.join(scratch, "job.json"), os.path.join(scratch, "error.txt")
        with open(job_file, "w") as f:
            f.write(job.to_json())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
        logging.info("Trainer: %s in a process of its own", phase)
        # Its output goes where this process's goes (the run's log).
        code = subprocess.call([sys.executable, "-m", "components.trainer.child_process", phase, job_file,
                                error_file, str(os.getpid())], env=env)
        if code != 0:
            error = ""
            if os.path.exists(error_file):
                with open(error_file) as f:
                    error = f.read().strip()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            if code == -signal.SIGKILL and not error:
                how += " (if nothing else killed it, the system ran out of memory)"
            raise TrainerProcessError(f"the Trainer's {phase} process {how}"
                                      + (f": {error}" if error else "") + " (its log is above)")


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent ended before the line above took effect
        sys.exit(f"the Trainer's process {parent_pid} ended before this {sys.argv[1]} process started")


def _main(argv: list[str]) -> int:
    phase, job_file, error_file, parent_pid = argv
    _die_with_parent(int(parent_pid))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from components.trainer import phases  # imports TensorFlow

    with open(job_file) as f:
        job = phases.TrainingJob.from_json(f.read())
    try:
        getattr(phases, f"{phase}_phase")(job)
    except BaseException as error:
        with open(error_file, "w") as f:
            f.write(f"{type(error).__name__}: {error}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
