"""SquadExampleGen: SQuAD JSON files -> one tf.Example per question."""
