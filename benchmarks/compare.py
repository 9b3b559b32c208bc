"""Speed of ``progsynth compare`` (issue 13): 8 seeds × ~200 checkpoints of the quick preset.

- ``compare_seconds``: ``compare.convergence.compare_runs`` with its defaults (800 inputs, k = 10,
  every common checkpoint step: programs, held-out agreement, CKA, mutual k-NN and stitching at
  both sites, at the final checkpoints and at every step) over eight seeds of the ``quick`` preset
  trained together here first (not timed). Target ≤ 120 s on 2 cores.
- ``peak_rss_mib``: the process's peak resident memory after the comparison, beside the size of one
  run's checkpoints on disk: the comparison holds one checkpoint in memory at a time (tested in
  tests/compare), so memory does not grow with the number of checkpoints.

Timed at 2 threads (torch's default here, what the command uses) and at 1 thread. Prints a table,
then one JSON object as the last line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as benchmarks/train_step.py: no spinning on a shared machine

import torch  # noqa: E402

from progsynth.compare.convergence import CompareConfig, compare_runs  # noqa: E402
from progsynth.runs.config import preset  # noqa: E402
from progsynth.runs.store import RunStore  # noqa: E402
from progsynth.runs.train import train  # noqa: E402

SEEDS = list(range(8))


def bench(runs: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    c = compare_runs([runs], CompareConfig())
    return {"seconds": time.perf_counter() - start, "steps": len(c.over_training["steps"]), "runs": len(c.runs),
            "rows": c.rows, "cka_hidden_last": c.over_training["cka_hidden"][-1],
            "agreement_last": c.over_training["agreement"][-1]}


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder) / "quick"
        started = time.perf_counter()
        train(preset("quick"), runs, seeds=SEEDS)
        trained = time.perf_counter() - started
        checkpoint_mib = sum(f.stat().st_size for f in (runs / "seed-0" / "checkpoints").iterdir()) / 2**20
        steps = len(RunStore.open(runs / "seed-0").checkpoint_steps())
        results = {t: bench(runs, t) for t in (2, 1)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()[0]
    r = results[2]
    print(f"compare: {r['runs']} seeds of the quick preset (trained together in {trained:.0f} s, not timed), "
          f"{steps} checkpoints each, {r['steps']} common steps, {r['rows']} inputs")
    print(f"{'threads':>7}{'seconds':>10}   (target ≤ 120 s)")
    for t, row in results.items():
        print(f"{t:>7}{row['seconds']:>10.1f}")
    print(f"peak resident memory {peak:.0f} MiB (one run's checkpoints on disk: {checkpoint_mib:.0f} MiB)")
    print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    print(json.dumps({"compare_seconds": r["seconds"], "compare_seconds_1thread": results[1]["seconds"],
                      "runs": r["runs"], "common_steps": r["steps"], "inputs": r["rows"], "threads": 2,
                      "peak_rss_mib": peak, "checkpoints_mib_per_run": checkpoint_mib,
                      "load_average": [load_before, load_after]}))


if __name__ == "__main__":
    sys.exit(main())
