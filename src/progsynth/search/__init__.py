"""progsynth.search."""
