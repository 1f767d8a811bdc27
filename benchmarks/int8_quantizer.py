"""Full int8 (and a16w8) quantization of the QA model with Google's ai-edge-quantizer, scored and timed in LiteRT.

The project's own int8 variant (TF converter, full integer with float fallback) collapses to F1 ~1.3
(benchmarks/RESULTS.md). This script tries ai-edge-quantizer (AEQ) recipes that quantize per op
on the exported float32 .tflite and measures each result exactly like the shipped files:

  float32     the project's float export (reference)            `bertqa export --quantization none`
  dynamic     the project's dynamic-range model.tflite           `bertqa export --quantization dynamic`
  aeq_dynamic_wi8    AEQ dynamic_wi8_afp32 (int8 per-channel weights, float activations)
  aeq_a8w8_all       AEQ default static recipe: every supported op int8 (weights and activations), logits float32
  aeq_a16w8_all      AEQ static 16-bit activations / 8-bit weights on every supported op, logits float32
  aeq_a8w8_fc_bmm    static int8 only FULLY_CONNECTED (the dense layers) and BATCH_MATMUL (attention);
                     LayerNorm (whose mean/variance are FULLY_CONNECTED ops named *_norm/MatMul*), softmax,
                     GELU, residual adds and the -10000 mask arithmetic stay float32
  aeq_a8w8_fc        static int8 only on the dense FULLY_CONNECTED layers; attention matmuls float too
  aeq_a8w8_fc_gather as aeq_a8w8_fc, plus the embedding lookups (GATHER) int8, for a ~23 MB file
  aeq_a8w8_fc_ffn_dyn as aeq_a8w8_fc, but the FFN down-projections (layer_N/output_dense) dynamic-range int8
  aeq_a8w8_fc_ffn_dyn_gather  both of the above (int8 embeddings too)
  aeq_a8w8_fc_ffn_dynpt_gather  as that, with per-tensor FFN down-projection weights (for the Task Library)
  aeq_a16w8_fc_bmm   as aeq_a8w8_fc_bmm with 16-bit activations

For each file: size, SQuAD EM/F1 on the eval split in LiteRT (1 thread, via `bertqa evaluate`), LiteRT
median ms per 384-token window at 1 and 2 threads, the ops XNNPACK takes and leaves out, and
(--task-library) whether the Task Library's BertQuestionAnswerer loads and scores it.

AEQ needs a newer Python/protobuf than the project venv, so it lives in its own venv and this
script runs itself there for the quantize step only (it imports nothing but numpy and
ai_edge_quantizer in that step). Calibration inputs (the same 100 training windows the project's int8
export calibrates on) are written by the project venv to an .npz and read in the AEQ venv.
AEQ keeps the model's metadata but drops the packed vocab.txt, and stores the weights after the
flatbuffer (Buffer.offset), which tflite-support's metadata writer would drop; so the buffers are moved
back inline and the Task Library metadata is written again with bertqa.on_device.task_metadata.

Run (from /work/main; about 3 min per recipe on one core, longer for the a16w8 ones):

    python3.11 -m venv /tmp/aeq-venv && /tmp/aeq-venv/bin/pip install ai-edge-quantizer
    TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_quantizer.py \\
        --aeq-python /tmp/aeq-venv/bin/python \\
        --model /tmp/freshrun/runs/bertqa/artifacts/Trainer/model/5/Format-Serving \\
        --work-dir /tmp/int8work --task-library float32 dynamic aeq_dynamic_wi8 aeq_a8w8_fc_bmm \\
        aeq_a8w8_fc_gather aeq_a8w8_fc_ffn_dyn aeq_a8w8_fc_ffn_dyn_gather aeq_a8w8_fc_ffn_dynpt_gather

Files slower than --slow-ms per window (the a16w8 ones: LiteRT's XNNPACK has no int16 kernels) are
scored on the first --subset-questions questions only, against float32 on the same subset. At the end
the fast files are timed again round-robin (--interleaved-rounds), so that load from other processes
on the machine hits all of them alike.

Results go to <work-dir>/results.json and a markdown table on stdout. Existing files in the work
dir are reused (delete them to redo a step); --recipes picks a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")

_WEIGHTS_INT8 = {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"}
# LayerNorm's mean and variance are matmuls with a constant 1/384 column in this graph.
LAYER_NORM_STATS = "_norm/MatMul"


def _static(activation_bits: int) -> dict:
    return {
        # AEQ's own defaults: asymmetric int8, symmetric int16 activations, per tensor.
        "activation_tensor_config": {
            "num_bits": activation_bits,
            "symmetric": activation_bits == 16,
            "granularity": "TENSORWISE",
            "dtype": "INT",
        },
        "weight_tensor_config": dict(_WEIGHTS_INT8),
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "skip_checks": False,
        "min_weight_elements": 0,
    }


def _entry(operation: str, op_config: dict | None, regex: str = ".*") -> dict:
    if op_config is None:
        return {"regex": regex, "operation": operation, "algorithm_key": "no_quantize", "op_config": {}}
    return {"regex": regex, "operation": operation, "algorithm_key": "min_max_uniform_quantize", "op_config": op_config}


def _selective(activation_bits: int, operations: tuple[str, ...]) -> list[dict]:
    # Later entries win in AEQ: the LayerNorm statistics FCs are taken back out.
    return [_entry(op, _static(activation_bits)) for op in operations] + [
        _entry("FULLY_CONNECTED", None, regex=LAYER_NORM_STATS)
    ]


_DYNAMIC = {
    "weight_tensor_config": dict(_WEIGHTS_INT8),
    "compute_precision": "INTEGER",
    "explicit_dequantize": False,
    "skip_checks": False,
    "min_weight_elements": 0,
}
# The FFN down-projections (input: the GELU output, 1536 wide); "layer_N/attention/output_dense" does not match.
FFN_OUT = r"layer_\d+/output_dense"

RECIPES: dict[str, list[dict]] = {
    "aeq_dynamic_wi8": [_entry("*", dict(_DYNAMIC))],
    # AEQ's default a8w8 / a16w8 recipes, but with the logits left float32 (the Task Library and the
    # evaluator read float32 outputs; "*" would make them int8 / int16).
    "aeq_a8w8_all": [_entry("*", _static(8)), _entry("OUTPUT", None)],
    "aeq_a16w8_all": [_entry("*", _static(16)), _entry("OUTPUT", None)],
    "aeq_a8w8_fc_bmm": _selective(8, ("FULLY_CONNECTED", "BATCH_MATMUL")),
    "aeq_a8w8_fc": _selective(8, ("FULLY_CONNECTED",)),
    # As aeq_a8w8_fc, and the embedding tables (GATHER) int8 per tensor: the file shrinks from 59 to ~23 MB.
    "aeq_a8w8_fc_gather": _selective(8, ("FULLY_CONNECTED", "GATHER")),
    # As aeq_a8w8_fc, but the 6 FFN down-projections dynamic-range (int8 weights, activations quantized per run).
    "aeq_a8w8_fc_ffn_dyn": [*_selective(8, ("FULLY_CONNECTED",)), _entry("FULLY_CONNECTED", dict(_DYNAMIC), FFN_OUT)],
    # Both: the candidate that ships (~24 MB).
    "aeq_a8w8_fc_ffn_dyn_gather": [
        *_selective(8, ("FULLY_CONNECTED", "GATHER")),
        _entry("FULLY_CONNECTED", dict(_DYNAMIC), FFN_OUT),
    ],
    # As that, with per-tensor FFN weights: the Task Library's 2023 runtime misreads per-channel hybrid FCs.
    "aeq_a8w8_fc_ffn_dynpt_gather": [
        *_selective(8, ("FULLY_CONNECTED", "GATHER")),
        _entry(
            "FULLY_CONNECTED",
            {**_DYNAMIC, "weight_tensor_config": {**_WEIGHTS_INT8, "granularity": "TENSORWISE"}},
            FFN_OUT,
        ),
    ],
    "aeq_a16w8_fc_bmm": _selective(16, ("FULLY_CONNECTED", "BATCH_MATMUL")),
}
DEFAULT_RECIPES = (
    "aeq_dynamic_wi8",
    "aeq_a8w8_all",
    "aeq_a8w8_fc_bmm",
    "aeq_a8w8_fc",
    "aeq_a8w8_fc_gather",
    "aeq_a8w8_fc_ffn_dyn",
    "aeq_a8w8_fc_ffn_dyn_gather",
    "aeq_a8w8_fc_ffn_dynpt_gather",
    "aeq_a16w8_fc_bmm",
    "aeq_a16w8_all",
)


# --- The quantize step: runs in the AEQ venv ------------------------------------------------------


def quantize(float_path: str, recipe_path: str, calibration_path: str, output: str, windows: int) -> None:
    """AEQ on `float_path` with the recipe JSON at `recipe_path`, calibrated on the .npz's first `windows` rows."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer

    with open(recipe_path) as f:
        recipe = json.load(f)
    qt = quantizer.Quantizer(float_path, recipe)
    calibration = None
    if qt.need_calibration:
        signature = next(iter(Interpreter(model_path=float_path).get_signature_list()))
        data = np.load(calibration_path)
        samples = [
            {name: data[name][i : i + 1].astype(np.int32) for name in INPUT_NAMES}
            for i in range(min(windows, len(data["input_word_ids"])))
        ]
        started = time.monotonic()
        calibration = qt.calibrate({signature: samples}, num_threads=1)
        print(f"calibrated on {len(samples)} windows in {time.monotonic() - started:.0f}s", file=sys.stderr)
    qt.quantize(calibration).export_model(output, overwrite=True)


# --- Everything else: runs in the project venv ----------------------------------------------------


def _run(command: list[str]) -> str:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=PROJECT, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed with exit code {done.returncode}")
    return done.stdout


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertqa_cli", *args]


def _export(model: str, work: str, quantization: str) -> str:
    path = os.path.join(work, {"none": "model_float32.tflite"}.get(quantization, f"model_{quantization}.tflite"))
    if not os.path.exists(path):
        _run(
            _cli(
                "export",
                "--model",
                model,
                "--output-dir",
                work,
                "--quantization",
                quantization,
                "--filename",
                os.path.basename(path),
            )
        )
    return path


def _calibration_npz(model: str, data: str, work: str, windows: int) -> str:
    import numpy as np

    path = os.path.join(work, "calibration.npz")
    if os.path.exists(path):
        return path
    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device.conversion import pad_window
    from components.tflite_exporter import core

    vocab = os.path.join(model, "assets", "vocab.txt")
    _, train = evaluation.squad_file_windows(
        data, TokenizerConfig(vocab, True), WindowConfig(seq_len=384), False, is_training=True
    )
    # The windows the project's int8 export calibrates on (spread evenly over the training windows).
    padded = [pad_window(w, 384) for w in core.representative_windows(train, windows)]
    np.savez(path, **{name: np.concatenate([p[name] for p in padded]) for name in INPUT_NAMES})
    return path


def inline_buffers(model: bytes) -> bytes:
    """The model with every buffer inside the flatbuffer.

    AEQ writes each constant after the flatbuffer (Buffer.offset/size), a layout the metadata writer's
    older schema does not know: it re-serializes the flatbuffer and drops the weights.
    """
    import flatbuffers
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    for buffer in tree.buffers or []:
        if buffer.offset and buffer.offset > 1:
            buffer.data = np.frombuffer(model, np.uint8, count=buffer.size, offset=buffer.offset)
        buffer.offset, buffer.size = 0, 0
    builder = flatbuffers.Builder(len(model) + (1 << 20))
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _aeq(aeq_python: str, name: str, float_path: str, calibration: str, work: str, windows: int, vocab: str) -> str:
    from bertqa.on_device import task_metadata

    path = os.path.join(work, f"{name}.tflite")
    if os.path.exists(path):
        return path
    recipe_path = os.path.join(work, f"{name}.recipe.json")
    with open(recipe_path, "w") as f:
        json.dump(RECIPES[name], f, indent=1)
    raw = os.path.join(work, f"{name}.raw.tflite")
    started = time.monotonic()
    _run(
        [
            aeq_python,
            os.path.abspath(__file__),
            "quantize",
            "--float",
            float_path,
            "--recipe",
            recipe_path,
            "--calibration",
            calibration,
            "--output",
            raw,
            "--windows",
            str(windows),
        ]
    )
    print(f"{name}: quantized in {time.monotonic() - started:.0f}s", file=sys.stderr)
    with open(raw, "rb") as f:
        model = f.read()
    with open(path, "wb") as f:
        f.write(task_metadata.add_task_library_metadata(inline_buffers(model), vocab))
    os.remove(raw)
    return path


def _op_counts(path: str) -> dict[str, int]:
    import collections

    from bertqa.on_device.runtime import open_interpreter

    ops = open_interpreter(path, 1)._get_ops_details()  # noqa: SLF001
    return dict(collections.Counter(op["op_name"] for op in ops))


def subset_file(data: str, work: str, questions: int) -> str:
    """The first `questions` questions of the SQuAD file `data` (whole paragraphs), for files too slow for all."""
    path = os.path.join(work, f"eval_first{questions}.json")
    with open(data) as f:
        squad = json.load(f)
    kept, count = [], 0
    for article in squad["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if count >= questions:
                break
            paragraphs.append(paragraph)
            count += len(paragraph["qas"])
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    with open(path, "w") as f:
        json.dump({**squad, "data": kept}, f)
    return path


def litert_metrics(path: str, data: str) -> dict:
    """SQuAD metrics of the file in LiteRT at 1 thread (`bertqa evaluate`), with the seconds it took."""
    started = time.monotonic()
    metrics = _last_json(
        _run(_cli("evaluate", "--model", path, "--data", data, "--runtime", "litert", "--threads", "1"))
    )
    return {**metrics, "seconds": round(time.monotonic() - started)}


def measure(
    path: str, data: str, subset: str, window: dict, threads: tuple[int, ...], runs: int, slow_ms: float
) -> dict:
    """Size, ops, XNNPACK report, LiteRT latency and LiteRT SQuAD metrics (1 thread) of one file.

    A file slower than `slow_ms` per window at 1 thread is scored on the `subset` file only.
    """
    from bertqa.on_device import runtime

    row: dict = {"file": path, "size_mb": round(os.path.getsize(path) / 1e6, 1)}
    try:
        row["xnnpack"] = runtime.xnnpack_report(path, runtime.LITERT).to_json()
        row["ops"] = _op_counts(path)
        # One timed run first: a file of seconds per window is timed 3 times, not `runs` times,
        # and one of minutes per window is not scored at all.
        probe_ms = runtime.median_latency_seconds(path, window, num_threads=1, runs=1, warmup=0) * 1000
        row["first_run_ms"] = round(probe_ms, 1)
        if probe_ms > 20 * slow_ms:
            row["skipped"] = f"not scored: {probe_ms / 1000:.0f} s per window"
            print(json.dumps(row), file=sys.stderr, flush=True)
            return row
        slow = probe_ms > slow_ms
        for n in threads:
            seconds = runtime.median_latency_seconds(
                path, window, num_threads=n, runs=3 if slow else runs, warmup=0 if slow else 2, runtime=runtime.LITERT
            )
            row[f"ms_{n}_thread"] = round(seconds * 1000, 1)
        if slow:
            row["litert_subset"] = litert_metrics(path, subset)
        else:
            row["litert"] = litert_metrics(path, data)
    except (RuntimeError, ValueError) as error:
        row["error"] = str(error)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def task_library_metrics(path: str, data: str) -> dict:
    """SQuAD metrics as the Task Library's BertQuestionAnswerer answers, or the error it fails with."""
    try:
        return _last_json(
            _run(_cli("evaluate", "--model", path, "--data", data, "--runtime", "task-library", "--threads", "1"))
        )
    except (RuntimeError, ValueError, IndexError) as error:
        return {"error": str(error)}


def interleaved_latency(
    rows: dict[str, dict], window: dict, threads: tuple[int, ...], runs: int, rounds: int, slow_ms: float
) -> None:
    """Times every fast file again, round-robin over the files `rounds` times (so that load from other
    processes on the machine hits every file alike); stores the median of the rounds' medians."""
    import statistics

    from bertqa.on_device import runtime

    fast = [name for name, row in rows.items() if "litert" in row and row.get("ms_1_thread", 0) < slow_ms]
    timings: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for name in fast:
            for n in threads:
                seconds = runtime.median_latency_seconds(rows[name]["file"], window, num_threads=n, runs=runs)
                timings.setdefault((name, n), []).append(seconds * 1000)
    for (name, n), values in timings.items():
        rows[name][f"ms_{n}_thread_interleaved"] = round(statistics.median(values), 1)


def _table(rows: dict[str, dict]) -> str:
    lines = [
        "| file | MB | LiteRT EM | LiteRT F1 | F1 drop | ms 1 thr | ms 2 thr | XNNPACK | Task Library F1 "
        "| interleaved ms 1 / 2 thr |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = rows["float32"]
    for name, row in rows.items():
        key = "litert" if "litert" in row else "litert_subset"  # subset rows: drop against float32 on the subset
        metrics = row.get(key, {})
        f1, reference_f1 = metrics.get("f1"), reference.get(key, {}).get("f1")
        drop = f"{reference_f1 - f1:.2f}" if f1 is not None and reference_f1 is not None else ""
        if key == "litert_subset" and f1 is not None:
            name += " (subset)"
        x = row.get("xnnpack", {})
        outside = ", ".join(f"{k} {v}" for k, v in x.get("outside", {}).items()) or "none"
        xnn = f"{x.get('delegated')}/{x.get('nodes')} in {x.get('partitions')} (out: {outside})" if x else ""
        tl = row.get("task_library", {})
        tl_text = f"{tl['f1']:.2f}" if "f1" in tl else ("fails" if tl else "")
        if "error" in row or "skipped" in row:
            drop = f"fails: {row.get('error') or row.get('skipped')}"[:120]
        lines.append(
            f"| {name} | {row.get('size_mb')} | {metrics.get('exact_match', float('nan')):.2f} | "
            f"{f1 if f1 is None else round(f1, 2)} | {drop} | {row.get('ms_1_thread', '')} | "
            f"{row.get('ms_2_thread', '')} | {xnn} | {tl_text} |"
        )
        if "ms_1_thread_interleaved" in row:
            lines[-1] += f" {row['ms_1_thread_interleaved']} / {row.get('ms_2_thread_interleaved', '')} |"
        else:
            lines[-1] += "  |"
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    q = sub.add_parser("quantize", help="(internal) the AEQ step, run in the AEQ venv")
    q.add_argument("--float", required=True)
    q.add_argument("--recipe", required=True)
    q.add_argument("--calibration", required=True)
    q.add_argument("--output", required=True)
    q.add_argument("--windows", type=int, default=100)
    parser.add_argument("--aeq-python", help="python of the venv with ai-edge-quantizer")
    parser.add_argument("--model", help="the trainer's SavedModel directory")
    parser.add_argument("--work-dir", default="/tmp/int8work")
    parser.add_argument("--train", default=os.path.join(PROJECT, "data/sample/train.json"))
    parser.add_argument("--eval", default=os.path.join(PROJECT, "data/sample/eval.json"))
    parser.add_argument("--recipes", nargs="*", default=list(DEFAULT_RECIPES), choices=sorted(RECIPES))
    parser.add_argument("--calibration-windows", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="LiteRT threads to time at")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=1000.0,
        help="files slower than this per window at 1 thread are scored on a subset only",
    )
    parser.add_argument(
        "--interleaved-rounds",
        type=int,
        default=3,
        help="then re-time the fast files round-robin this many times (0: don't)",
    )
    parser.add_argument("--subset-questions", type=int, default=60, help="questions in that subset")
    parser.add_argument(
        "--task-library",
        nargs="*",
        default=[],
        metavar="NAME",
        help="files (float32, dynamic or recipe names) to score in the Task Library too",
    )
    args = parser.parse_args(argv)
    if args.command == "quantize":
        quantize(args.float, args.recipe, args.calibration, args.output, args.windows)
        return 0
    if not args.aeq_python or not args.model:
        parser.error("--aeq-python and --model are required")

    import numpy as np

    os.makedirs(args.work_dir, exist_ok=True)
    vocab = os.path.join(args.model, "assets", "vocab.txt")
    files = {
        "float32": _export(args.model, args.work_dir, "none"),
        "dynamic": _export(args.model, args.work_dir, "dynamic"),
    }
    calibration = _calibration_npz(args.model, args.train, args.work_dir, args.calibration_windows)
    for name in args.recipes:
        files[name] = _aeq(
            args.aeq_python, name, files["float32"], calibration, args.work_dir, args.calibration_windows, vocab
        )
    data = np.load(calibration)
    window = {name: data[name][0] for name in INPUT_NAMES}  # a full 384-token window; timing ignores values
    results_path = os.path.join(args.work_dir, "results.json")
    rows = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            rows = json.load(f)
    subset = subset_file(args.eval, args.work_dir, args.subset_questions)
    for name, path in files.items():
        if name not in rows or "error" in rows[name]:
            rows[name] = measure(path, args.eval, subset, window, tuple(args.threads), args.latency_runs, args.slow_ms)
        if any("litert_subset" in row for row in rows.values()) and "litert_subset" not in rows["float32"]:
            rows["float32"]["litert_subset"] = litert_metrics(files["float32"], subset)
        if name in args.task_library and "task_library" not in rows[name]:
            rows[name]["task_library"] = task_library_metrics(path, args.eval)
        with open(results_path, "w") as f:
            json.dump(rows, f, indent=1)
    if args.interleaved_rounds:
        interleaved_latency(rows, window, tuple(args.threads), args.latency_runs, args.interleaved_rounds, args.slow_ms)
        with open(results_path, "w") as f:
            json.dump(rows, f, indent=1)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
