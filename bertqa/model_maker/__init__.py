"""TFLite Model Maker's question-answering API on top of this project's core.

Code written for Model Maker runs with only its imports changed:

    from bertqa.model_maker import model_spec, question_answer
    from bertqa.model_maker.config import ExportFormat, QuantizationConfig
    from bertqa.model_maker.question_answer import DataLoader

Every step calls the same functions the TFX components do (windowing, training,
serving, tflite_export, evaluation), in this process; this package only adapts the
calling conventions: mutable specs, DataLoader objects, export formats.
"""
