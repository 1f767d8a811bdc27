"""The pure core of TFLiteExporter: every quantization variant, exported, scored, timed, checked and blessed.

For each variant (none, dynamic, float16, int8) of the trainer's SavedModel:

  export    bertqa.on_device.tflite_export.export_tflite: convert, quantize (int8 calibrates on
            windows of the training split), attach the Task Library metadata;
  score     bertqa.on_device.scoring.evaluate_tflite in LiteRT (ExportPlan.tflite_runtime): the
            SQuAD metric on the eval split's raw examples and windows, the function
            SquadEvaluator scores the SavedModel with;
  time      in LiteRT at 1 and 2 threads: every eval question as an app answers it, each window
            at the smallest of the file's signatures that holds it
            (runtime.question_latencies_seconds; the median and 90th percentile per question),
            beside one window at 384 tokens, the only length the Task Library runs
            (runtime.median_latency_seconds); the memory of a LiteRT process with the file
            loaded (runtime.memory_mb); and bertqa.on_device.task_library.median_answer_seconds,
            one answer in the Task Library itself (its runtime, tokenizer and span search);
  inspect   bertqa.on_device.runtime.xnnpack_report in LiteRT: how many ops XNNPACK takes,
            which it leaves out, and any dynamic-sized tensor;
  check     the Task Library's BertQuestionAnswerer loads the file and answers a probe
            question with the logits the interpreter computes (or why not);
  answer    with ExportPlan.task_library_f1, the SQuAD metric of the file as the Task Library
            answers each eval question (its tokenizer, its one window of the first 384 tokens,
            its span search: what an app on the Task Library shows), and the share of questions
            it answers as an app on LiteRT would (scoring.app_answers, SQuAD-normalized).
            Recorded, not gated: the Task Library reads one window, so its F1 against the
            multi-window SavedModel also charges it the questions whose answer lies past the
            first 384 tokens, which no quantization choice changes; the check above gates that
            it runs the file as measured. Off by default: about 0.25 s a question for MiniLM
            (2.4 minutes on the bundled sample);
  bless     F1 drop against the float SavedModel at most the variant's limit, and the
            Task Library runs the file as it was measured.

The push rule. model.tflite, the file apps load, is the first variant of ExportPlan.push_order
(default: dynamic, float16, none) that is blessed. Variants in `variants` are exported first; a
variant of the push order that is not among them is exported, scored and judged only when every
variant before it in the order missed its limit. So `make run` exports the dynamic-range file
alone when it is good, and when it misses its F1 limit falls back to float16 (half the float
file's size, which loses almost nothing) rather than pushing nothing. variants.json,
ML Metadata and the run's summary say which variant became model.tflite and why.

The output directory (the exported Model artifact) holds:

  variants.json                    every variant's figures and verdict, and the overall verdict
  candidates/<file>                the exported variants that are not pushed
  Format-Serving/                  what Pusher copies, only when the push is blessed:
    model.tflite                   the variant the push rule chose (the file apps load)
    model_<variant>.tflite         each other blessed variant
    vocab.txt, variants.json

The push is blessed only when SquadEvaluator blessed the SavedModel and a variant of the
push order is blessed: model.tflite is what clients load, so without it nothing ships.
Files reach Format-Serving only after every variant has been scored, and nothing
there is written before that, so a run that fails part-way leaves nothing pushable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence

import numpy as np

from bertqa.data.raw_example import SquadExample
from bertqa.data.windowing import Window
from bertqa.model import evaluation
from bertqa.on_device import conversion, runtime, scoring, task_library, tflite_export
from bertqa.operations import pushed_models

VARIANTS = ("none", "dynamic", "float16", "int8")
# The variants tried for model.tflite, in order; the first blessed one is pushed as it. The
# dynamic-range file is a quarter of the float one and the fastest in LiteRT; float16 halves
# the float file and only rounds weights; none is the float file itself.
DEFAULT_PUSH_ORDER = ("dynamic", "float16", "none")
PUSHED_FILE = "model.tflite"
# What `make run` exports unless told otherwise. Scoring a variant means running every eval
# window padded to 384 tokens through it: 2-10 minutes per variant for MiniLM on the bundled
# sample on 2 CPUs (int8 also calibrates), against ~13 minutes for the whole run without
# them (benchmarks/RESULTS.md). Only the pushed variant is needed to decide the push;
# `--quantization all` exports and scores the others too.
DEFAULT_VARIANTS = ("dynamic",)
# Largest F1 loss (points, 0-100) against the float SavedModel that still blesses a variant.
# float32 and float16 only round weights, so they should lose almost nothing; int8 also
# quantizes activations and may lose more.
DEFAULT_MAX_F1_DROP = {"none": 0.2, "dynamic": 1.0, "float16": 0.2, "int8": 2.0}
# Each variant's file name, under candidates/ and, when it is blessed and not model.tflite, in Format-Serving.
FILE_NAMES = {"dynamic": "model_dynamic.tflite", "none": "model_float32.tflite", "float16": "model_float16.tflite",
              "int8": "model_int8.tflite"}
VARIANTS_FILE = "variants.json"
CANDIDATES_DIR = "candidates"
VOCAB_FILE = "vocab.txt"
LATENCY_THREADS = (1, 2)

_log = logging.getLogger(__name__)


def parse_variants(text: str | Sequence[str]) -> tuple[str, ...]:
    """'dynamic,int8' or ['dynamic', 'int8'] -> ('dynamic', 'int8'); 'all' is every variant."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [name.strip() for name in names if name.strip()]
    return VARIANTS if names == ["all"] else tuple(names)


def parse_max_f1_drop(items: Sequence[str]) -> dict[str, float]:
    """['int8=3', 'float16=0.5'] -> {'int8': 3.0, 'float16': 0.5}, for command lines."""
    limits = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"Expected VARIANT=POINTS (e.g. int8=2.0), got {item!r}.")
        try:
            limits[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a number of F1 points.") from None
    return limits


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Which variants to export and how to judge them.

    max_f1_drop: per-variant limits; variants not named keep DEFAULT_MAX_F1_DROP's.
    representative_steps: training windows int8 calibration reads.
    eval_threads: interpreter threads while scoring (None: every CPU).
    latency_runs: timed runs per thread count; the median is recorded.
    tflite_runtime: the runtime each file is scored, timed and inspected in (runtime.RUNTIMES):
        LiteRT, what apps run today; the Task Library's own runtime is checked and timed beside it.
    push_order: the variants tried for model.tflite, first blessed wins (see the module docstring);
        those not in `variants` are exported only when the ones before them miss their limits
        (int8 anywhere in it means the training windows are read for calibration up front).
    task_library_f1: also score each variant as the Task Library answers (see the module docstring).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    max_f1_drop: Mapping[str, float] = dataclasses.field(default_factory=dict)
    seq_len: int = conversion.TASK_LIBRARY_SEQ_LEN
    query_len: int = conversion.TASK_LIBRARY_QUERY_LEN
    do_lower_case: bool = True
    representative_steps: int = 100
    eval_threads: int | None = None
    eval_batch_size: int = scoring.DEFAULT_TFLITE_BATCH_SIZE
    latency_runs: int = 10
    latency_threads: tuple[int, ...] = LATENCY_THREADS
    tflite_runtime: str = runtime.DEFAULT_RUNTIME
    push_order: tuple[str, ...] = DEFAULT_PUSH_ORDER
    task_library_f1: bool = False

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"Unknown or no variants {unknown or list(self.variants)}; choose from {VARIANTS}.")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"Variants are listed more than once: {list(self.variants)}.")
        unknown = [v for v in self.push_order if v not in VARIANTS]
        if unknown or not self.push_order:
            raise ValueError(f"Unknown or no variants in the push order {unknown or list(self.push_order)}; "
                             f"choose from {VARIANTS}.")
        if len(set(self.push_order)) != len(self.push_order):
            raise ValueError(f"The push order lists a variant more than once: {list(self.push_order)}.")
        for name, limit in self.max_f1_drop.items():
            if name not in VARIANTS:
                raise ValueError(f"max_f1_drop names unknown variant {name!r}; choose from {VARIANTS}.")
            if not limit >= 0:
                raise ValueError(f"max_f1_drop[{name!r}] must be a number of points >= 0, got {limit}.")
        if self.latency_runs < 1 or not self.latency_threads or min(self.latency_threads) < 1:
            raise ValueError("latency_runs and every latency thread count must be at least 1.")
        if self.eval_batch_size < 1 or self.representative_steps < 1:
            raise ValueError("eval_batch_size and representative_steps must be at least 1.")
        if self.tflite_runtime not in runtime.RUNTIMES:
            raise ValueError(f"Unknown TFLite runtime {self.tflite_runtime!r}; choose from {runtime.RUNTIMES}.")

    def limit(self, variant: str) -> float:
        return float(self.max_f1_drop.get(variant, DEFAULT_MAX_F1_DROP[variant]))

    def export_config(self) -> conversion.TfliteExportConfig:
        return conversion.TfliteExportConfig(seq_len=self.seq_len, query_len=self.query_len,
                                             do_lower_case=self.do_lower_case)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The eval split as SquadEvaluator reads it: raw examples (gold answers) and their windows."""

    examples: Sequence[SquadExample]
    windows: Sequence[Window]

    def __post_init__(self) -> None:
        if not self.examples or not self.windows:
            raise ValueError("The eval split has no examples or no windows; there is nothing to score variants on.")


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Exact match and F1 on 0-100, whichever SQuAD version produced them."""

    exact_match: float
    f1: float

    @classmethod
    def from_squad(cls, metrics: Mapping[str, float]) -> Metrics:
        # SQuAD 1.1's script says exact_match, 2.0's says exact.
        exact = metrics["exact_match"] if "exact_match" in metrics else metrics["exact"]
        return cls(exact_match=float(exact), f1=float(metrics["f1"]))


@dataclasses.dataclass(frozen=True)
class VariantReport:
    variant: str
    file: str  # relative to the output directory
    size_bytes: int
    latency_ms: Mapping[int, float]  # threads -> median milliseconds of one 384-token window, in tflite_runtime
    exact_match: float
    f1: float
    f1_drop: float  # SavedModel F1 - this F1, in points; negative when the variant scores higher
    max_f1_drop: float
    task_library_ok: bool
    task_library_problems: tuple[str, ...]
    blessed: bool
    reason: str
    seconds: float = 0.0  # exporting, scoring and timing this variant took
    # threads -> median milliseconds of one Task Library answer() (tokenization and span search
    # included); empty when the Task Library cannot run the file.
    task_library_latency_ms: Mapping[int, float] = dataclasses.field(default_factory=dict)
    xnnpack: Mapping = dataclasses.field(default_factory=dict)  # runtime.DelegateReport.to_json()
    # The runtime exact_match, f1, latency_ms and xnnpack were measured in (runtime.RUNTIMES).
    tflite_runtime: str = runtime.DEFAULT_RUNTIME
    # With ExportPlan.task_library_f1: EM and F1 of the Task Library's answers, and the share of
    # questions (0-1) it answers exactly as tflite_runtime's scoring did; None otherwise.
    task_library_exact_match: float | None = None
    task_library_f1: float | None = None
    task_library_agreement: float | None = None
    # threads -> {"median": ms, "p90": ms} per eval question at its own length (every window at the
    # smallest signature that holds it), in tflite_runtime.
    question_latency_ms: Mapping[int, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    # A LiteRT process with the file loaded and every signature run once: model_mb (what the file
    # adds), peak_mb, baseline_mb (runtime.memory_mb); empty when not measured.
    memory_mb: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["latency_ms"] = {str(threads): ms for threads, ms in self.latency_ms.items()}
        fields["question_latency_ms"] = {str(threads): dict(ms) for threads, ms in self.question_latency_ms.items()}
        fields["task_library_latency_ms"] = {str(threads): ms for threads, ms in self.task_library_latency_ms.items()}
        fields["task_library_problems"] = list(self.task_library_problems)
        return fields


@dataclasses.dataclass(frozen=True)
class ExportReport:
    saved_model: Metrics | None  # None when nothing was exported
    variants: tuple[VariantReport, ...]
    blessed: bool
    reason: str
    # The variant the push rule chose as model.tflite (None when nothing is pushed), and why.
    pushed_variant: str | None = None
    push_reason: str = ""

    def variant(self, name: str) -> VariantReport:
        return next(v for v in self.variants if v.variant == name)

    @property
    def pushed_variants(self) -> tuple[str, ...]:
        return tuple(v.variant for v in self.variants if v.blessed) if self.blessed else ()

    def to_json(self) -> dict:
        saved_model = dataclasses.asdict(self.saved_model) if self.saved_model else None
        return {"saved_model": saved_model, "pushed_variant": self.pushed_variant, "push_reason": self.push_reason,
                "blessed": self.blessed, "reason": self.reason, "pushed_variants": list(self.pushed_variants),
                "variants": [v.to_json() for v in self.variants]}


# --- Inputs ---------------------------------------------------------------------------------


def load_eval_data(examples_pattern: str, windows_pattern: str) -> EvalData:
    """The eval split from ExampleGen's raw examples and BertQATransform's windows (GZIP TFRecords)."""
    return EvalData(evaluation.read_examples(examples_pattern), evaluation.read_windows(windows_pattern))


def representative_windows(windows: Sequence[Window], count: int) -> list[dict[str, np.ndarray]]:
    """`count` windows spread evenly over `windows` (not the first ones: those are a few articles only)."""
    if not windows:
        raise ValueError("There are no training windows to calibrate int8 quantization on.")
    picks = np.unique(np.linspace(0, len(windows) - 1, num=min(count, len(windows))).astype(int))
    return [{name: np.asarray(getattr(windows[i], name), np.int32) for name in conversion.INPUT_NAMES}
            for i in picks]


def read_reference(evaluation_dir: str, eval_config: evaluation.EvalConfig,
                   ) -> tuple[Metrics, evaluation.EvalConfig]:
    """The SavedModel's metrics from SquadEvaluator's metrics.json, and the config to score variants alike.

    For SQuAD 2.0 SquadEvaluator scores at the null-score threshold it tuned; a variant must be
    scored at that same threshold, or its F1 drop would compare an untuned F1 with a tuned one.
    """
    with open(os.path.join(evaluation_dir, "metrics.json")) as f:
        metrics = json.load(f)
    threshold = metrics.get("null_score_diff_threshold")
    if threshold is not None and eval_config.version_2_with_negative:
        eval_config = dataclasses.replace(eval_config, null_score_diff_threshold=float(threshold))
    return Metrics.from_squad(metrics), eval_config


def saved_model_metrics(saved_model_dir: str, data: EvalData, config: evaluation.EvalConfig) -> Metrics:
    """The SavedModel's metrics, computed as SquadEvaluator computes them (for runs without its artifact)."""
    return Metrics.from_squad(
        evaluation.evaluate_saved_model(saved_model_dir, data.examples, data.windows, config).metrics)


# --- One variant ----------------------------------------------------------------------------


def export_variant(saved_model_dir: str, vocab_path: str, path: str, variant: str,
                   config: conversion.TfliteExportConfig, representative: Sequence[Mapping[str, np.ndarray]] = (),
                   representative_steps: int = 100) -> conversion.ExportResult:
    """One variant as a .tflite with Task Library metadata (the Task Library check included)."""
    quantization = conversion.QuantizationConfig.from_name(variant, representative_steps)
    return tflite_export.export_tflite(saved_model_dir, vocab_path, path, config, quantization,
                                       representative_windows=list(representative) if variant == "int8" else None)


def median_latencies_ms(path: str, window: Window, threads: Sequence[int], runs: int,
                        tflite_runtime: str = runtime.DEFAULT_RUNTIME) -> dict[int, float]:
    inputs = {name: np.asarray(getattr(window, name), np.int32) for name in conversion.INPUT_NAMES}
    return {n: 1000.0 * runtime.median_latency_seconds(path, inputs, num_threads=n, runs=runs, runtime=tflite_runtime)
            for n in threads}


def bless(f1_drop: float, limit: float) -> tuple[bool, str]:
    if f1_drop <= limit:
        return True, f"F1 drop {f1_drop:.2f} <= {limit:.2f} points"
    return False, f"F1 drop {f1_drop:.2f} > {limit:.2f} points"


def _score_variant(variant: str, path: str, output_dir: str, result: conversion.ExportResult, data: EvalData,
                   reference: Metrics, eval_config: evaluation.EvalConfig, plan: ExportPlan) -> VariantReport:
    starts, ends = scoring.tflite_logits(path, data.windows, num_threads=plan.eval_threads,
                                         batch_size=plan.eval_batch_size, runtime=plan.tflite_runtime)
    metrics = Metrics.from_squad(evaluation.score(data.examples, data.windows, starts, ends, eval_config).metrics)
    latency = median_latencies_ms(path, data.windows[0], plan.latency_threads, plan.latency_runs, plan.tflite_runtime)
    question_latency = runtime.question_latency_ms(path, data.windows, plan.latency_threads, plan.tflite_runtime)
    # The memory probe runs LiteRT: what an app process grows by (TensorFlow's interpreter is no app runtime).
    memory = runtime.memory_mb(path) if plan.tflite_runtime == runtime.LITERT else {}
    task_library_latency = {}
    if not result.warnings:  # the Task Library ran the file in export_tflite: it can be timed
        example = data.examples[0]
        task_library_latency = {n: 1000.0 * task_library.median_answer_seconds(
            path, example.context, example.question, n, runs=plan.latency_runs) for n in plan.latency_threads}
    in_task_library = {}
    if plan.task_library_f1 and not result.warnings and not eval_config.version_2_with_negative:
        answered = scoring.evaluate_with_task_library(path, data.examples, eval_config, show_progress=False)
        in_task_library = {"task_library_exact_match": answered.metrics["exact_match"],
                           "task_library_f1": answered.metrics["f1"],
                           "task_library_agreement": scoring.answer_agreement(
                               data.examples, answered.predictions.answers,
                               scoring.app_answers(data.examples, data.windows, starts, ends, eval_config))}
    f1_drop = reference.f1 - metrics.f1
    blessed, reason = bless(f1_drop, plan.limit(variant))
    if result.task_library_failures:
        # Apps run the file in the Task Library; metrics it would not reproduce bless nothing.
        blessed, reason = False, f"{reason}, but the Task Library does not run it as measured"
    return VariantReport(
        variant=variant, file=os.path.relpath(path, output_dir), size_bytes=result.size_bytes, latency_ms=latency,
        exact_match=metrics.exact_match, f1=metrics.f1, f1_drop=f1_drop, max_f1_drop=plan.limit(variant),
        # export_tflite ran the Task Library on the file when it found nothing wrong beforehand;
        # its warnings say why the Task Library cannot (or cannot faithfully) run it.
        task_library_ok=not result.warnings, task_library_problems=tuple(result.warnings),
        blessed=blessed, reason=reason, task_library_latency_ms=task_library_latency,
        xnnpack=runtime.xnnpack_report(path, plan.tflite_runtime).to_json(), tflite_runtime=plan.tflite_runtime,
        question_latency_ms=question_latency, memory_mb=memory, **in_task_library)


# --- All variants -----------------------------------------------------------------------------


def export_variants(saved_model_dir: str, vocab_path: str, output_dir: str, serving_dir: str, plan: ExportPlan,
                    data: EvalData, reference: Metrics, eval_config: evaluation.EvalConfig,
                    representative: Sequence[Mapping[str, np.ndarray]] = (), upstream_blessed: bool = True,
                    ) -> ExportReport:
    """Exports, scores, times, checks and blesses every variant; publishes the blessed ones to `serving_dir`.

    The variants of the plan first, then, while no variant of the push order is blessed, the next
    variant of the push order not yet exported (the push rule, see the module docstring).
    representative: training windows for int8 calibration (needed only when int8 is a variant).
    upstream_blessed: SquadEvaluator's verdict on the SavedModel; without it nothing is published.
    """
    if "int8" in (*plan.variants, *plan.push_order) and not representative:
        raise ValueError("int8 is a variant but there are no representative (training) windows to calibrate it.")
    config = conversion.with_saved_model_lengths(plan.export_config(), saved_model_dir)
    for problem in conversion.task_library_incompatibilities(config):
        _log.warning("TFLite export: %s", problem)
    candidates = os.path.join(output_dir, CANDIDATES_DIR)
    os.makedirs(candidates, exist_ok=True)

    def export_and_score(variant: str) -> VariantReport:
        started = time.monotonic()
        path = os.path.join(candidates, FILE_NAMES[variant])
        result = export_variant(saved_model_dir, vocab_path, path, variant, config, representative,
                                plan.representative_steps)
        report = _score_variant(variant, path, output_dir, result, data, reference, eval_config, plan)
        report = dataclasses.replace(report, seconds=time.monotonic() - started)
        _log.info("TFLite %s: %d bytes, EM %.2f, F1 %.2f (drop %.2f), %s ms/question at its length %s, "
                  "%s ms at 384 tokens (Task Library %s ms), %s MB loaded, XNNPACK %s/%s ops, Task Library %s, %s; "
                  "%.0fs",
                  variant, report.size_bytes, report.exact_match, report.f1, report.f1_drop, report.tflite_runtime,
                  {n: f"median {ms['median']:.1f} p90 {ms['p90']:.1f}" for n, ms in report.question_latency_ms.items()},
                  report.latency_ms, report.memory_mb.get("model_mb"),
                  report.task_library_latency_ms, report.xnnpack.get("delegated"), report.xnnpack.get("nodes"),
                  "ok" if report.task_library_ok else "NOT ok", report.reason, report.seconds)
        return report

    reports = {variant: export_and_score(variant) for variant in plan.variants}
    if upstream_blessed:
        for variant in plan.push_order:
            if variant not in reports:
                _log.info("TFLite: exporting %s, the next variant of the push order %s (none before it blessed).",
                          variant, ",".join(plan.push_order))
                reports[variant] = export_and_score(variant)
            if reports[variant].blessed:
                break
    pushed_variant, push_reason = choose_pushed_variant(list(reports.values()), plan.push_order)
    if not upstream_blessed:
        pushed_variant, push_reason = None, "nothing is pushed: SquadEvaluator did not bless the SavedModel"
    blessed, reason = _overall_verdict(list(reports.values()), upstream_blessed, pushed_variant, push_reason)
    report = ExportReport(saved_model=reference, variants=tuple(reports.values()), blessed=blessed, reason=reason,
                          pushed_variant=pushed_variant if blessed else None, push_reason=push_reason)
    if blessed:
        report = _publish(report, output_dir, serving_dir, vocab_path)
    write_variants_json(report.to_json(), output_dir)
    return report


def choose_pushed_variant(reports: Sequence[VariantReport], push_order: Sequence[str]) -> tuple[str | None, str]:
    """The push rule: the first blessed variant of `push_order` becomes model.tflite; and why, in words."""
    by_name = {r.variant: r for r in reports}
    passed_over = []
    for variant in push_order:
        report = by_name.get(variant)
        if report is None:
            continue
        if report.blessed:
            because = f"{variant} is blessed ({report.reason})"
            if passed_over:
                because = "; ".join([*passed_over, f"so the next in the push order: {because}"])
            return variant, f"model.tflite is {variant}: {because}"
        passed_over.append(f"{variant} is not ({report.reason})")
    tried = "; ".join(passed_over) or "none of them was exported"
    return None, f"no variant of the push order {','.join(push_order)} is blessed: {tried}"


def _overall_verdict(reports: Sequence[VariantReport], upstream_blessed: bool, pushed_variant: str | None,
                     push_reason: str) -> tuple[bool, str]:
    if not upstream_blessed:
        return False, "SquadEvaluator did not bless the SavedModel"
    if pushed_variant is None:
        return False, push_reason
    others = [f"{r.variant}: {'blessed' if r.blessed else 'not blessed'} ({r.reason})"
              for r in reports if r.variant != pushed_variant]
    return True, "; ".join([push_reason, *others])


def _publish(report: ExportReport, output_dir: str, serving_dir: str, vocab_path: str) -> ExportReport:
    """Moves each blessed variant into `serving_dir` (the pushed one as model.tflite) with the vocab and
    variants.json; returns the report with the files' new paths."""
    os.makedirs(serving_dir, exist_ok=True)
    moved = []
    for variant in report.variants:
        if variant.blessed:
            name = PUSHED_FILE if variant.variant == report.pushed_variant else FILE_NAMES[variant.variant]
            target = os.path.join(serving_dir, name)
            os.replace(os.path.join(output_dir, variant.file), target)
            variant = dataclasses.replace(variant, file=os.path.relpath(target, output_dir))
        moved.append(variant)
    report = dataclasses.replace(report, variants=tuple(moved))
    # The Task Library reads the vocab from the metadata; the loose copy is for other clients.
    shutil.copyfile(vocab_path, os.path.join(serving_dir, VOCAB_FILE))
    write_variants_json(report.to_json(), serving_dir)
    return report


def model_record(model_id: int | None, saved_model_dir: str, training_summary: Mapping, examples: Mapping,
                 evaluation_metrics: Mapping, report: ExportReport) -> dict:
    """What a pushed version says about itself (bertqa.operations.pushed_models.RECORD_FILE): where its
    SavedModel is (the next run's baseline and warm start), its identity, its span and input
    fingerprint, its metrics, the baseline it was compared with and the project version."""
    baseline = {key[len("baseline_"):]: value for key, value in evaluation_metrics.items()
                if key.startswith("baseline_")}
    return {
        "model_id": model_id,
        "saved_model_dir": saved_model_dir,
        "identity": training_summary.get("identity"),
        "span": examples.get("span"),
        "data_version": examples.get("version"),
        "input_fingerprint": examples.get("input_fingerprint"),
        "examples_uri": examples.get("uri"),
        "metrics": {key: evaluation_metrics[key] for key in ("exact_match", "exact", "f1")
                    if key in evaluation_metrics},
        "baseline": baseline or None,
        "f1_delta": evaluation_metrics.get("f1_delta"),
        "warm_started_from": training_summary.get("warm_started_from"),
        "training": {key: training_summary.get(key) for key in ("train_windows", "steps", "batch_size", "epochs",
                                                                "learning_rate", "final_loss")},
        "variants": {v.variant: {"f1": v.f1, "f1_drop": v.f1_drop, "size_bytes": v.size_bytes}
                     for v in report.variants if v.blessed},
        "pushed_variant": report.pushed_variant,  # which of them is model.tflite (the push rule)
        "project": pushed_models.project_version(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_model_record(record: Mapping, serving_dir: str) -> None:
    with open(os.path.join(serving_dir, pushed_models.RECORD_FILE), "w") as f:
        json.dump(record, f, indent=2)


def write_variants_json(content: dict, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, VARIANTS_FILE), "w") as f:
        json.dump(content, f, indent=2)


def not_exported(output_dir: str, reason: str) -> ExportReport:
    """Records that nothing was exported (the SavedModel was not blessed): variants.json says why."""
    report = ExportReport(saved_model=None, variants=(), blessed=False, reason=reason)
    write_variants_json(report.to_json(), output_dir)
    return report


# --- Reporting ------------------------------------------------------------------------------


def markdown_table(report: ExportReport) -> str:
    """The variants as a Markdown table (benchmarks, RESULTS.md)."""
    threads = sorted({n for v in report.variants for n in v.latency_ms})
    header = ["variant", "file size (MB)", *[f"latency/question, {n} thread{'s' * (n > 1)} (ms)" for n in threads],
              "EM", "F1", "F1 drop", "limit", "Task Library ok", "blessed"]
    saved = report.saved_model or Metrics(float("nan"), float("nan"))
    rows = [["SavedModel (float32)", "", *[""] * len(threads), f"{saved.exact_match:.2f}", f"{saved.f1:.2f}",
             "", "", "", ""]]
    for v in report.variants:
        task_library = "yes" if v.task_library_ok else "no: " + "; ".join(v.task_library_problems)
        rows.append([v.variant, f"{v.size_bytes / 1e6:.1f}", *[f"{v.latency_ms[n]:.0f}" for n in threads],
                     f"{v.exact_match:.2f}", f"{v.f1:.2f}", f"{v.f1_drop:+.2f}", f"{v.max_f1_drop:.1f}", task_library,
                     "yes" if v.blessed else "no"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
