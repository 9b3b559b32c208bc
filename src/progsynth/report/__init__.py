"""progsynth.report."""
