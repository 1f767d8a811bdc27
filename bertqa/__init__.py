"""BERT extractive question answering: the pure library under the TFX components.

Nothing in this package imports TFX; the components in `components/` wrap it.
"""
