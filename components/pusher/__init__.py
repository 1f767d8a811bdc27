"""Pusher: TFX's component with an executor that makes each pushed version appear whole."""
