"""BertQATransform: raw examples -> doc-stride windows of WordPiece ids, + the tokenizer artifact."""
