"""Running an exported .tflite here: on windows (TfliteQaRunner), timed (median_latency_seconds),
and inspected (xnnpack_report: which ops the runtime's XNNPACK delegate takes).

`TfliteQaRunner` runs the exported file on already-tokenized windows so the evaluator can
score exactly the artifact that ships, and `median_latency_seconds` times it the way an app
runs it: one window per question.

Two runtimes run a file here (`runtime=`):
  litert      LiteRT (ai-edge-litert), the TFLite runtime Android and iOS apps use today: its
              XNNPACK runs the dynamic-range file's FULLY_CONNECTED layers (int8 weights,
              activations quantized per row at run time) and BATCH_MATMUL, so nearly the whole
              graph is in one or two delegate partitions. The default.
  tensorflow  TensorFlow 2.16's tf.lite.Interpreter, whose XNNPACK leaves those ops to the slower
              builtin kernels (what this project measured with before LiteRT).
The Task Library's BertQuestionAnswerer carries a third, its own 2023 TFLite: bertqa.on_device.task_library.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from bertqa.on_device.conversion import INPUT_NAMES, OUTPUT_NAMES, pad_window

_log = logging.getLogger(__name__)

LITERT = "litert"
TENSORFLOW = "tensorflow"
RUNTIMES = (LITERT, TENSORFLOW)
DEFAULT_RUNTIME = LITERT


def open_interpreter(path: str, num_threads: int | None = 1, runtime: str = DEFAULT_RUNTIME):
    """An interpreter of `runtime` on the file at `path`, with its default delegates (XNNPACK) on.

    Both runtimes' interpreters have the same Python API (signature runners, tensor details).
    `num_threads` None is 1 in both: LiteRT reads it as `int(num_threads or 1)`, and TensorFlow's
    default would otherwise be every CPU for some kernels only.
    """
    if runtime == LITERT:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=path, num_threads=num_threads or 1)
    if runtime == TENSORFLOW:
        return tf.lite.Interpreter(model_path=path, num_threads=num_threads or 1)
    raise ValueError(f"unknown TFLite runtime {runtime!r}; one of {RUNTIMES}")


def signature_runners(interpreter) -> dict[int, object]:
    """A runner for each window length the model takes, {seq_len: signature runner}, each checked to
    have the contract's inputs and outputs (bertqa.on_device.signatures: one signature per length;
    files of earlier versions have one signature of 384)."""
    keys = list(interpreter.get_signature_list())
    if not keys:
        raise ValueError("The TFLite model has no signature.")
    runners = {}
    for key in keys:
        runner = interpreter.get_signature_runner(key)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        if set(inputs) != set(INPUT_NAMES) or set(outputs) != set(OUTPUT_NAMES):
            raise ValueError(
                f"The TFLite signature {key!r} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"expected {sorted(INPUT_NAMES)} and {sorted(OUTPUT_NAMES)}."
            )
        seq_len = int(inputs["input_word_ids"]["shape"][-1])
        if seq_len in runners:
            raise ValueError(f"The TFLite model has two signatures for windows of {seq_len} tokens.")
        runners[seq_len] = runner
    return runners


def signature_runner(interpreter):
    """The runner of the model's longest windows (subgraph 0: what the Task Library runs)."""
    runners = signature_runners(interpreter)
    return runners[max(runners)]


def median_latency_seconds(
    path: str, window: Mapping[str, np.ndarray], num_threads: int, runs: int = 10, warmup: int = 2,
    runtime: str = DEFAULT_RUNTIME,
) -> float:
    """Median wall time of one run of `window` zero-padded to the model's longest signature (384) in
    `runtime`: one question as the Task Library runs it, whatever its length.

    The median of `runs` timed runs after `warmup` untimed ones (the first run allocates and
    packs weights). `question_latencies_seconds` times questions at their own lengths.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be at least 1 and warmup at least 0, got {runs} and {warmup}.")
    interpreter = open_interpreter(path, num_threads, runtime)
    runner = signature_runner(interpreter)
    seq_len = int(runner.get_input_details()["input_word_ids"]["shape"][-1])
    inputs = pad_window(window, seq_len)
    for _ in range(warmup):
        runner(**inputs)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(**inputs)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def question_latencies_seconds(
    path: str, questions: Sequence[Sequence[Mapping[str, np.ndarray]]], num_threads: int = 1,
    runtime: str = DEFAULT_RUNTIME, lengths: tuple[int, ...] | None = None, warmup: int = 2,
) -> list[float]:
    """Wall time of each question in `runtime`, as an app answers it: every window of the question
    (unpadded token arrays) run one after another, each at the smallest signature that holds it.

    `lengths` restricts the signatures (`(384,)`: the time every question would take at 384
    tokens). Each signature first runs `warmup` untimed times (the first run allocates and packs).
    """
    runner = TfliteQaRunner(path, num_threads=num_threads, runtime=runtime, lengths=lengths)
    for seq_len in runner.seq_lens:
        blank = np.zeros((1, seq_len), np.int32)
        for _ in range(warmup):
            runner.run(blank, blank, blank)
    seconds = []
    for windows in questions:
        arrays = [[np.asarray(window[name], np.int32)[np.newaxis] for name in INPUT_NAMES] for window in windows]
        started = time.perf_counter()
        for window in arrays:
            runner.run(*window)
        seconds.append(time.perf_counter() - started)
    return seconds


def windows_by_question(windows: Sequence) -> list[list[dict[str, np.ndarray]]]:
    """The windows (bertqa.data.windowing.Window) of each question, in order, as int32 token arrays."""
    grouped: dict[str, list[dict[str, np.ndarray]]] = {}
    for window in windows:
        grouped.setdefault(window.example_id, []).append(
            {name: np.asarray(getattr(window, name), np.int32) for name in INPUT_NAMES})
    return list(grouped.values())


def question_latency_ms(path: str, windows: Sequence, threads: Sequence[int],
                        runtime: str = DEFAULT_RUNTIME) -> dict[int, dict[str, float]]:
    """threads -> {"median", "p90"}: milliseconds per question of `windows`' questions, each window at
    the smallest signature that holds it (question_latencies_seconds): what a user waits for."""
    questions = windows_by_question(windows)
    return {n: median_and_p90_ms(question_latencies_seconds(path, questions, num_threads=n, runtime=runtime))
            for n in threads}


def median_and_p90_ms(seconds: Sequence[float]) -> dict[str, float]:
    """{"median", "p90"} of `seconds`, in milliseconds: how the project reports time per question."""
    return {"median": percentile_ms(seconds, 50), "p90": percentile_ms(seconds, 90)}


def percentile_ms(seconds: Sequence[float], percent: float) -> float:
    """The `percent`-th percentile of `seconds`, in milliseconds (linear interpolation, as numpy)."""
    if not seconds:
        raise ValueError("no timings to take a percentile of")
    return 1000.0 * float(np.percentile(np.asarray(seconds, np.float64), percent))


def memory_mb(path: str, num_threads: int = 1) -> dict[str, float]:
    """What a process grows by when it loads the file in LiteRT and runs every signature once
    (bertqa.on_device.memory_probe, in a process of its own): baseline_mb, peak_mb, model_mb."""
    import json
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-m", "bertqa.on_device.memory_probe", path, "--threads",
                            str(num_threads)], capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        raise RuntimeError(f"measuring the memory of {path} failed: {probe.stderr.strip()[-500:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


class TfliteQaRunner:
    """Runs an exported QA model on already-tokenized int32 windows, each at the model's smallest
    signature that holds it.

    A window of n tokens ([batch, n] arrays, n at most the longest signature) is zero-padded to
    the smallest of the file's window lengths that holds n (bertqa.on_device.signatures), run,
    and its logits come back as [batch, n]: callers that pad to the longest length get that
    length back. `lengths` restricts the signatures used (`(384,)`: every window at 384, as the
    Task Library runs it).

    The model loads with batch 1 (the Task Library's shape). A model with a static batch
    of 1 (the default export, so that XNNPACK runs it) runs windows one at a time. For
    models exported with `resizable_batch` (one signature), batches are tried by resizing the
    inputs to [batch, seq_len]; a model whose graph froze the batch of 1 into its shapes anyway
    (the converter turns the attention mask's expand_dims into a constant reshape) fails to
    resize, and then, for good, windows are run one at a time. The first batched run is
    also checked against a single-window run, so a resize that "works" but computes
    something else is caught rather than scored.
    `num_threads` is the interpreter's CPU threads (None: 1); `runtime` one of RUNTIMES.
    """

    def __init__(self, path: str, num_threads: int | None = 1, runtime: str = DEFAULT_RUNTIME,
                 lengths: tuple[int, ...] | None = None):
        self.runtime = runtime
        self._interpreter = open_interpreter(path, num_threads, runtime)
        runners = signature_runners(self._interpreter)
        if lengths is not None:
            unknown = sorted(set(lengths) - set(runners))
            if unknown:
                raise ValueError(f"{path} has no signature for windows of {unknown} tokens (it has {sorted(runners)}).")
            runners = {n: runners[n] for n in lengths}
        self._runners = runners
        self.seq_lens = tuple(sorted(runners))
        self.seq_len = self.seq_lens[-1]  # the longest window the runner takes
        signature = runners[self.seq_len].get_input_details()["input_word_ids"]["shape_signature"]
        # Unknown until the first batch of more than one, unless the batch is static.
        self._batching: bool | None = False if int(signature[0]) == 1 or len(runners) > 1 else None

    @property
    def batching_supported(self) -> bool | None:
        """Whether batches run in one invocation; None until a batch has been tried."""
        return self._batching

    def length_for(self, tokens: int) -> int:
        """The window length a window of `tokens` tokens runs at."""
        from bertqa.on_device.signatures import smallest_fitting

        return smallest_fitting(self.seq_lens, tokens)

    def run(
        self, input_word_ids: np.ndarray, input_mask: np.ndarray, input_type_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(start_logits, end_logits), each float32 [batch, n] for [batch, n] inputs."""
        inputs = self._validated(input_word_ids, input_mask, input_type_ids)
        batch, tokens = inputs["input_word_ids"].shape
        if batch == 0:
            empty = np.zeros((0, tokens), np.float32)
            return empty, empty.copy()
        seq_len = self.length_for(tokens)
        if seq_len > tokens:
            inputs = {name: np.pad(array, ((0, 0), (0, seq_len - tokens))) for name, array in inputs.items()}
        start, end = self._run_padded(inputs, seq_len)
        return start[:, :tokens], end[:, :tokens]

    def _run_padded(self, inputs: dict[str, np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        batch = inputs["input_word_ids"].shape[0]
        if batch == 1 or self._batching is False:
            return self._run_one_by_one(inputs, seq_len)
        try:
            outputs = self._invoke(inputs, seq_len)
        except (RuntimeError, ValueError) as error:
            _log.info("Batched TFLite run failed (%s); running windows one at a time.", error)
            self._batching = False
            return self._run_one_by_one(inputs, seq_len)
        if self._batching is None:
            self._batching = self._matches_single_run(inputs, outputs, seq_len)
            if not self._batching:
                _log.warning("Batched TFLite run disagrees with single-window runs; running one at a time.")
                return self._run_one_by_one(inputs, seq_len)
        return outputs

    def _validated(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        inputs = {}
        for name, array in zip(INPUT_NAMES, arrays, strict=True):
            array = np.asarray(array)
            if array.ndim != 2 or not 0 < array.shape[1] <= self.seq_len:
                raise ValueError(f"{name} must be [batch, n] with n at most {self.seq_len}, got {list(array.shape)}.")
            inputs[name] = array.astype(np.int32, copy=False)
        if len({a.shape for a in inputs.values()}) != 1:
            raise ValueError(f"Inputs disagree in shape: {[list(a.shape) for a in inputs.values()]}.")
        return inputs

    def _invoke(self, inputs: dict[str, np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        # The signature runner resizes the inputs to the arrays' shapes and
        # re-allocates tensors when they change (resize_tensor_input + allocate_tensors).
        outputs = self._runners[seq_len](**inputs)
        return outputs["start_logits"].copy(), outputs["end_logits"].copy()

    def _run_one_by_one(self, inputs: dict[str, np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = [], []
        for i in range(inputs["input_word_ids"].shape[0]):
            start, end = self._invoke({name: array[i : i + 1] for name, array in inputs.items()}, seq_len)
            starts.append(start)
            ends.append(end)
        return np.concatenate(starts), np.concatenate(ends)

    def _matches_single_run(
        self, inputs: dict[str, np.ndarray], batched: tuple[np.ndarray, np.ndarray], seq_len: int
    ) -> bool:
        single = self._invoke({name: array[:1] for name, array in inputs.items()}, seq_len)
        return all(np.allclose(b[:1], s, rtol=1e-3, atol=1e-3) for b, s in zip(batched, single, strict=True))


@dataclasses.dataclass(frozen=True)
class DelegateReport:
    """How much of a .tflite the XNNPACK delegate (TFLite's CPU backend, as on phones) runs in a runtime.

    `nodes` counts the model's ops, `delegated` those inside XNNPACK partitions, and `outside`
    the rest by op name (they run on the runtime's builtin kernels). In TensorFlow 2.16's
    interpreter a model with a dynamic-sized tensor (`dynamic_tensors`, by name) gets no XNNPACK
    at all; LiteRT still delegates such a model, but then the count of `outside` is an upper bound.
    """

    nodes: int
    delegated: int
    partitions: int
    outside: tuple[tuple[str, int], ...]
    dynamic_tensors: tuple[str, ...]
    runtime: str = DEFAULT_RUNTIME

    def summary(self) -> str:
        if self.dynamic_tensors and self.runtime == TENSORFLOW:
            return f"XNNPACK off ({len(self.dynamic_tensors)} dynamic-sized tensors, e.g. {self.dynamic_tensors[0]})"
        rest = ", ".join(f"{name} {count}" for name, count in self.outside) or "none"
        return f"XNNPACK {self.delegated}/{self.nodes} ops in {self.partitions} partitions (outside: {rest})"

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "delegated": self.delegated, "partitions": self.partitions,
                "outside": dict(self.outside), "dynamic_tensors": list(self.dynamic_tensors),
                "runtime": self.runtime}


def xnnpack_report(path: str, runtime: str = DEFAULT_RUNTIME) -> DelegateReport:
    """Which ops of the file the runtime's default XNNPACK delegate takes.

    The interpreter applies XNNPACK when it allocates tensors and then lists one DELEGATE
    node per partition beside the original nodes, without saying which original nodes a
    partition swallowed. An original node ran outside XNNPACK exactly when its outputs are
    neither a partition's outputs nor left unallocated (a tensor internal to a partition
    gets no memory in TFLite's arena).
    """
    import collections

    interpreter = open_interpreter(path, 1, runtime)
    dynamic = tuple(d["name"] for d in interpreter.get_tensor_details() if -1 in list(d["shape_signature"]))
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 (the interpreter's only view of its nodes)
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    partition_outputs = {int(t) for op in partitions for t in op["outputs"]}

    def allocated(tensor: int) -> bool:
        try:
            interpreter.get_tensor(tensor)
        except ValueError:  # "Tensor data is null": internal to a partition
            return False
        return True

    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    outputs = {op["index"]: [int(t) for t in op["outputs"]] for op in originals}
    outside = collections.Counter(
        op["op_name"] for op in originals
        if not partition_outputs.intersection(outputs[op["index"]]) and all(map(allocated, outputs[op["index"]])))
    return DelegateReport(nodes=len(originals), delegated=len(originals) - sum(outside.values()),
                          partitions=len(partitions), outside=tuple(sorted(outside.items())),
                          dynamic_tensors=dynamic, runtime=runtime)
