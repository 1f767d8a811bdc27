"""The SavedModel's export and load times, with and without the Keras model's objects in it.

    .venv/bin/python benchmarks/saved_model_export.py [--spec minilm_offline] [--repeats 2]

For each repeat and each form, one fresh process builds the spec's model (untrained), exports it
as the Trainer's export phase does (bertqa.model.serving.export_saved_model: the raw-text, logits
and on-device signatures) and loads it back as SquadEvaluator and the TFLite conversion do
(tf.saved_model.load). The forms: "weights" (what the project saves: the model's variables and
the signatures) and "keras objects" (the same module with the Keras model also tracked as a child,
as saved before, the peer: Keras then traces and stores every layer's call). Prints seconds and
the size of saved_model.pb; the two forms alternate, so compare them within one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMS = ("weights", "keras objects")

_ONE_EXPORT = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
import tensorflow as tf
import tensorflow_text  # noqa: F401
from bertqa.model import model_cache, model_spec, serving, training
from bertqa.data.windowing import WindowConfig

if {keras_objects!r}:
    class WithKerasObjects(serving.QaServingModule):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            self.keras_model = model  # tracked: saved as a child object, with its layers
    serving.QaServingModule = WithKerasObjects  # export_saved_model builds the module by this name

spec = model_spec.get({spec!r})
model = training.build_model(spec)
vocab = str(model_cache.ensure_default_model() / "vocab.txt")
started = time.monotonic()
window = WindowConfig(spec.seq_len, spec.query_len, spec.doc_stride)
serving.export_saved_model(model, vocab, spec.do_lower_case, window, {out!r}, on_device_lengths=spec.on_device_lengths)
exported = time.monotonic() - started
started = time.monotonic()
tf.saved_model.load({out!r})
loaded = time.monotonic() - started
print(json.dumps({{"export_s": exported, "load_s": loaded,
                  "pb_mb": os.path.getsize(os.path.join({out!r}, "saved_model.pb")) / 1e6}}))
"""


def one_export(spec: str, keras_objects: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="saved-model-export-") as scratch:
        code = _ONE_EXPORT.format(repo=REPO, spec=spec, keras_objects=keras_objects,
                                  out=os.path.join(scratch, "saved_model"))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="minilm_offline")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print("| repeat | form | export (s) | load (s) | saved_model.pb (MB) |\n|---|---|---|---|---|")
    for repeat in range(1, args.repeats + 1):
        for form in FORMS:
            result = one_export(args.spec, keras_objects=form == "keras objects")
            print(f"| {repeat} | {form} | {result['export_s']:.2f} | {result['load_s']:.2f} | {result['pb_mb']:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
