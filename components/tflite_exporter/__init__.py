"""TFLiteExporter: a blessed SavedModel -> quantized .tflite files with Task Library metadata."""
