"""The model layer: what is trained and how it is scored.

model_spec.py (the specs: default, MobileBERT, BERT-base, TF Hub), modeling.py (the encoder and span
head), checkpoint.py and hub_encoder.py (pretrained weights in), model_cache.py (the offline
weights), training.py (with training_monitor.py), distribution.py (tf.distribute: the strategy from
TF_CONFIG or the local devices, each replica's slice of the global batches), serving.py (the
exported SavedModel and its signatures), evaluation.py (windows -> logits -> answers -> metrics),
postprocess.py (answers from logits), squad_metrics.py (the official SQuAD exact match and F1),
tuning.py (KerasTuner trials of the trainer, scored on paragraphs held out of the train split).

May import: bertqa.data.
"""
