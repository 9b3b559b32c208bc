"""progsynth.slt."""
