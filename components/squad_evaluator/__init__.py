"""SquadEvaluator: official SQuAD exact match / F1 of a trained model, and a ModelBlessing."""
