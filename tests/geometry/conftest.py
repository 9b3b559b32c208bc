"""Constants of the geometry tests (the runs they read are the shared fixtures of tests/conftest.py)."""

GROKS_PATH_STEPS = (12, 150)
"""Two checkpoints of the tiny run that also have metrics rows (metrics every 2 steps): one while it
memorises (train accuracy 0.83, test accuracy below chance) and the generalised end."""
