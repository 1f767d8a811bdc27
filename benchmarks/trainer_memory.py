"""Peak memory and speed of the Trainer's training process, per attention budget.

    .venv/bin/python benchmarks/trainer_memory.py RUNS_DIR [--steps 80] [--budgets 524288,393216]

RUNS_DIR is a finished local run's --runs-dir (`make run` leaves one in runs/): its
BertQATransform windows and tokenizer are the input. For each attention budget
(TrainConfig.attention_budget: windows x tokens^2 per micro-batch; "none" for whole batches;
"xla" for whole batches in XLA-compiled steps, TrainConfig.xla)
this starts a fresh process (peak RSS only grows within a process) that runs the Trainer's
training phase (components/trainer/phases.train_phase, what the pipeline's training process
runs, with the default model, batch 32 and resume checkpoints) for --steps steps, and prints
its peak resident set and its windows per second (graph tracing included). The settings run
one after another; on a shared machine, compare them within one run only.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ONE_BUDGET = """
import dataclasses, glob, json, os, resource, sys, tempfile
sys.path.insert(0, sys.argv[4])
from bertqa.model import model_spec, training
from components.trainer import phases
runs_dir, steps, budget, dropout = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[5]
default_config = training.train_config
# The pipeline has no option for the budget (it is a TrainConfig default), so this sets it here.
training.train_config = lambda *a, **k: dataclasses.replace(
    default_config(*a, **k), attention_budget=None if budget in ("none", "xla") else int(budget))
artifacts = os.path.join(runs_dir, "bertqa", "artifacts", "BertQATransform")
train_files = sorted(glob.glob(os.path.join(artifacts, "transformed_examples", "*", "Split-train", "*")))
transform_outputs = sorted(glob.glob(os.path.join(artifacts, "transform_graph", "*")), key=os.path.getmtime)
if not train_files or not transform_outputs:
    sys.exit(f"no BertQATransform output under {runs_dir}: run `make run` (or local_runner.py --runs-dir) first")
scratch = tempfile.mkdtemp(prefix="trainer-memory-")
spec = model_spec.get("minilm_offline", **({"dropout_rate": float(dropout)} if dropout else {}))
job = phases.TrainingJob(
    train_files=tuple(train_files), transform_output=transform_outputs[-1],
    serving_model_dir=os.path.join(scratch, "Trainer", "model", "1", "Format-Serving"),
    model_run_dir=os.path.join(scratch, "Trainer", "model_run", "1"), train_steps=steps,
    custom_config={"model_spec": model_spec.to_json(spec), "batch_size": 32, "cold_start": True,
                   "xla": budget == "xla"})
phases.train_phase(job)
(trained,) = glob.glob(os.path.join(scratch, "Trainer", "checkpoints", "*", phases.TRAINED_FILE))
with open(trained) as f:
    summary = json.load(f)
from bertqa.operations import report_data
# The median of the 20-step intervals: steady speed, apart from the intervals in which XLA compiled
# a length bucket's first batch.
speeds = sorted(p.windows_per_second for p in report_data.read_training_curve(job.model_run_dir))
print(json.dumps({"steady_windows_per_second": speeds[len(speeds) // 2] if speeds else float("nan"),
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                  "windows_per_second": steps * 32 / summary["training_seconds"],
                  "training_seconds": summary["training_seconds"], "final_loss": summary["final_loss"]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--dropout-rate", default="", help="the spec's dropout rate (default: its own, 0.1)")
    parser.add_argument("--budgets", default="524288,393216",  # 32 x 128^2 (before), 24 x 128^2 (the default)
                        help="comma-separated attention budgets (windows x tokens^2), none or xla")
    args = parser.parse_args()
    print(f"{'attention budget':>18} {'peak RSS (GB)':>14} {'windows/s':>10} {'median of 20 steps':>19} "
          f"{'training (s)':>13} {'loss':>7}")
    for budget in args.budgets.split(","):
        done = subprocess.run([sys.executable, "-c", _ONE_BUDGET, args.runs_dir, str(args.steps), budget, REPO,
                               args.dropout_rate],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-3000:])
            return done.returncode
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{budget:>18} {result['peak_gb']:>14.2f} {result['windows_per_second']:>10.2f} "
              f"{result['steady_windows_per_second']:>19.2f} "
              f"{result['training_seconds']:>13.1f} {result['final_loss']:>7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
