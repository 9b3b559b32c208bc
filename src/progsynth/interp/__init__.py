"""progsynth.interp."""
