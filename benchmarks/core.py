"""Speed of the learning core against references measured in the same run.

- ``lens_over_torch``: ms per lens training step of a 784→256→10 ReLU MLP (batch 256, Adam)
  divided by ms per step of a plain nn.Module + torch.optim.Adam loop (target ≤ 1.10).
- ``packed_speedup``: bit-packed evaluation of a ≥1,000-gate Boolean circuit against the same
  circuit on unpacked numpy booleans (target ≥ 20×).

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import json


def bench_lens_step() -> dict:
    """Returns {"lens_ms": ..., "torch_ms": ..., "lens_over_torch": ...}."""
    raise NotImplementedError


def bench_packed_eval() -> dict:
    """Returns {"packed_ms": ..., "unpacked_ms": ..., "gates": ..., "examples": ..., "packed_speedup": ...}."""
    raise NotImplementedError


def main() -> None:
    step, packed = bench_lens_step(), bench_packed_eval()
    print(f"{'benchmark':<44}{'progsynth':>12}{'reference':>12}{'ratio':>10}")
    print(f"{'MLP 784-256-10 Adam step, batch 256 (ms)':<44}{step['lens_ms']:>12.3f}{step['torch_ms']:>12.3f}"
          f"{step['lens_over_torch']:>10.3f}")
    print(f"{'packed circuit eval vs numpy bool (ms)':<44}{packed['packed_ms']:>12.3f}{packed['unpacked_ms']:>12.3f}"
          f"{packed['packed_speedup']:>10.1f}")
    print(json.dumps({**step, **packed}))


if __name__ == "__main__":
    main()
