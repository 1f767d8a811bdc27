"""The run report: one self-contained HTML page that shows what a run did and how good its model is.

Pure functions over plain data (no TFX): the page, with matplotlib plots inlined as PNG, drawn
from bertqa.operations.report_data's scores, slices and training curve.
components/run_reporter reads a run's artifacts into a `RunReport`; `bertqa report` does the
same from ML Metadata.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence

from bertqa.operations.report_data import (
    CurvePoint,
    QuestionScore,
    SliceRow,
    overall,
    slice_metrics,
    worst_and_best,
)

# --- the page ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunReport:
    """Everything the page shows; built by components/run_reporter/core.py from a run's artifacts."""

    metrics: Mapping[str, float]
    blessed: bool
    reason: str
    pushed: bool
    pushed_destination: str | None
    scores: Sequence[QuestionScore]
    data_report: Mapping | None = None
    window_report: Mapping | None = None
    training: Mapping | None = None
    curve: Sequence[CurvePoint] = ()
    tuning: Sequence[Mapping] | None = None  # the Tuner's completed trials: trial_id, score, values
    variants: Mapping | None = None
    baseline: Mapping | None = None  # baseline_* keys and f1_delta from SquadEvaluator's blessing
    provenance: Mapping = dataclasses.field(default_factory=dict)
    version_2: bool = False
    title: str = "bertqa run report"

    @functools.cached_property  # read by the page, the JSON and the TFMA writer: computed once
    def slices(self) -> dict[str, list[SliceRow]]:
        return slice_metrics(self.scores)


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is rendered in pipeline workers and CI
    import matplotlib.pyplot as plt

    return plt


def training_curve_png(curve: Sequence[CurvePoint]) -> str:
    plt = _pyplot()
    steps = [p.step for p in curve]
    figure, (loss_axis, speed_axis) = plt.subplots(1, 2, figsize=(10, 3.2))
    loss_axis.plot(steps, [p.loss for p in curve], color="tab:blue", marker="." if len(curve) < 30 else None)
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss (mean over the interval)", color="tab:blue")
    rate_axis = loss_axis.twinx()
    rate_axis.plot(steps, [p.learning_rate for p in curve], color="tab:orange", linestyle="--")
    rate_axis.set_ylabel("learning rate", color="tab:orange")
    rate_axis.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    loss_axis.set_title("loss and learning rate")
    speed_axis.plot(steps, [p.windows_per_second for p in curve], color="tab:green", marker=".")
    speed_axis.set_xlabel("step")
    speed_axis.set_ylabel("windows / s")
    speed_axis.set_ylim(bottom=0)
    speed_axis.set_title("training throughput")
    figure.tight_layout()
    return _png(figure)


def _variant_latency(variant: Mapping) -> float | None:
    for key in ("task_library_latency_ms", "latency_ms"):
        value = (variant.get(key) or {}).get("1")
        if value is not None:
            return float(value)
    return None


def variant_plot_png(variants: Sequence[Mapping], saved_model_f1: float | None) -> str:
    plt = _pyplot()
    figure, (latency_axis, size_axis) = plt.subplots(1, 2, figsize=(10, 3.2))
    for variant in variants:
        name, f1, size = variant["variant"], variant.get("f1"), variant.get("size_bytes", 0) / 1e6
        latency = _variant_latency(variant)
        color = "tab:green" if variant.get("blessed") else "tab:red"
        if f1 is None:
            continue
        if latency is not None:
            latency_axis.scatter([latency], [f1], s=60, color=color)
            latency_axis.annotate(name, (latency, f1), textcoords="offset points", xytext=(5, 5))
        size_axis.scatter([size], [f1], s=60, color=color)
        size_axis.annotate(name, (size, f1), textcoords="offset points", xytext=(5, 5))
    for axis, label in ((latency_axis, "ms per question, 1 thread (Task Library)"), (size_axis, "file size (MB)")):
        if saved_model_f1 is not None:
            axis.axhline(saved_model_f1, color="gray", linestyle=":", label="SavedModel F1")
            axis.legend(loc="lower right", fontsize=8)
        axis.set_xlabel(label)
        axis.set_ylabel("F1")
        axis.set_xlim(left=0)
    latency_axis.set_title("F1 against latency (green: blessed)")
    size_axis.set_title("F1 against size")
    figure.tight_layout()
    return _png(figure)


def slice_plot_png(rows: Sequence[SliceRow], title: str, baseline: bool) -> str:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.2))
    labels = [f"{row.value} ({row.count})" for row in rows]
    positions = range(len(rows))
    height = 0.4 if baseline else 0.7
    axis.barh([p - (height / 2 if baseline else 0) for p in positions], [row.f1 for row in rows], height=height,
              color="tab:blue", label="this model")
    if baseline:
        axis.barh([p + height / 2 for p in positions], [row.baseline_f1 or 0.0 for row in rows], height=height,
                  color="tab:gray", label="baseline")
        axis.legend(loc="lower right", fontsize=8)
    axis.set_yticks(list(positions), labels)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("F1")
    axis.set_title(title)
    figure.tight_layout()
    return _png(figure)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em} th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top} th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.15em .6em;border-radius:4px;color:#fff;font-weight:600}
.yes{background:#2a7d2e} .no{background:#b3261e} .big{font-size:2em;font-weight:700;margin-right:1em}
.muted{color:#666} img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.grid{display:flex;flex-wrap:wrap;gap:1.5em} code{background:#f4f4f4;padding:0 .2em}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _table(headers: Sequence[str], rows: Sequence[Sequence], table_id: str | None = None,
           numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{cell}</td>' if numeric[i] else f"<td>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    attribute = f' id="{table_id}"' if table_id else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: str, image_id: str, alt: str) -> str:
    return f'<img id="{image_id}" alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _headline(report: RunReport) -> str:
    verdict = ('<span class="verdict yes">blessed</span>' if report.blessed
               else '<span class="verdict no">not blessed</span>')
    pushed = (f"pushed to <code>{_e(report.pushed_destination)}</code>" if report.pushed
              else "nothing pushed")
    lines = [f'<div id="headline"><span class="big">EM {_num(report.metrics.get("exact_match"))}</span>'
             f'<span class="big">F1 {_num(report.metrics.get("f1"))}</span></div>',
             f"<p>{verdict} {_e(report.reason)}</p>", f"<p>{pushed}"]
    if report.variants and report.pushed:
        lines[-1] += f" (variants: {_e(', '.join(report.variants.get('pushed_variants', [])))})"
    lines[-1] += f" · {len(report.scores)} eval questions</p>"
    return "\n".join(lines)


def _data_section(report: RunReport) -> str:
    parts = ["<h2>Data</h2>"]
    if report.data_report:
        splits = report.data_report.get("by_input_split") or {"all": report.data_report.get("total", {})}
        rows = []
        for name, split in splits.items():
            repaired = ", ".join(f"{k} {v}" for k, v in (split.get("repaired") or {}).items()) or "0"
            dropped = ", ".join(f"{k} {v}" for k, v in (split.get("dropped") or {}).items()) or "0"
            rows.append([_e(name), split.get("questions_in"), split.get("kept"), _e(repaired), _e(dropped),
                         _e(", ".join(os.path.basename(s) for s in split.get("sources", [])))])
        parts.append(_table(["split", "questions in", "kept", "repaired (by reason)", "dropped (by reason)",
                             "files"], rows, "data-table", [False, True, True, False, False, False]))
    else:
        parts.append('<p class="muted">No data report in this run.</p>')
    if report.window_report:
        rows = []
        for name, split in report.window_report.items():
            spread = ", ".join(f"{k}: {v}" for k, v in sorted((split.get("windows_per_question") or {}).items(),
                                                              key=lambda kv: int(kv[0])))
            rows.append([_e(name), split.get("questions"), split.get("windows"), _e(spread),
                         len(split.get("answer_outside_all_windows") or [])])
        parts.append("<h3>Windows</h3>" + _table(
            ["split", "questions", "windows", "windows per question (windows: questions)",
             "answer outside every window"], rows, "window-table", [False, True, True, False, True]))
    return "\n".join(parts)


def _training_section(report: RunReport) -> str:
    parts = ["<h2>Training</h2>"]
    summary = report.training or {}
    if summary:
        warm = summary.get("warm_started_from")
        start = (f"warm start from pushed version {_e(warm.get('version'))}" if warm
                 else f"cold start ({_e(summary.get('cold_start_reason') or 'pretrained weights')})")
        steps = f"{summary.get('steps')} steps"
        if summary.get("time_budget_seconds"):
            # A time-budgeted run: `steps` is only the upper bound that the epochs give.
            steps = (f"{summary.get('steps_trained')} of {summary.get('steps')} steps in "
                     f"{_num(summary.get('training_seconds'), '.0f')} s (time budget "
                     f"{_num(summary['time_budget_seconds'] / 60, '.0f')} min, "
                     f"{'reached' if summary.get('stopped_by_time_budget') else 'not reached'})")
        parts.append(f"<p>{steps} of batch {summary.get('batch_size')} "
                     f"({_num(summary.get('epochs'))} epochs of {summary.get('train_windows')} windows), peak "
                     f"learning rate {_num(summary.get('learning_rate'), '.1e')}"
                     f"{', bfloat16 matmuls' if summary.get('matmul_dtype') == 'bfloat16' else ''}"
                     f"{', XLA-compiled steps' if summary.get('xla') else ''}"
                     f"{', oneDNN kernels' if summary.get('onednn') else ''}, final loss "
                     f"{_num(summary.get('final_loss'), '.3f')}; {start}.</p>")
    if report.tuning:
        parts.append(_tuning_table(report.tuning, (summary or {}).get("hyperparameters") or {}))
    if report.curve:
        speeds = [p.windows_per_second for p in report.curve[1:] or report.curve]
        parts.append(_image(training_curve_png(report.curve), "training-curve", "training curve"))
        parts.append(f'<p class="muted">{len(report.curve)} points from the TensorBoard logs; steady-state '
                     f"throughput (after the first interval) {_num(sum(speeds) / len(speeds), '.1f')} windows/s.</p>")
    else:
        parts.append('<p class="muted">No TensorBoard training logs in this run.</p>')
    return "\n".join(parts)


def _tuning_table(trials: Sequence[Mapping], used: Mapping) -> str:
    """The Tuner's trials, best first (its order), and the one whose values the Trainer took."""
    names = sorted({key for trial in trials for key in trial} - {"trial_id", "score"})
    rows = [[_e(trial.get("trial_id")), _num(trial.get("score"), ".4f"),
             *(_num(trial.get(n), ".3g") if isinstance(trial.get(n), float) else _e(trial.get(n)) for n in names),
             "yes" if used and all(trial.get(k) == v for k, v in used.items()) else ""] for trial in trials]
    return (f"<h3>Tuning</h3><p>{len(trials)} trials of the Tuner, scored by the span loss on paragraphs held out "
            "of the train split (lower is better):</p>"
            + _table(["trial", "validation loss", *names, "trained with"], rows, table_id="tuning-table"))


def _variants_section(report: RunReport) -> str:
    parts = ["<h2>TFLite variants</h2>"]
    variants = (report.variants or {}).get("variants") or []
    if not variants:
        why = (report.variants or {}).get("reason") or report.reason
        parts.append(f'<p class="muted">No TFLite variants: {_e(why)}</p>')
        return "\n".join(parts)
    rows = []
    for v in variants:
        latency, library = v.get("latency_ms") or {}, v.get("task_library_latency_ms") or {}
        per_question = v.get("question_latency_ms") or {}
        one, two = per_question.get("1") or {}, per_question.get("2") or {}
        xnnpack = v.get("xnnpack") or {}
        rows.append([
            f"<b>{_e(v['variant'])}</b>", _num(v.get("size_bytes", 0) / 1e6),
            _num(one.get("median"), ".1f"), _num(one.get("p90"), ".1f"),
            _num(two.get("median"), ".1f"), _num(two.get("p90"), ".1f"),
            _num(latency.get("1"), ".1f"), _num(latency.get("2"), ".1f"),
            _num((v.get("memory_mb") or {}).get("model_mb"), ".0f"),
            _num(library.get("1"), ".1f"), _num(library.get("2"), ".1f"),
            _num(v.get("exact_match")), _num(v.get("f1")), _num(v.get("f1_drop")), _num(v.get("task_library_f1")),
            f"{xnnpack.get('delegated', '–')}/{xnnpack.get('nodes', '–')}",
            "ok" if v.get("task_library_ok") else _e("; ".join(v.get("task_library_problems") or ["failed"])),
            ('<span class="verdict yes">yes</span>' if v.get("blessed") else '<span class="verdict no">no</span>')
            + f" {_e(v.get('reason', ''))}"])
    parts.append(_table(
        ["variant", "size (MB)", "ms/question median, 1 thread", "p90, 1 thread", "median, 2 threads",
         "p90, 2 threads", "384 tokens ms, 1 thread", "384 tokens ms, 2 threads", "memory (MB)",
         "Task Library ms 1 thread", "Task Library ms 2 threads", "EM", "F1", "F1 drop", "Task Library F1",
         "XNNPACK ops", "Task Library", "blessed"],
        rows, "variant-table", [False, *[True] * 15, False, False]))
    saved_model_f1 = (report.variants.get("saved_model") or {}).get("f1")
    if report.variants.get("push_reason"):  # the push rule's choice of model.tflite, or why nothing is pushed
        parts.append(f"<p>Push rule: {_e(report.variants['push_reason'])}</p>")
    runtime_names = {"litert": "LiteRT", "tensorflow": "TF interpreter"}
    runtimes = sorted({runtime_names.get(v.get("tflite_runtime", "tensorflow"), "?") for v in variants})
    parts.append(f'<p class="muted">The SavedModel scores F1 {_num(saved_model_f1)} on the same split; EM, F1 and '
                 f"latency are measured in {_e(' and '.join(runtimes))}: per eval question, each window at the "
                 "smallest of the file's signatures that holds it (median and 90th percentile), and one 384-token "
                 "window, the only length the Task Library runs; memory: what a LiteRT process grows by with the "
                 "file loaded and every signature run once; and one answer with tokenization in the Task "
                 "Library.</p>")
    parts.append(_image(variant_plot_png(variants, saved_model_f1), "variant-plot", "F1 against latency and size"))
    return "\n".join(parts)


def _slices_section(report: RunReport) -> str:
    slices = report.slices
    with_baseline = bool(report.scores) and report.scores[0].baseline_f1 is not None
    parts = ['<h2>Sliced metrics</h2><div id="slice-tables" class="grid">']
    headers = ["slice", "questions", "EM", "F1"] + (["baseline F1", "Δ F1"] if with_baseline else [])
    for name, rows in slices.items():
        table_rows = []
        for row in rows:
            cells = [_e(row.value), row.count, _num(row.exact_match), _num(row.f1)]
            if with_baseline:
                cells += [_num(row.baseline_f1), _num(row.f1 - row.baseline_f1, "+.2f")]
            table_rows.append(cells)
        parts.append(f"<div><h3>By {_e(name)}</h3>"
                     + _table(headers, table_rows, None, [False] + [True] * (len(headers) - 1)) + "</div>")
    parts.append("</div>")
    if slices.get("question word"):
        parts.append(_image(slice_plot_png(slices["question word"], "F1 by question word (questions)", with_baseline),
                            "slice-plot", "F1 by question word"))
    return "\n".join(parts)


def _examples_section(report: RunReport) -> str:
    worst, best = worst_and_best(report.scores)

    def rows(scores):
        return [[_e(s.question), _e(" | ".join(s.gold)), _e(s.predicted or "(none)"), _num(s.f1, ".1f")]
                for s in scores]

    return ("<h2>Worst-scored eval questions</h2>"
            + _table(["question", "gold", "predicted", "F1"], rows(worst), "worst-table", [False] * 3 + [True])
            + "<h3>Some exactly right</h3>"
            + (_table(["question", "gold", "predicted", "F1"], rows(best), "best-table", [False] * 3 + [True])
               if best else '<p class="muted">No question answered exactly.</p>'))


def _baseline_section(report: RunReport) -> str:
    baseline = report.baseline or {}
    if not baseline.get("baseline_version"):
        return '<h2>Against the baseline</h2><p class="muted">No baseline: nothing was pushed before this run.</p>'
    if baseline.get("baseline_problem"):
        return (f"<h2>Against the baseline</h2><p>Baseline version {_e(baseline['baseline_version'])} "
                f"could not be compared: {_e(baseline['baseline_problem'])}</p>")
    rows = [[_e(name), _num(baseline.get(f"baseline_{name}")), _num(report.metrics.get(name)),
             _num((report.metrics.get(name) or 0.0) - (baseline.get(f"baseline_{name}") or 0.0), "+.2f")]
            for name in ("exact_match", "f1")]
    return (f"<h2>Against the baseline</h2><p>Baseline: pushed version {_e(baseline['baseline_version'])} "
            f"(model {_e(baseline.get('baseline_model_id'))}, span {_e(baseline.get('baseline_span'))}), scored on "
            "this run's eval split in the same execution. Per-slice baseline F1 is in the sliced tables above.</p>"
            + _table(["metric", "baseline", "this model", "Δ"], rows, "baseline-table", [False, True, True, True]))


def _provenance_section(report: RunReport) -> str:
    rows = [[_e(key), f"<code>{_e(value if isinstance(value, str) else json.dumps(value, sort_keys=True))}</code>"]
            for key, value in report.provenance.items()]
    return "<h2>Provenance</h2>" + _table(["what", "value"], rows, "provenance-table")


def render_html(report: RunReport) -> str:
    """The whole page: inline CSS and PNG images, no scripts, nothing fetched (it opens offline)."""
    sections = [_headline(report), _data_section(report), _training_section(report), _variants_section(report),
                _slices_section(report), _examples_section(report), _baseline_section(report),
                _provenance_section(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(report.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(report.title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


def slices_to_json(report: RunReport) -> dict:
    return {"overall": dataclasses.asdict(overall(report.scores)) if report.scores else None,
            "slices": {name: [dataclasses.asdict(row) for row in rows] for name, rows in report.slices.items()}}


def markdown_table(rows: Sequence[SliceRow], name: str) -> str:
    """One slice as a Markdown table (for a README or an issue)."""
    lines = [f"| {name} | questions | EM | F1 |", "|---|---:|---:|---:|"]
    lines += [f"| {row.value} | {row.count} | {row.exact_match:.1f} | {row.f1:.1f} |" for row in rows]
    return "\n".join(lines)
