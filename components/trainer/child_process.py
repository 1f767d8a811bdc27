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
import socket
import subprocess
import sys
import tempfile
import time

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
        logging.info("Trainer: %s in a process of its own", phase)
        # Its output goes where this process's goes (the run's log).
        code = subprocess.call([sys.executable, "-m", "components.trainer.child_process", phase, job_file,
                                error_file, str(os.getpid())], env=_child_env())
        if code != 0:
            raise TrainerProcessError(f"the Trainer's {phase} process {_how(code, _read(error_file))}"
                                      " (its log is above)")


def free_loopback_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (the system picks them; held together so that they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_local_workers(job, workers: int, poll_seconds: float = 0.5) -> None:
    """Runs the train phase as `workers` processes on this machine's loopback, one TF_CONFIG task each.

    They train as one MultiWorkerMirroredStrategy cluster (bertqa.model.distribution). If one
    fails, a collective in the others would wait for it: they are stopped, and the error names
    the worker that failed. The chief's checkpoints stay, so the same run started again resumes.
    """
    from bertqa.model import distribution  # TensorFlow, which this module does not otherwise need

    ports = free_loopback_ports(workers)
    with tempfile.TemporaryDirectory(prefix="bertqa-train-workers-") as scratch:
        job_file = os.path.join(scratch, "job.json")
        with open(job_file, "w") as f:
            f.write(job.to_json())
        error_files = [os.path.join(scratch, f"error-{i}.txt") for i in range(workers)]
        processes = []
        logging.info("Trainer: training in %d worker processes on 127.0.0.1 (ports %s)", workers,
                     ", ".join(map(str, ports)))
        try:
            for index in range(workers):
                env = _child_env()
                env[distribution.TF_CONFIG_ENV] = distribution.local_cluster_config(ports, index)
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "components.trainer.child_process", "train", job_file,
                     error_files[index], str(os.getpid())], env=env))
            failed = _wait_for_workers(processes, poll_seconds)
        finally:
            for process in processes:  # stopped, whatever ended this (a failure, or this process's own)
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if failed is not None:
            code = processes[failed].returncode
            raise TrainerProcessError(
                f"the Trainer's training worker {failed} of {workers} {_how(code, _read(error_files[failed]))}; "
                f"the other workers were stopped. Run the pipeline again: the training resumes from its "
                f"latest checkpoint, if it wrote one (its log is above)")


def _wait_for_workers(processes, poll_seconds: float) -> int | None:
    """Waits until all end well (None) or one fails: then the index of the one that failed first."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            # A worker whose peer died may end with a collective's error before this poll sees
            # the peer's end: the one killed by a signal is the cause.
            time.sleep(poll_seconds)
            codes = [process.poll() for process in processes]
            signalled = [i for i, code in enumerate(codes) if code is not None and code < 0]
            return (signalled or failed)[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(poll_seconds)


def _read(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read().strip()


def _how(code: int, error: str) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    if code == -signal.SIGKILL and not error:
        how += " (if nothing else killed it, the system ran out of memory)"
    return how + (f": {error}" if error else "")


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
    return env


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
