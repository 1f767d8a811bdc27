"""The SavedModel's export and load times, with and without the Keras model's objects in it;
with --convert, the dynamic-range TFLite conversion's time, given the functions' variables or the
whole loaded SavedModel.

    .venv/bin/python benchmarks/saved_model_export.py [--spec minilm_offline] [--repeats 2] [--convert]

For each repeat and each form, one fresh process builds the spec's model (untrained), exports it
as the Trainer's export phase does (bertqa.model.serving.export_saved_model: the raw-text, logits
and on-device signatures) and loads it back as SquadEvaluator and the TFLite conversion do
(tf.saved_model.load). The forms: "weights" (what the project saves: the model's variables and
the signatures) and "keras objects" (the same module with the Keras model also tracked as a child,
as saved before, the peer: Keras then traces and stores every layer's call). Prints seconds and
the size of saved_model.pb; the two forms alternate, so compare them within one run.

--convert: for each repeat, two fresh processes convert one SavedModel of the spec (exported
first) as the TFLite export does (bertqa.on_device.conversion.convert_saved_model, dynamic range,
every on-device length): "the functions' variables" (what the project does) and "the loaded
SavedModel" (the peer, as before: tf.lite.TFLiteConverter.from_concrete_functions given the
loaded SavedModel as the trackable that owns the variables). Prints seconds and whether the two
files are byte for byte the same.
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


_ONE_CONVERSION = """
import os, sys, time
sys.path.insert(0, {repo!r})
import tensorflow as tf
from bertqa.on_device import conversion

# Loaded before the clock starts, in both forms (the peer's converter needs this very object).
loaded_saved_model = conversion._load_saved_model({saved_model!r})
conversion._load_saved_model = lambda path: loaded_saved_model
if {whole_saved_model!r}:
    def convert_given_the_loaded_saved_model(concrete, quantization, calibration):
        converter = tf.lite.TFLiteConverter.from_concrete_functions(concrete, loaded_saved_model)
        conversion._configure_quantization(converter, quantization, calibration)
        return bytes(converter.convert())

    conversion._convert = convert_given_the_loaded_saved_model
config = conversion.with_saved_model_lengths(conversion.TfliteExportConfig(), {saved_model!r})
started = time.monotonic()
model = conversion.convert_saved_model({saved_model!r}, config, conversion.QuantizationConfig.from_name("dynamic", 100))
print(time.monotonic() - started)
with open({out!r}, "wb") as f:
    f.write(model)
"""
CONVERSION_FORMS = ("the functions' variables", "the loaded SavedModel")


def one_conversion(saved_model: str, out: str, whole_saved_model: bool) -> float:
    code = _ONE_CONVERSION.format(repo=REPO, saved_model=saved_model, out=out, whole_saved_model=whole_saved_model)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def conversions(spec: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="saved-model-convert-") as scratch:
        saved_model = os.path.join(scratch, "saved_model")
        code = _ONE_EXPORT.format(repo=REPO, spec=spec, keras_objects=False, out=saved_model)
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        print("| repeat | converter given | seconds |\n|---|---|---|")
        files = {}
        for repeat in range(1, repeats + 1):
            for form in CONVERSION_FORMS:
                files[form] = os.path.join(scratch, f"{len(files)}.tflite")
                seconds = one_conversion(saved_model, files[form], whole_saved_model=form != CONVERSION_FORMS[0])
                print(f"| {repeat} | {form} | {seconds:.2f} |", flush=True)
            with open(files[CONVERSION_FORMS[0]], "rb") as a, open(files[CONVERSION_FORMS[1]], "rb") as b:
                print(f"repeat {repeat}: the files are {'' if a.read() == b.read() else 'NOT '}byte for byte the same")


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
    parser.add_argument("--convert", action="store_true", help="time the TFLite conversion instead")
    args = parser.parse_args(argv)
    if args.convert:
        conversions(args.spec, args.repeats)
        return 0
    print("| repeat | form | export (s) | load (s) | saved_model.pb (MB) |\n|---|---|---|---|---|")
    for repeat in range(1, args.repeats + 1):
        for form in FORMS:
            result = one_export(args.spec, keras_objects=form == "keras objects")
            print(f"| {repeat} | {form} | {result['export_s']:.2f} | {result['load_s']:.2f} | {result['pb_mb']:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
