"""Sweeps on Ray (issue 14): one worker against two, and Ray's cost per run.

Sixteen quick-size runs (the ``quick`` preset's transformer, p = 53, 40 % train, shortened to
``EPOCHS`` epochs so the benchmark takes minutes: 16 grid points over the learning rate, one seed
each, single-threaded) are trained three ways on this machine:

- ``in_process``: one after the other in this process with ``runs.train.train`` (no Ray), torch at
  one thread: the reference;
- ``ray_1``: ``run_sweep`` with one worker (a local Ray cluster of one CPU, started and stopped by
  the sweep, counted in the time);
- ``ray_2``: the same with two workers on the 2 cores.

``ray_speedup`` = ray_1 / ray_2 (target ≥ 1.7 on 2 cores); ``ray_overhead_per_run_s`` =
(ray_1 − the time the 16 tasks spent inside ``run_point``) / 16: Ray's cost per run (cluster start
and stop, task dispatch, worker processes importing torch and progsynth, results back), amortised.
``in_process`` shows what the same work costs without Ray. Run it on an otherwise idle machine. Prints a table, then one
JSON object as the last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as benchmarks/train_step.py: no spinning on a shared machine

import torch  # noqa: E402

from progsynth.runs.config import preset  # noqa: E402
from progsynth.runs.sweep import SweepOptions, SweepSpec, run_sweep  # noqa: E402
from progsynth.runs.train import train  # noqa: E402

RUNS = 16
EPOCHS = 800
"""Epochs per run: a few seconds each, so that Ray's fixed costs are visible against the work."""


def spec() -> SweepSpec:
    base = preset("quick").override(epochs=EPOCHS)
    rates = tuple(round(1e-3 + i * 2.5e-4, 6) for i in range(RUNS))
    return SweepSpec(base, {"optim.lr": rates}, ({},), (0,))


def in_process(folder: Path) -> float:
    torch.set_num_threads(1)
    start = time.perf_counter()
    for point in spec().expand():
        train(point.config, folder / point.name)
    return time.perf_counter() - start


def on_ray(folder: Path, workers: int) -> tuple[float, float]:
    """Wall time of the sweep and the time its tasks spent inside ``run_point``."""
    start = time.perf_counter()
    result = run_sweep(spec(), folder, SweepOptions(workers=workers))
    assert all(p["status"] == "finished" for p in result.points), result.points
    return time.perf_counter() - start, sum(p["seconds"] for p in result.points)


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        reference = in_process(root / "in-process")
        one, inside = on_ray(root / "ray-1", 1)
        two, _ = on_ray(root / "ray-2", 2)
    load_after = os.getloadavg()[0]
    speedup, overhead = one / two, (one - inside) / RUNS
    print(f"{RUNS} runs of the quick preset's model, {EPOCHS} epochs each, one thread per run, {os.cpu_count()} CPUs")
    print(f"{'how':<34}{'seconds':>9}{'per run':>9}")
    for label, seconds in (("in process, one after another", reference), ("Ray, 1 worker", one),
                           ("  of which inside the tasks", inside), ("Ray, 2 workers", two)):
        print(f"{label:<34}{seconds:>9.1f}{seconds / RUNS:>9.2f}")
    print(f"ray_speedup (1 worker / 2 workers) {speedup:.2f} (target ≥ 1.7); Ray's overhead per run "
          f"{overhead:.2f} s")
    print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    print(json.dumps({"ray_speedup": speedup, "ray_overhead_per_run_s": overhead, "in_process_seconds": reference,
                      "ray_1_worker_seconds": one, "ray_1_worker_task_seconds": inside, "ray_2_workers_seconds": two,
                      "runs": RUNS, "epochs": EPOCHS, "load_average": [load_before, load_after]}))


if __name__ == "__main__":
    sys.exit(main())
