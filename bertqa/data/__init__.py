"""The data layer: SQuAD JSON in, raw examples, WordPiece tokens and model windows out.

squad_io.py (reading SQuAD 1.1/2.0 files and accounting for every record dropped or repaired),
answer_alignment.py (locating answers in their context), raw_example.py (SquadExample and its
tf.Example form), tokenization.py, windowing.py (doc-stride windows for training and
evaluation), serving_windows.py (the same windows inside the SavedModel's graph).

May import: nothing else of the project (it is the lowest layer).
"""
