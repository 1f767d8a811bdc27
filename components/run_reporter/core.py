"""The pure core of RunReporter: a run's artifact directories -> bertqa.operations.run_report.RunReport -> files.

No TFX imports: the component (component.py) and `bertqa report` (from ML Metadata) both hand
it the directories and custom properties of one run's artifacts.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Mapping

import tensorflow as tf

from bertqa.model import evaluation
from bertqa.operations import atomic_push, pushed_models, report_data, run_report

REPORT_FILE = "report.html"
SLICED_METRICS_FILE = "sliced_metrics.json"
TFMA_DIR = "tfma_eval_result"
# Packages whose versions decide what a run computes (shown under provenance).
PACKAGES = ("tfx", "tensorflow", "tf-keras", "tensorflow-text", "tflite-support", "apache-beam", "ml-metadata",
            "tensorflow-model-analysis")
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class RunArtifacts:
    """Where one run's artifacts are (URIs) and what their custom properties say."""

    examples_dir: str  # SquadExampleGen's Examples (Split-eval: questions and gold answers)
    windows_dir: str  # BertQATransform's transformed_examples (window_report.json)
    model_dir: str  # Trainer's Model (training_summary.json)
    model_run_dir: str  # Trainer's ModelRun (TensorBoard logs)
    evaluation_dir: str  # SquadEvaluator's ModelEvaluation (metrics.json, predictions.json)
    exported_model_dir: str  # TFLiteExporter's Model (variants.json)
    examples_properties: Mapping = dataclasses.field(default_factory=dict)
    evaluator_blessing: Mapping = dataclasses.field(default_factory=dict)
    export_blessing: Mapping = dataclasses.field(default_factory=dict)
    pushed_model: Mapping = dataclasses.field(default_factory=dict)
    settings: Mapping = dataclasses.field(default_factory=dict)  # the pipeline's settings (spec, limits)
    tuner_results_dir: str | None = None  # Tuner's TunerResults (tuner_results.json), when the run tuned


def _json(path: str) -> dict | None:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _git_commit() -> str:
    try:
        result = subprocess.run(["git", "-C", PROJECT_DIR, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if result.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "-C", PROJECT_DIR, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(artifacts: RunArtifacts, data_report: dict | None, training: dict | None) -> dict:
    settings = dict(artifacts.settings)
    identity = (training or {}).get("identity") or {}
    facts = {"spec": settings.pop("spec", None) or identity.get("name") or identity}
    if training:
        facts["training"] = {key: training.get(key) for key in
                             ("steps", "batch_size", "epochs", "learning_rate", "train_windows")}
        facts["warm start"] = (training.get("warm_started_from") or {}).get("version") or "none (cold start)"
        base = training.get("initialised_from")
        facts["started from"] = f"{base['path']} ({base['kind']})" if base else "the spec's encoder"
    if settings:
        facts["pipeline settings"] = settings
    sources = ((data_report or {}).get("total") or {}).get("sources") or []
    facts["data files"] = sources
    props = artifacts.examples_properties
    facts["data fingerprint"] = props.get("input_fingerprint", "unknown")
    facts["span / version"] = f"{props.get('span', 0)} / {props.get('version', '-')}"
    facts["models"] = {"saved_model": os.path.join(artifacts.model_dir, "Format-Serving"),
                       "exported": artifacts.exported_model_dir}
    facts["packages"] = package_versions()
    facts["commit"] = _git_commit()
    return facts


def build_report(artifacts: RunArtifacts, version_2_with_negative: bool = False) -> run_report.RunReport:
    metrics_file = _json(os.path.join(artifacts.evaluation_dir, "metrics.json")) or {}
    answers = _json(os.path.join(artifacts.evaluation_dir, "predictions.json")) or {}
    baseline_answers = _json(os.path.join(artifacts.evaluation_dir, "baseline_predictions.json"))
    examples = evaluation.read_examples(os.path.join(artifacts.examples_dir, "Split-eval", "*"))
    scores = report_data.score_questions(examples, answers, version_2_with_negative, baseline_answers)
    data_report = _json(os.path.join(artifacts.examples_dir, "data_report.json"))
    training = _json(os.path.join(artifacts.model_dir, "training_summary.json"))
    metric_names = ("exact", "f1", "HasAns_f1", "NoAns_f1") if version_2_with_negative else ("exact_match", "f1")
    metrics = {name: metrics_file[name] for name in metric_names if name in metrics_file}
    if "exact" in metrics:
        metrics["exact_match"] = metrics["exact"]
    export_blessing = artifacts.export_blessing or artifacts.evaluator_blessing
    evaluator_reason = artifacts.evaluator_blessing.get("reason") or metrics_file.get("reason", "")
    export_reason = export_blessing.get("reason", "")
    reason = evaluator_reason if export_reason in ("", evaluator_reason) else f"{evaluator_reason}; {export_reason}"
    pushed = bool(artifacts.pushed_model.get("pushed"))
    baseline = {key: value for key, value in artifacts.evaluator_blessing.items()
                if key.startswith("baseline_") or key == "f1_delta"}
    return run_report.RunReport(
        metrics=metrics, blessed=bool(export_blessing.get("blessed")), reason=reason, pushed=pushed,
        pushed_destination=artifacts.pushed_model.get("pushed_destination") if pushed else None,
        scores=scores, data_report=data_report,
        window_report=_json(os.path.join(artifacts.windows_dir, "window_report.json")),
        training=training, curve=report_data.read_training_curve(artifacts.model_run_dir),
        tuning=_json(os.path.join(artifacts.tuner_results_dir, "tuner_results.json"))
        if artifacts.tuner_results_dir else None,
        variants=_json(os.path.join(artifacts.exported_model_dir, "variants.json")), baseline=baseline,
        provenance=provenance(artifacts, data_report, training), version_2=version_2_with_negative)


def _write_text(path: str, text: str) -> None:
    """Written beside and renamed into place, so a reader never sees half a page."""
    partial = path + ".partial"
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write(text)
    tf.io.gfile.rename(partial, path, overwrite=True)


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    report: str
    sliced_metrics: str
    tfma_eval_result: str
    beside_pushed_model: str | None


def _is_pushed_version(path: str | None) -> bool:
    """Whether `path` (read from the PushedModel's properties) is a complete version Pusher wrote, as
    bertqa.operations.pushed_models reads versions: a digit-named directory with its model files and record.
    Anything else is not written into."""
    if not path:
        return False
    serving_dir, version = os.path.split(path.rstrip("/"))
    return version.isdigit() and pushed_models.read_version(serving_dir, version) is not None


def write_report(report: run_report.RunReport, output_dir: str, model_location: str = "",
                 data_location: str = "") -> ReportFiles:
    """report.html, sliced_metrics.json and a TFMA EvalResult into output_dir; report.html also
    beside the pushed model when the run pushed one."""
    tf.io.gfile.makedirs(output_dir)
    page = run_report.render_html(report)
    path = os.path.join(output_dir, REPORT_FILE)
    _write_text(path, page)
    sliced = os.path.join(output_dir, SLICED_METRICS_FILE)
    _write_text(sliced, json.dumps(run_report.slices_to_json(report), indent=2))
    tfma_dir = os.path.join(output_dir, TFMA_DIR)
    if report.scores:
        report_data.write_tfma_eval_result(report.slices, report_data.overall(report.scores), tfma_dir,
                                           model_location, data_location)
    beside = None
    if report.pushed and _is_pushed_version(report.pushed_destination):
        beside = os.path.join(report.pushed_destination, REPORT_FILE)
        # The version is already served: the page appears there whole or not at all.
        atomic_push.write_file_atomically(beside, page.encode("utf-8"))
    return ReportFiles(path, sliced, tfma_dir, beside)
