"""The pushed versions `bertqa serve` answers with: each version's model.tflite in LiteRT, answers with offsets.

`SpanAnswerer` is bertqa.on_device.litert_answerer.LiteRtAnswerer (the same tokenizer,
doc-stride windows, smallest signature per window, whole-word n-best decoding, score = start
logit + end logit) with each answer's place in the context, for the page to highlight it.

`PushedVersions` reads `<serving_dir>/<version>/` (bertqa.operations.pushed_models) on every
call, so a version pushed while the server runs shows up, and loads a version's model on its
first question, after bertqa.on_device.model_files has checked the file (LiteRT's interpreter
can crash the process on a truncated one). A LiteRT interpreter must not run in two threads
at once: each version has a small pool of answerers (`_Pool`), one interpreter each, and a
request holds one for the whole question. Interpreters release the GIL while they run, so two
of them use two cores.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

_LOG = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
VOCAB_FILE = "vocab.txt"
MAX_TOP_K = 20  # the n-best list's length (postprocess.PostprocessConfig.n_best_size)
_VERSION_NAME = re.compile(r"[0-9]{1,20}")  # Pusher names versions by Unix time (pushed_models._versions)


class VersionNotFound(LookupError):
    """No complete pushed version of that name: the request's fault (404)."""


class ModelUnavailable(RuntimeError):
    """The version exists but its model.tflite cannot be run (damaged, or not a QA model): the server's (500)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # context[start:end] == text; offsets in code points (Python str indices)
    end: int
    score: float  # start logit + end logit, as the Task Library's pos.logit


class SpanAnswerer:
    """answer(context, question, top_k) -> [Answer], best first; one LiteRT interpreter: one thread at a time.

    LiteRtAnswerer (its answer_spans: the offsets postprocess keeps for every n-best answer) is
    imported here, not with the module: TensorFlow (the tokenizer's) loads with the first model,
    so that `bertqa serve` starts listening at once.
    """

    def __init__(self, tflite_path: str, vocab_path: str, do_lower_case: bool = True, num_threads: int = 1):
        from bertqa.on_device.litert_answerer import LiteRtAnswerer

        self._answerer = LiteRtAnswerer(tflite_path, vocab_path, do_lower_case, num_threads=num_threads)

    def answer(self, context: str, question: str, top_k: int = 1) -> list[Answer]:
        return [Answer(text, start, end, score)
                for text, start, end, score in self._answerer.answer_spans(context, question, top_k)]


class _Pool:
    """Up to `size` answerers, made when all made ones are busy; borrow() lends one to one thread at a time."""

    def __init__(self, make: Callable[[], SpanAnswerer], size: int):
        self._make = make
        self._size = size
        self._made = 0
        self._idle: queue.LifoQueue[SpanAnswerer] = queue.LifoQueue()
        self._lock = threading.Lock()

    def add(self, answerer: SpanAnswerer) -> None:
        with self._lock:
            self._made += 1
        self._idle.put(answerer)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[SpanAnswerer]:
        try:
            answerer = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._made < self._size
                self._made += grow
            if grow:
                try:
                    answerer = self._make()
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                answerer = self._idle.get()  # an interpreter is free when its request ends
        try:
            yield answerer
        finally:
            self._idle.put(answerer)


@dataclasses.dataclass(frozen=True)
class Timed:
    version: str
    answers: list[Answer]
    milliseconds: float  # answering: tokenizing, the interpreter's runs, decoding
    queued_milliseconds: float  # waiting for the version's model to load or for a free interpreter


class PushedVersions:
    """The versions in `serving_dir`, and answers from them (thread-safe; see the module docstring).

    `interpreters`: answerers (LiteRT interpreters) per version at most; `threads`: CPU threads
    of each; `max_loaded`: versions kept loaded, the least recently asked unloaded beyond that.
    """

    def __init__(self, serving_dir: str, interpreters: int = 2, threads: int = 1, max_loaded: int = 4):
        self.serving_dir = serving_dir
        self._interpreters = interpreters
        self._threads = threads
        self._max_loaded = max_loaded
        self._loaded: collections.OrderedDict[str, _Pool] = collections.OrderedDict()
        self._broken: dict[str, tuple[tuple, str]] = {}  # version -> (file key, why): not checked again
        self._loading: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self._scratch = tempfile.TemporaryDirectory(prefix="bertqa-serve-")

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
        self._scratch.cleanup()

    def pushed(self) -> list:
        """Every complete version (pushed_models.PushedModel), oldest first."""
        from bertqa.operations import pushed_models

        return pushed_models.list_pushed(self.serving_dir)

    def describe(self) -> dict:
        """What GET /api/versions returns: the versions newest first, each with the one pushed before it."""
        pushed = self.pushed()
        versions = []
        for index, model in enumerate(pushed):
            record = model.record
            path = os.path.join(model.path, MODEL_FILE)
            metrics = record.get("metrics") or {}
            versions.append({
                "version": model.version,
                "pushed_at": _iso(model.version),
                "previous": pushed[index - 1].version if index else None,
                "f1": metrics.get("f1"),
                "exact_match": metrics.get("exact_match", metrics.get("exact")),
                "span": record.get("span"),
                "variant": record.get("pushed_variant"),
                "size_bytes": os.path.getsize(path) if os.path.exists(path) else None,
                "exported_at": record.get("exported_at"),
            })
        versions.reverse()
        return {"serving_dir": self.serving_dir, "versions": versions,
                "newest": versions[0]["version"] if versions else None,
                "previous": versions[0]["previous"] if versions else None}

    def newest(self) -> str | None:
        pushed = self.pushed()
        return pushed[-1].version if pushed else None

    def answer(self, version: str | None, context: str, question: str, top_k: int = 1,
               asked: float | None = None) -> Timed:
        """The version's answers (None: the newest) with the time taken; VersionNotFound, ModelUnavailable.

        `asked`: when the question came (time.perf_counter()), if before this call (a queue of threads).
        """
        asked = time.perf_counter() if asked is None else asked
        if version is None:
            version = self.newest()
            if version is None:
                raise VersionNotFound(f"nothing is pushed in {self.serving_dir} yet (run the pipeline: make run)")
        if not _VERSION_NAME.fullmatch(version):
            raise VersionNotFound(f"no pushed version {version!r}: versions are Unix times (GET /api/versions)")
        if not os.path.isdir(os.path.join(self.serving_dir, version)):
            raise VersionNotFound(f"no pushed version {version} in {self.serving_dir} (GET /api/versions)")
        pool = self._pool(version)
        with pool.borrow() as answerer:
            started = time.perf_counter()
            answers = answerer.answer(context, question, top_k)
            done = time.perf_counter()
        return Timed(version, answers, 1000.0 * (done - started), 1000.0 * (started - asked))

    def _pool(self, version: str) -> _Pool:
        with self._lock:
            if version in self._loaded:
                self._loaded.move_to_end(version)
                return self._loaded[version]
        with self._lock:
            loading = self._loading[version]
        with loading:  # one load per version, whoever asks first
            with self._lock:
                if version in self._loaded:
                    return self._loaded[version]
            pool = self._load(version)
            with self._lock:
                self._loaded[version] = pool
                while len(self._loaded) > self._max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)  # requests holding it finish with it
                    _LOG.info("unloaded version %s (more than %d loaded)", dropped, self._max_loaded)
            return pool

    def _load(self, version: str) -> _Pool:
        from bertqa.on_device import model_files, task_metadata
        from bertqa.operations import pushed_models

        pushed = pushed_models.read_version(self.serving_dir, version)
        if pushed is None:
            raise VersionNotFound(f"no complete pushed version {version} in {self.serving_dir} (GET /api/versions)")
        path = os.path.join(pushed.path, MODEL_FILE)
        stat = os.stat(path)
        key = (stat.st_size, stat.st_mtime_ns)
        if version in self._broken and self._broken[version][0] == key:
            raise ModelUnavailable(self._broken[version][1])
        try:
            # Before LiteRT sees the file: its interpreter does not verify the flatbuffer.
            checked = model_files.check_tflite_for_evaluation(path, vocab_given=True)
            if checked.has_packed_vocab:  # what an app reads; the pushed vocab.txt otherwise
                vocab = task_metadata.unpack_vocab(path, _fresh_dir(self._scratch.name, version))
            else:
                vocab = os.path.join(pushed.path, VOCAB_FILE)
            identity = pushed.record.get("identity") or {}
            lower = identity.get("do_lower_case", True) is not False

            def make() -> SpanAnswerer:
                answerer = SpanAnswerer(path, vocab, do_lower_case=lower, num_threads=self._threads)
                answerer.answer("A first run packs the weights.", "What does it pack?")  # not in a user's time
                return answerer

            pool = _Pool(make, self._interpreters)
            pool.add(make())  # a file LiteRT cannot run fails here, once
        except (model_files.ModelFileError, ValueError, RuntimeError, OSError) as error:
            why = f"version {version}: its model cannot be run: {_one_line(error)}"
            self._broken[version] = (key, why)
            raise ModelUnavailable(why) from error
        _LOG.info("loaded version %s (%s)", version, path)
        return pool


def _fresh_dir(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    return path


def _iso(version: str) -> str | None:
    try:
        moment = datetime.datetime.fromtimestamp(int(version), tz=datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
