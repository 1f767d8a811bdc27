"""BERT extractive question answering: the library under the TFX components.

Layers, each a subpackage; a layer imports only the layers above it in this list (a lower
layer never imports a higher one; tests/test_layout.py checks it):

    data/        SQuAD files in, raw examples, tokenization, windows
    model/       specs, encoders and pretrained weights, training, the SavedModel, evaluation and metrics
    on_device/   .tflite conversion, quantization, Task Library metadata, the runtimes that run a file
    operations/  pushed models, the run lock, lineage and ML Metadata, the run report
    cli/, model_maker/   the `bertqa` command and the Model Maker-compatible API, on top

Nothing in data/, model/, on_device/ or operations/ imports TFX: the components in `components/`
wrap them, `pipeline/` wires the components, and cli/ may use all of it.
"""
