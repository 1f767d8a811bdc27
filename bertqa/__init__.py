"""BERT extractive question answering: the library under the TFX components.

Layers, each a subpackage; a layer imports only the layers above it in this list (a lower
layer never imports a higher one; tests/test_layout.py checks it):

    data/        SQuAD files in, raw examples, tokenization, windows
    model/       specs, encoders and pretrained weights, training, the SavedModel, evaluation and metrics
    on_device/   .tflite conversion, quantization, Task Library metadata, the runtimes that run a file
    operations/  pushed models, the run lock, lineage and ML Metadata, the run report
    model_maker/ the Model Maker-compatible API, on top of the library

Nothing in data/, model/, on_device/ or operations/ imports TFX, and nothing under bertqa/ imports
what sits above the library: the components in `components/` wrap it, `pipeline/` wires the
components and declares their options, the runners (local_runner.py, kubeflow_runner.py) run the
pipeline, and the `bertqa` command (bertqa_cli/) sits on top of them.
"""
