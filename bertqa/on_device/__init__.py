"""The on-device layer: the .tflite files a phone runs, and the runtimes that run them here.

conversion.py (SavedModel -> .tflite, the quantization configs), per_channel.py (per-channel
int8 weights written into the flatbuffer), task_metadata.py (the Task Library's metadata and vocab),
tflite_export.py (export_tflite: convert, quantize, add metadata, probe in the Task Library),
signatures.py (one signature per window length: names, subgraph order, choosing one),
runtime.py (running and timing a file, per question at its own length; what XNNPACK takes),
memory_probe.py (a file's memory in LiteRT, in a process of its own), scoring.py (SQuAD metrics of a
file), task_library.py (the Task Library's BertQuestionAnswerer), model_files.py (checks of a
user's model file before anything loads it).

May import: bertqa.data, bertqa.model.
"""
