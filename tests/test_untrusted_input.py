"""Nothing executes what it reads, and nothing named by the data writes outside its directory.

1. A static audit: every Python source of the project (bertqa/, components/, pipeline/,
   scripts/, benchmarks/ and the root's *.py; not tests, not virtual environments) is parsed
   with `ast` and no call may deserialize or run what it reads: pickle-family loads, eval and
   exec, yaml.load without a safe loader, marshal, shelve, np.load with allow_pickle, torch.load
   without weights_only, shells, tar extraction without a filter, imports named by a variable,
   Keras loading with safe_mode off (BANNED and the checks in `_problem`, each with its reason).
   The checker is itself tested on snippets, so that a pass means something.
2. Titles, question ids and span-like strings come from the data: they are labels, never
   paths. A SQuAD file whose titles are "../../etc/x", an absolute path and an HTML tag, and
   whose ids are "a/../../b", goes through the cores that handle them (the reader, the hash
   split by title that SquadExampleGen's output config asks TFX for, and the run report's
   slices by article rendered and written to disk); every file any of them creates must be
   under the output directory, and the page shows the titles HTML-escaped.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest

from bertqa.data.squad_io import read_squad_file

REPO = pathlib.Path(__file__).resolve().parent.parent
AUDITED_DIRS = ("bertqa", "components", "pipeline", "scripts", "benchmarks")

# Fully qualified callables that are never safe on data: each one runs code chosen by its input.
BANNED = {
    "pickle.load": "unpickling runs arbitrary code (a __reduce__ in the data)",
    "pickle.loads": "unpickling runs arbitrary code (a __reduce__ in the data)",
    "pickle.Unpickler": "unpickling runs arbitrary code (a __reduce__ in the data)",
    "_pickle.load": "unpickling runs arbitrary code",
    "_pickle.loads": "unpickling runs arbitrary code",
    "cPickle.load": "unpickling runs arbitrary code",
    "cPickle.loads": "unpickling runs arbitrary code",
    "dill.load": "dill is pickle: it runs arbitrary code",
    "dill.loads": "dill is pickle: it runs arbitrary code",
    "cloudpickle.load": "cloudpickle is pickle: it runs arbitrary code",
    "cloudpickle.loads": "cloudpickle is pickle: it runs arbitrary code",
    "joblib.load": "joblib files are pickles",
    "pandas.read_pickle": "a pickle",
    "jsonpickle.decode": "jsonpickle rebuilds arbitrary objects, like pickle",
    "marshal.load": "marshal reads code objects and is not safe on untrusted data",
    "marshal.loads": "marshal reads code objects and is not safe on untrusted data",
    "shelve.open": "a shelf is a dict of pickles",
    "yaml.unsafe_load": "constructs arbitrary Python objects",
    "yaml.unsafe_load_all": "constructs arbitrary Python objects",
    "yaml.full_load": "FullLoader has had code-execution bugs; use yaml.safe_load",
    "yaml.full_load_all": "FullLoader has had code-execution bugs; use yaml.safe_load_all",
    "eval": "runs its argument as Python",
    "exec": "runs its argument as Python",
    "os.system": "runs its argument in a shell",
    "os.popen": "runs its argument in a shell",
    "subprocess.getoutput": "runs its argument in a shell",
    "subprocess.getstatusoutput": "runs its argument in a shell",
    "asyncio.create_subprocess_shell": "runs its argument in a shell",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
SUBPROCESS_CALLS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
                    "subprocess.Popen"}
# Audited files allowed a finding, as "path:line" -> why it is safe there. None today.
ALLOWED: dict[str, str] = {}


def _audited_files() -> list[pathlib.Path]:
    files = sorted(REPO.glob("*.py"))
    for directory in AUDITED_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            parts = path.relative_to(REPO).parts
            # Virtual environments (benchmarks/.peer-venv) and caches are not the project's code.
            if any(part.startswith(".") or part in ("site-packages", "__pycache__") for part in parts):
                continue
            files.append(path)
    return files


class _Auditor(ast.NodeVisitor):
    """Collects (line, problem) for every call in one module that executes or unpickles its input."""

    def __init__(self):
        self.aliases: dict[str, str] = {}  # local name -> module or module.attribute it stands for
        self.imports_tarfile = False
        self.findings: list[tuple[int, str]] = []

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802 (ast API)
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(
                ".")[0]
            self.imports_tarfile |= alias.name == "tarfile"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802 (ast API)
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}" if node.module else alias.name
        self.imports_tarfile |= node.module == "tarfile"

    def _qualified(self, func: ast.expr) -> str:
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        # A method of a computed object (tarfile.open(p).extractall): only its own name is known.
        base = self.aliases.get(func.id, func.id) if isinstance(func, ast.Name) else "?"
        return ".".join([base, *reversed(parts)])

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802 (ast API)
        name = self._qualified(node.func)
        problem = _problem(name, node, self.imports_tarfile)
        if problem:
            self.findings.append((node.lineno, problem))
        self.generic_visit(node)


def _keyword(node: ast.Call, name: str):
    for keyword in node.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _constant(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _problem(name: str, node: ast.Call, imports_tarfile: bool) -> str | None:
    if name in BANNED:
        return f"{name}: {BANNED[name]}"
    if name in ("yaml.load", "yaml.load_all"):
        loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
        loader_name = loader.attr if isinstance(loader, ast.Attribute) else getattr(loader, "id", None)
        if loader_name not in SAFE_YAML_LOADERS:
            return f"{name} without a safe Loader: constructs arbitrary Python objects (use yaml.safe_load)"
    if name in ("numpy.load", "np.load"):
        allow = _keyword(node, "allow_pickle")
        if allow is not None and not _constant(allow, False):
            return f"{name}(allow_pickle=...): an .npy/.npz with object arrays is a pickle"
    if name == "torch.load" and not _constant(_keyword(node, "weights_only"), True):
        return "torch.load without weights_only=True unpickles the file"
    if name in SUBPROCESS_CALLS:
        shell = _keyword(node, "shell")
        if shell is not None and not _constant(shell, False):
            return f"{name}(shell=...): a shell interprets whatever reaches the command line"
    if name in ("importlib.import_module", "__import__") and node.args and not isinstance(node.args[0], ast.Constant):
        return f"{name} of a computed name: imports (runs) a module chosen at run time"
    if imports_tarfile and name.endswith((".extractall", ".extract")) and _keyword(node, "filter") is None:
        return "tar extraction without filter=: members may write outside the target (../, links)"
    if _constant(_keyword(node, "safe_mode"), False):
        return f"{name}(safe_mode=False): Keras deserializes Lambda layers' Python code"
    return None


def audit(source: str) -> list[tuple[int, str]]:
    auditor = _Auditor()
    auditor.visit(ast.parse(source))
    return auditor.findings


@pytest.mark.parametrize("snippet, found", [
    ("import pickle\npickle.loads(b)", "pickle.loads"),
    ("from pickle import load as l\nl(f)", "pickle.load"),
    ("import dill\ndill.load(f)", "dill.load"),
    ("import cloudpickle as cp\ncp.loads(b)", "cloudpickle.loads"),
    ("eval(text)", "eval"),
    ("exec(code)", "exec"),
    ("import yaml\nyaml.load(f)", "yaml.load without a safe Loader"),
    ("import yaml\nyaml.load(f, Loader=yaml.FullLoader)", "yaml.load without a safe Loader"),
    ("import yaml\nyaml.unsafe_load(f)", "yaml.unsafe_load"),
    ("import marshal\nmarshal.loads(b)", "marshal.loads"),
    ("import shelve\nshelve.open(p)", "shelve.open"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "allow_pickle"),
    ("import torch\ntorch.load(p)", "torch.load without weights_only"),
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only"),
    ("import subprocess\nsubprocess.run(cmd, shell=True)", "shell"),
    ("from subprocess import check_output\ncheck_output(cmd, shell=True)", "shell"),
    ("import os\nos.system(cmd)", "os.system"),
    ("import importlib\nimportlib.import_module(name)", "computed name"),
    ("import tarfile\ntarfile.open(p).extractall(d)", "tar extraction"),
    ("import tensorflow as tf\ntf.keras.models.load_model(p, safe_mode=False)", "safe_mode=False"),
])
def test_the_audit_finds_each_kind_of_call(snippet, found):
    findings = audit(snippet)
    assert len(findings) == 1 and found in findings[0][1], findings


@pytest.mark.parametrize("snippet", [
    "model.eval()",  # a method named eval (PyTorch's), not the builtin
    "import yaml\nyaml.safe_load(f)",
    "import yaml\nyaml.load(f, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(f, yaml.CSafeLoader)",
    "import numpy as np\nnp.load(p)",
    "import numpy as np\nnp.load(p, allow_pickle=False)",
    "import torch\ntorch.load(p, weights_only=True)",
    "import subprocess\nsubprocess.run(['git', 'rev-parse', 'HEAD'], check=False)",
    "import importlib\nimportlib.import_module('json')",
    "import tarfile\ntarfile.open(p).extractall(d, filter='data')",
    "import zipfile\nzipfile.ZipFile(p).extractall(d)",  # zipfile drops '..' and absolute names itself
    "import json\njson.loads(text)",
])
def test_the_audit_passes_safe_calls(snippet):
    assert audit(snippet) == []


def test_no_project_source_executes_or_unpickles_what_it_reads():
    files = _audited_files()
    assert len(files) > 40 and REPO / "bertqa" / "data" / "squad_io.py" in files
    assert not any("tests" in f.relative_to(REPO).parts[:1] for f in files)
    findings = []
    for path in files:
        relative = path.relative_to(REPO).as_posix()
        for line, problem in audit(path.read_text(encoding="utf-8")):
            if f"{relative}:{line}" not in ALLOWED:
                findings.append(f"{relative}:{line}: {problem}")
    assert not findings, "\n".join(findings)


# --- data-derived names never become paths --------------------------------------------------------

HOSTILE_TITLES = ["../../etc/x", "<script>alert(1)</script>", "a/b\\c", "..", "CON"]
HOSTILE_IDS = ["a/../../b", "../../../tmp/owned", "/etc/passwd", "q\\..\\..\\x", ".."]


def _squad_file(path: pathlib.Path, absolute_title: str) -> None:
    articles = []
    for a, title in enumerate([*HOSTILE_TITLES, absolute_title]):
        context = f"The cat {a} sat on the mat."
        qas = [{"id": f"{qid}#{a}", "question": f"Who sat in {title}?", "answers": [{"text": "cat", "answer_start": 4}]}
               for qid in HOSTILE_IDS]
        articles.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")


def _tree(root: pathlib.Path) -> set[pathlib.Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """(input file, output dir, snapshot of tmp_path): output and working dir three levels down,
    so that "../../" from either still lands inside tmp_path, where the snapshot sees it."""
    out = tmp_path / "run" / "deep" / "out"
    cwd = tmp_path / "cwd" / "deep" / "here"
    for directory in (out, cwd, tmp_path / "in"):
        directory.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    source = tmp_path / "in" / "train.json"
    # An absolute title pointing into tmp_path: if anything wrote to it, the snapshot shows it.
    _squad_file(source, str(tmp_path / "absolute-title-target"))
    return source, out, _tree(tmp_path)


def _created_outside(tmp_path: pathlib.Path, before: set[pathlib.Path], out: pathlib.Path) -> list[str]:
    return sorted(str(p) for p in _tree(tmp_path) - before if out not in p.parents and p != out)


def test_reader_keeps_hostile_titles_and_ids_as_labels_and_writes_nothing(sandbox, tmp_path):
    source, out, before = sandbox
    examples, report = read_squad_file(str(source))
    assert report.kept == len(examples) == 6 * len(HOSTILE_IDS) and not report.repaired
    assert {e.title for e in examples} == {*HOSTILE_TITLES, str(tmp_path / "absolute-title-target")}
    assert "a/../../b#0" in {e.id for e in examples}
    assert _tree(tmp_path) == before


def test_split_by_title_hashes_the_title_and_writes_nothing(sandbox, tmp_path):
    # SquadExampleGen's split_by_title asks TFX to partition on the `title` feature; TFX hashes
    # the feature's bytes (sha256) into buckets: this is the function its Beam step calls.
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn

    from bertqa.data.raw_example import to_tf_example
    from components.squad_example_gen.component import split_by_title

    source, out, before = sandbox
    examples, _ = read_squad_file(str(source))
    split_config = split_by_title().split_config
    buckets = [9, 10]
    by_title: dict[str, set[int]] = {}
    for example in examples:
        partition = _PartitionFn(to_tf_example(example), len(buckets), buckets, split_config)
        by_title.setdefault(example.title, set()).add(partition)
    assert all(len(partitions) == 1 and partitions <= {0, 1} for partitions in by_title.values())
    assert _tree(tmp_path) == before


def test_run_report_with_hostile_titles_writes_only_into_its_directory(sandbox, tmp_path):
    from bertqa.operations import report_data, run_report
    from components.run_reporter.core import write_report

    source, out, before = sandbox
    examples, data_report = read_squad_file(str(source))
    scores = report_data.score_questions(examples, {e.id: "cat" for e in examples[::2]})
    report = run_report.RunReport(
        metrics={"exact_match": 50.0, "f1": 50.0}, blessed=False, reason="not blessed", pushed=False,
        pushed_destination=None, scores=scores,
        data_report={"total": data_report.to_dict(), "by_input_split": {"eval": data_report.to_dict()}})
    files = write_report(report, str(out))

    assert _created_outside(tmp_path, before, out) == []
    for path in (files.report, files.sliced_metrics, files.tfma_eval_result):
        assert out in pathlib.Path(path).parents
    assert files.beside_pushed_model is None
    assert {p.name for p in out.iterdir()} == {"report.html", "sliced_metrics.json", "tfma_eval_result"}
    page = pathlib.Path(files.report).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>../../etc/x</td>" in page  # a label in the article slice, not a path
    articles = {row["value"] for row in json.loads(pathlib.Path(files.sliced_metrics).read_text())["slices"]["article"]}
    assert articles == {*HOSTILE_TITLES, str(tmp_path / "absolute-title-target")}
    assert not (tmp_path / "absolute-title-target").exists() and not os.path.exists("../../etc/x")


def test_the_snapshot_sees_a_write_that_escapes_the_output_directory(sandbox, tmp_path):
    _, out, before = sandbox
    (out / "fine.txt").write_text("x")
    escaped = pathlib.Path(os.path.normpath(out / ".." / ".." / "x"))
    escaped.write_text("x")
    assert _created_outside(tmp_path, before, out) == [str(escaped)]


def test_split_names_that_would_be_paths_are_refused():
    from components.bert_qa_transform import core as transform_core

    assert transform_core.checked_split_names(["train", "eval"]) == ["train", "eval"]
    for name in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="not plain words"):
            transform_core.checked_split_names(["train", name])


def test_run_report_goes_beside_a_pushed_version_only(tmp_path):
    from bertqa.operations import run_report
    from components.run_reporter.core import write_report

    def report_to(destination):
        report = run_report.RunReport(metrics={"exact_match": 0.0, "f1": 0.0}, blessed=True, reason="blessed",
                                      pushed=True, pushed_destination=str(destination), scores=())
        return write_report(report, str(tmp_path / "out" / destination.name)).beside_pushed_model

    version = tmp_path / "serving" / "1796285285"
    version.mkdir(parents=True)
    for name in ("model.tflite", "vocab.txt"):
        (version / name).write_bytes(b"x")
    (version / "model_record.json").write_text("{}")
    assert report_to(version) == str(version / "report.html") and (version / "report.html").is_file()
    # A destination property pointing anywhere else (not a version Pusher wrote) is not written into.
    for elsewhere in (tmp_path / "etc", tmp_path / "serving" / "12345"):
        elsewhere.mkdir()
        (elsewhere / "model.tflite").write_bytes(b"x")  # not a complete version all the same
        assert report_to(elsewhere) is None and not (elsewhere / "report.html").exists()
