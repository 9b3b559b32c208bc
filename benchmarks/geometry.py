"""Speed of the parameter-function map analyses (issue 12): the NTK's top eigenvalues and a path.

- ``ntk_top20_seconds``: the top 20 eigenvalues of the empirical NTK Θ = J Jᵀ of the ``nanda``
  preset's transformer (p = 113, 226,688 parameters) on 1,000 inputs (113,000 outputs), matrix-free
  Lanczos in float64 as ``progsynth ntk`` runs it (``geometry.ntk.ntk_spectrum``, Hutchinson's
  trace with 16 probes included). Θ would be 113,000² entries and J 113,000 × 226,688, neither of
  which fits in memory. Target ≤ 60 s on 2 cores. The weights are the preset's initialisation
  (seed 0): the cost depends on the sizes and on how many Lanczos products converge, not on
  training.
- ``path51_seconds``: a 51-point straight path with every measure (train/test loss and accuracy,
  restricted and excluded loss, key energy, Gini; both the parameter and the function path,
  extraction of both endpoints included) between two checkpoints of the ``quick`` preset
  (``geometry.paths.straight_path``). The run is trained here for ``QUICK_EPOCHS`` epochs first
  (not timed). Target ≤ 30 s on 2 cores.

Both are timed at 1 and at 2 torch threads; the figures that count are at 2 threads, what the
command line uses on this 2-core machine (torch's default). Prints a table, then one JSON object
as the last line.
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

from progsynth.geometry.checkpoints import parse_checkpoint  # noqa: E402
from progsynth.geometry.ntk import NTKConfig, ntk_spectrum  # noqa: E402
from progsynth.geometry.paths import straight_path  # noqa: E402
from progsynth.runs.config import preset  # noqa: E402
from progsynth.runs.experiment import Experiment  # noqa: E402
from progsynth.runs.store import RunStore  # noqa: E402
from progsynth.runs.train import train  # noqa: E402

QUICK_EPOCHS = 200
"""Epochs of the quick preset trained for the path benchmark (memorised, not yet generalised)."""


def bench_ntk(threads: int) -> dict:
    torch.set_num_threads(threads)
    experiment = Experiment(preset("nanda"))
    config = NTKConfig()
    rows = config.rows(int(experiment.inputs.shape[0]))
    start = time.perf_counter()
    spectrum = ntk_spectrum(experiment.module_template, experiment.init_params(0), experiment.inputs[rows],
                            top=config.top, probes=config.probes, seed=config.seed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "method": spectrum.method, "matvecs": spectrum.matvecs,
            "outputs": spectrum.rows * spectrum.classes, "parameters": spectrum.parameters,
            "lambda1": float(spectrum.eigenvalues[0]), "effective_rank": spectrum.effective_rank,
            "memory_gib": spectrum.memory_bytes / 2**30}


def bench_path(run: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    middle = min(RunStore.open(run).checkpoint_steps(), key=lambda step: abs(step - QUICK_EPOCHS // 2))
    result = straight_path(parse_checkpoint(f"{run}@{middle}"), parse_checkpoint(f"{run}@last"), points=51)
    return {"seconds": time.perf_counter() - start, "key_frequencies": result.key_frequencies,
            "measures": len(result.parameter.values) + len(result.function.values)}


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "quick"
        train(preset("quick").override(epochs=QUICK_EPOCHS), run)
        paths = {t: bench_path(run, t) for t in (1, 2)}
    ntks = {t: bench_ntk(t) for t in (1, 2)}
    load_after = os.getloadavg()[0]
    n = ntks[2]
    print(f"NTK top 20 eigenvalues, nanda model at init: {n['parameters']:,} parameters, {n['outputs']:,} outputs "
          f"(1,000 inputs × 113), {n['method']}, {n['matvecs']} Θ products, ~{n['memory_gib']:.2f} GiB")
    print(f"{'threads':>7}{'seconds':>10}{'λ1':>12}{'eff. rank':>11}   (target ≤ 60 s)")
    for t, row in ntks.items():
        print(f"{t:>7}{row['seconds']:>10.1f}{row['lambda1']:>12.4g}{row['effective_rank']:>11.3g}")
    print(f"\n51-point path, quick preset ({QUICK_EPOCHS} epochs), the checkpoint nearest step {QUICK_EPOCHS // 2} → "
          f"the last, all measures on both paths")
    print(f"{'threads':>7}{'seconds':>10}   (target ≤ 30 s)")
    for t, row in paths.items():
        print(f"{t:>7}{row['seconds']:>10.1f}")
    print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    print(json.dumps({
        "ntk_top20_seconds": ntks[2]["seconds"], "ntk_top20_seconds_1thread": ntks[1]["seconds"],
        "ntk_matvecs": ntks[2]["matvecs"], "ntk_outputs": ntks[2]["outputs"], "ntk_parameters": ntks[2]["parameters"],
        "path51_seconds": paths[2]["seconds"], "path51_seconds_1thread": paths[1]["seconds"],
        "threads": 2, "load_average": [load_before, load_after],
    }))


if __name__ == "__main__":
    sys.exit(main())
