"""`bertqa lineage`: what a pushed model came from, answered from ML Metadata.

    bertqa lineage [--runs-dir runs] [--pipeline-name bertqa]     # every pushed version, then the latest
    bertqa lineage 1796192316                                     # one serving version
    bertqa lineage runs/bertqa/serving/1796192316/model.tflite    # the version a file belongs to
    bertqa lineage --json                                         # the same, as one JSON object
    bertqa lineage --metadata-mysql bertqa@db.internal            # every version a shared server holds

With --metadata-mysql (the password from BERTQA_METADATA_PASSWORD) it reads the server the runs
recorded in, and lists the versions pushed from every runs directory that shares it, each with
its serving directory.

For each pushed version it follows the lineage in the store: Pusher <- TFLiteExporter (the
variants' figures) <- Trainer (spec and hyperparameters from its execution properties;
warm start from its training_summary.json) and SquadExampleGen (span, version, input
files and their fingerprint), and the SquadEvaluator blessing of the same model (metrics,
the baseline it was compared with, the delta). The project version comes from the
model_record.json that was pushed with the model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _json_file(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _producer_input(store, artifact, key: str):
    from bertqa.operations import metadata_store

    execution = metadata_store.producer_execution(store, artifact.id)
    if execution is None:
        return None, None
    inputs = metadata_store.execution_inputs(store, execution.id).get(key, [])
    return execution, (inputs[0] if inputs else None)


def _iso(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _evaluator_blessing(store, model_id: int) -> dict:
    from bertqa.operations import metadata_store

    found = [a for a in store.get_artifacts_by_type("ModelBlessing")
             if metadata_store.producer_component(store, a.id) == "SquadEvaluator"
             and metadata_store.custom_properties(a).get("current_model_id") == model_id]
    return metadata_store.custom_properties(max(found, key=lambda a: a.id)) if found else {}


def _variants(exported_props: dict) -> dict:
    variants = {}
    for name in filter(None, str(exported_props.get("variants", "")).split(",")):
        prefix = f"{name}_"
        variants[name] = {key[len(prefix):]: value for key, value in exported_props.items()
                          if key.startswith(prefix)}
    return variants


def version_lineage(store, pushed) -> dict:
    """Everything the store knows about one PushedModel artifact."""
    from bertqa.operations import metadata_store

    props = metadata_store.custom_properties(pushed)
    _, exported = _producer_input(store, pushed, "model")
    exporter_run, trained = _producer_input(store, exported, "model") if exported is not None else (None, None)
    examples = None
    if exporter_run is not None:
        examples = (metadata_store.execution_inputs(store, exporter_run.id).get("examples") or [None])[0]
    entry = {"version": props.get("pushed_version"), "pushed_at": _iso(pushed.create_time_since_epoch),
             "destination": props.get("pushed_destination"), "pushed_model_artifact_id": pushed.id}
    if examples is not None:
        example_props = metadata_store.custom_properties(examples)
        gen = metadata_store.producer_execution(store, examples.id)
        gen_props = metadata_store.execution_properties(gen) if gen is not None else {}
        splits = json.loads(gen_props.get("input_config") or "{}").get("splits", [])
        entry.update({"span": example_props.get("span"), "data_version": example_props.get("version"),
                      "input_base": gen_props.get("input_base"),
                      "input_files": {s.get("name"): s.get("pattern") for s in splits},
                      "input_fingerprint": example_props.get("input_fingerprint"), "examples_uri": examples.uri,
                      "questions_kept": example_props.get("questions_kept")})
    if trained is not None:
        trainer = metadata_store.producer_execution(store, trained.id)
        custom_config = json.loads(metadata_store.execution_properties(trainer).get("custom_config") or "{}")
        summary = _json_file(os.path.join(trained.uri, "training_summary.json"))
        blessing = _evaluator_blessing(store, trained.id)
        entry.update({
            "model_id": trained.id, "saved_model": os.path.join(trained.uri, "Format-Serving"),
            "spec": json.loads(custom_config.get("model_spec") or "{}"),
            "hyperparameters": {"epochs": summary.get("epochs", custom_config.get("epochs")),
                                "batch_size": summary.get("batch_size", custom_config.get("batch_size")),
                                "steps": summary.get("steps"), "steps_trained": summary.get("steps_trained"),
                                "time_budget_seconds": summary.get("time_budget_seconds"),
                                "matmul_dtype": summary.get("matmul_dtype"), "onednn": summary.get("onednn"),
                                "learning_rate": summary.get("learning_rate"),
                                "train_windows": summary.get("train_windows"),
                                "cold_start_requested": bool(custom_config.get("cold_start"))},
            "warm_started_from": summary.get("warm_started_from"),
            # --init-from: the QA-tuned base, as the run recorded it (the Trainer's base_model input).
            "initialised_from": summary.get("initialised_from"),
            "base_model_input": [a.uri for a in metadata_store.execution_inputs(store, trainer.id).get(
                "base_model", [])] or None,
            "cold_start_reason": summary.get("cold_start_reason"),
            "metrics": {key: blessing[key] for key in ("exact_match", "exact", "f1") if key in blessing},
            "blessing_reason": blessing.get("reason"),
            "baseline": ({key[len("baseline_"):]: value for key, value in blessing.items()
                          if key.startswith("baseline_")} or None),
            "f1_delta": blessing.get("f1_delta"),
        })
    if exported is not None:
        entry["variants"] = _variants(metadata_store.custom_properties(exported))
    entry["project"] = _json_file(os.path.join(pushed.uri, "model_record.json")).get("project")
    return entry


def pushed_versions(store) -> list[dict]:
    """The lineage of every version that was pushed, oldest first."""
    from bertqa.operations import metadata_store

    pushed = [a for a in store.get_artifacts_by_type("PushedModel")
              if metadata_store.custom_properties(a).get("pushed")]
    return [version_lineage(store, a) for a in sorted(pushed, key=lambda a: a.id)]


def select(versions: list[dict], target: str | None) -> dict | None:
    if not versions:
        return None
    if not target:
        return versions[-1]
    path = target.rstrip("/")
    if path.endswith(".tflite"):
        path = os.path.dirname(path)
    for entry in versions:
        if path in (entry["version"], entry.get("destination")) or os.path.basename(path) == entry["version"]:
            return entry
    return None


def _fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _serving_dir(v: dict) -> str:
    return os.path.dirname(str(v.get("destination") or "").rstrip("/"))


def table(versions: list[dict]) -> str:
    # A store shared by several runs directories (a metadata server) holds versions of each.
    several = len({_serving_dir(v) for v in versions}) > 1
    rows = [("version", "pushed at", "span", "f1", "delta", "baseline", *(("serving directory",) if several else ()))]
    for v in versions:
        baseline = v.get("baseline") or {}
        rows.append((str(v["version"]), v["pushed_at"], str(v.get("span", "?")), _fmt(v.get("metrics", {}).get("f1")),
                     _fmt(v.get("f1_delta"), "+.2f"),
                     f"version {baseline['version']}" if baseline.get("version") else "none",
                     *((_serving_dir(v),) if several else ())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def describe(v: dict) -> str:
    lines = [f"pushed version {v['version']} ({v['pushed_at']}) -> {v.get('destination')}"]
    files = ", ".join(f"{split}={pattern}" for split, pattern in (v.get("input_files") or {}).items())
    data_version = "-" if v.get("data_version") is None else v["data_version"]
    lines.append(f"  trained on: span {v.get('span')} (data version {data_version}) of "
                 f"{v.get('input_base')}: {files}; {v.get('questions_kept')} questions")
    for fingerprint in str(v.get("input_fingerprint") or "").splitlines():
        lines.append(f"    fingerprint {fingerprint}")
    spec = v.get("spec") or {}
    warm = v.get("warm_started_from")
    base = v.get("initialised_from")
    start = (f"warm-started from version {warm['version']} (model {warm['model_id']}, span {warm.get('span')})"
             if warm else f"started from the base {base['path']} ({base['kind']})" if base
             else f"cold start ({v.get('cold_start_reason')})")
    lines.append(f"  model: {v.get('model_id')} at {v.get('saved_model')}, spec {spec.get('name')}; {start}")
    h = v.get("hyperparameters") or {}
    lines.append(f"  hyperparameters: epochs {h.get('epochs')}, batch {h.get('batch_size')}, steps {h.get('steps')}, "
                 f"learning rate {h.get('learning_rate')}, {h.get('train_windows')} training windows")
    metrics = "  ".join(f"{key} {_fmt(value)}" for key, value in (v.get("metrics") or {}).items())
    lines.append(f"  metrics (eval split): {metrics}")
    baseline = v.get("baseline")
    if baseline:
        lines.append(f"  baseline: version {baseline.get('version')} (model {baseline.get('model_id')}, span "
                     f"{baseline.get('span')}), f1 {_fmt(baseline.get('f1'))}; delta {_fmt(v.get('f1_delta'), '+.2f')}")
    else:
        lines.append("  baseline: none (first push)")
    for name, figures in (v.get("variants") or {}).items():
        lines.append(f"  tflite {name}: {figures.get('size_bytes', 0) / 1e6:.1f} MB, "
                     f"{_fmt(figures.get('latency_ms_1_thread'), '.0f')} ms (1 thread), f1 {_fmt(figures.get('f1'))} "
                     f"(drop {_fmt(figures.get('f1_drop'), '+.2f')}), "
                     f"{'blessed' if figures.get('blessed') else 'not blessed'}")
    project = v.get("project") or {}
    lines.append(f"  project: bertqa-tfx {project.get('package')}, commit {project.get('git_commit')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bertqa.operations import metadata_store

    parser = argparse.ArgumentParser(prog="bertqa lineage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", default=None,
                        help="a serving version, its directory, or one of its .tflite files (default: the latest)")
    parser.add_argument("--runs-dir", default=os.path.join(_ROOT, "runs"))
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--json", action="store_true", help="one JSON object: every version and the selected one")
    metadata_store.add_metadata_server_arg(parser)
    args = parser.parse_args(argv)
    location = args.metadata_mysql or metadata_store.SqliteStore(
        os.path.join(args.runs_dir, args.pipeline_name, "metadata.sqlite"))
    if not location.exists():
        print(f"error: {location.describe()}: no ML Metadata store (has the pipeline run with --runs-dir "
              f"{args.runs_dir}?)", file=sys.stderr)
        return 2
    try:
        versions = pushed_versions(metadata_store.open_store(location))
    except metadata_store.MetadataStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chosen = select(versions, args.target)
    if args.target and chosen is None:
        print(f"error: {args.target}: not a version this pipeline pushed (see `bertqa lineage`)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"versions": versions, "model": chosen}, indent=2))
    elif not versions:
        print("nothing pushed yet")
    else:
        print(table(versions))
        print()
        print(describe(chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
