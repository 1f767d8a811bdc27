"""Resident memory of a pipeline run, per process and summed over its process tree, per component.

`/usr/bin/time -v` reports the largest resident set of any one process it waited for; a run
that starts child processes (the Trainer's training process) holds the sum of its processes'
sets at any moment. This samples both, once a second, from /proc, and attributes each sample to
the component TFX was running (from the "Component X is running." log lines). The sum is of
proportional set sizes (Pss: a page shared by two processes, such as TensorFlow's library,
counts half in each), so it is what the tree holds; the largest process is its resident set
(Rss), what `time -v` reports.

    .venv/bin/python benchmarks/pipeline_memory.py -- .venv/bin/python local_runner.py --no-baseline --runs-dir /tmp/mem

Prints one line per component (peak of the tree's sum, peak of its largest process) and the
whole run's peaks; the samples go to --csv when given. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

COMPONENT_LINE = re.compile(r"Component (\w+) is (running|finished)")


def memory_bytes(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of one process, from /proc/PID/smaps_rollup; zeros once it has ended."""
    sizes = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                field, _, rest = line.partition(":")
                if field in ("Rss", "Pss"):
                    sizes[field] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return sizes.get("Rss", 0), sizes.get("Pss", 0)


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name (field 2) is in parentheses and may hold spaces.
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def tree_memory(root: int) -> tuple[int, int, int]:
    """(sum of the tree's proportional set sizes, the largest resident set, how many processes)."""
    children = children_map()
    stack, sizes = [root], []
    while stack:
        pid = stack.pop()
        sizes.append(memory_bytes(pid))
        stack.extend(children.get(pid, []))
    return sum(pss for _, pss in sizes), max(rss for rss, _ in sizes), len(sizes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--csv", default=None, help="write every sample here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name the command to measure after --")

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    current = ["(startup)"]

    def relay() -> None:
        for line in process.stdout:
            sys.stdout.write(line)
            match = COMPONENT_LINE.search(line)
            if match:
                current[0] = match.group(1) if match.group(2) == "running" else f"(after {match.group(1)})"

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    start = time.monotonic()
    samples: list[tuple[float, str, int, int, int]] = []
    while process.poll() is None:
        total, largest, count = tree_memory(process.pid)
        samples.append((time.monotonic() - start, current[0], total, largest, count))
        time.sleep(args.interval)
    reader.join(timeout=5)

    gib = 1024 ** 3
    peaks: dict[str, list[float]] = {}
    for _, phase, total, largest, _ in samples:
        peak = peaks.setdefault(phase, [0, 0])
        peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)
    print(f"\n{'phase':<28} {'tree Pss sum (GiB)':>19} {'largest process Rss (GiB)':>26}")
    for phase, (total, largest) in peaks.items():
        print(f"{phase:<28} {total / gib:>19.2f} {largest / gib:>26.2f}")
    if samples:
        print(f"{'whole run':<28} {max(s[2] for s in samples) / gib:>19.2f} {max(s[3] for s in samples) / gib:>26.2f}"
              f"   ({len(samples)} samples over {samples[-1][0]:.0f} s, exit {process.returncode})")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("seconds,phase,tree_pss_bytes,largest_process_rss_bytes,processes\n")
            for row in samples:
                f.write(",".join(str(v) if not isinstance(v, float) else f"{v:.1f}" for v in row) + "\n")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
