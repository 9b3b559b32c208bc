"""progsynth.tasks."""
