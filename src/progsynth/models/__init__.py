"""progsynth.models."""
