"""Which Beam DirectRunner mode should the local pipeline use? Measures both on real data.

Runs the data components of the pipeline (SquadExampleGen, StatisticsGen, SchemaGen,
ExampleValidator, BertQATransform: everything that runs on Beam) with LocalDagRunner,
caching off, once per mode, and prints wall times and their ratio measured in the same run:

    python benchmarks/beam_modes.py --data-dir data/sample
    python benchmarks/beam_modes.py --data-dir ../shared/data --train-pattern squad-v1.1-train.json --eval-pattern ''
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import local_runner  # noqa: E402
from pipeline import options  # noqa: E402


def run_data_components(args: list[str], beam_mode: str, runs_dir: str) -> float:
    from tfx import v1 as tfx

    from pipeline.pipeline import create_data_pipeline

    config = local_runner.build_config(local_runner.parse_args(
        [*args, "--runs-dir", runs_dir, "--beam-mode", beam_mode, "--no-cache"]))
    data_only = create_data_pipeline(config, tfx.orchestration.metadata.sqlite_metadata_connection_config(
        os.path.join(runs_dir, "metadata.sqlite")))
    started = time.monotonic()
    tfx.orchestration.LocalDagRunner().run(data_only)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/sample")
    parser.add_argument("--train-pattern", default="train.json")
    parser.add_argument("--eval-pattern", default="eval.json")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runner_args = ["--data-dir", args.data_dir, "--train-pattern", args.train_pattern,
                   "--eval-pattern", args.eval_pattern]
    # TensorFlow and TFX are imported once, before timing, as they are in a real run.
    run_data_components(runner_args, "in_process", tempfile.mkdtemp(prefix="beam_warmup_"))
    times: dict[str, list[float]] = {mode: [] for mode in options.BEAM_MODES}
    for _ in range(args.repeats):
        for mode in times:  # interleaved, so both modes see the same machine load
            times[mode].append(run_data_components(runner_args, mode, tempfile.mkdtemp(prefix=f"beam_{mode}_")))
    best = {mode: min(values) for mode, values in times.items()}
    for mode, seconds in best.items():
        print(f"{mode:17s} {seconds:7.1f} s  (runs: {', '.join(f'{s:.1f}' for s in times[mode])})")
    print(f"multi_processing / in_process = {best['multi_processing'] / best['in_process']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
