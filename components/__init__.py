"""The pipeline's custom TFX components: each a pure core (no TFX imports) and thin TFX glue."""
