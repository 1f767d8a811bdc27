"""The Trainer's module: run_fn for TFX's standard Trainer component."""
