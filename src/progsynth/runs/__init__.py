"""progsynth.runs."""
