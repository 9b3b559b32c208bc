"""The checkpoint schedule: dense early, log-spaced later, bounded in count.

Half the budget is spaced geometrically from step 1 (so the fast early dynamics, memorisation,
are seen in detail) and half linearly (so late phases such as cleanup are not left with gaps of
thousands of steps). Step 0 and the last step are always included.
"""

from __future__ import annotations

import numpy as np

from progsynth.errors import ConfigError


def checkpoint_schedule(total_steps: int, max_count: int = 200) -> list[int]:
    """Sorted unique steps in [0, total_steps] at which to save, at most ``max_count`` of them."""
    if total_steps < 0 or max_count < 2:
        raise ConfigError(f"need total_steps ≥ 0 and max_count ≥ 2, got {total_steps}, {max_count}")
    if total_steps + 1 <= max_count:
        return list(range(total_steps + 1))
    budget = max_count - 2
    steps = {0, total_steps}
    n_log = budget // 2
    steps.update(int(s) for s in np.unique(np.round(np.geomspace(1, total_steps, n_log))))
    n_lin = max_count - len(steps)
    if n_lin > 0:
        steps.update(int(s) for s in np.round(np.linspace(0, total_steps, n_lin + 2)))
    return sorted(steps)  # the linear points' ends (0, total) are already in: ≤ max_count in all
