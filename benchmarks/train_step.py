"""Speed of a training step against references measured in the same run (issue 3, REFERENCE §3).

- ``nanda_speedup``: Nanda et al.'s setup, p = 113, 3,830 training pairs, one full-batch AdamW step
  (lr 1e-3, weight decay 1, betas (0.9, 0.98)) in float32.
  progsynth: the fast transformer (MLP and unembedding only at ``=``, per-token tables) made a
  lens by ``core.smooth.from_module`` and stepped by ``core.learner.Learner`` with
  ``softmax_cross_entropy()`` and ``core.optim.adamw``.
  reference: the straightforward all-positions ``nn.Module`` (as the paper's code computes it)
  with ``torch.optim.AdamW`` at its defaults and ``F.cross_entropy``, like the paper's training
  loop. Both start from the same weights; the first step's losses are printed as a check that
  the two time the same computation.
  Timed at 2 threads (the figure that counts) and at 1 thread: warm-up, then interleaved rounds
  (the order alternates per round), medians of the per-step times.
- ``vmap8_speedup``: eight seeds of the ``quick`` preset stepped together through torch.func.vmap
  (as ``progsynth train --seeds 0-7`` does) against the same eight stepped one after another.
- ``loop_overhead``: the ``nanda`` preset's training loop (metrics, checkpoints and resume points
  included) per epoch against its bare step, for a few hundred epochs (``bench_loop``).

GFLOP/s are achieved against each step's matmul FLOP count from the shapes (``*_step_flops``):
2mnk per product, forward plus backward (the backward of a product whose two operands both need
gradients costs twice its forward), elementwise work not counted.

Prints a table, then one JSON object as the last line. On a shared machine the absolute times
move with the load (the run prints the load average); the ratio is measured interleaved to be
robust to that. REFERENCE §3's figures for comparison, 2 threads on an idle machine of this kind:
paper-style 155 ms, MLP and unembedding only at ``=`` plus per-token tables 49 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable

# torch's OpenMP runtime (libgomp) lets a thread spin ~300,000 times at each barrier before it
# sleeps. On a shared machine whose cores are busy with other processes, the spinning thread holds
# the core its teammate needs, so every parallel region can cost a scheduler time slice (measured
# on this 2-core machine under load: a 2-thread step up to 8x slower than a 1-thread one). A short
# spin keeps idle-machine behaviour and removes that; it is set before torch loads and applies to
# both sides of every comparison. Export GOMP_SPINCOUNT to override.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
SPINCOUNT = os.environ["GOMP_SPINCOUNT"] if "torch" not in sys.modules else "libgomp default (torch loaded first)"

import torch  # noqa: E402  (after the OpenMP setting above)
import torch.nn.functional as F  # noqa: E402

from progsynth.core.learner import Learner  # noqa: E402
from progsynth.core.losses import learning_rate, softmax_cross_entropy  # noqa: E402
from progsynth.core.optim import adamw  # noqa: E402
from progsynth.core.smooth import from_module  # noqa: E402
from progsynth.models.transformer import (  # noqa: E402
    N_CTX,
    StraightforwardTransformer,
    Transformer,
    TransformerConfig,
)
from progsynth.tasks.modular import ModularTask, modular_dataset  # noqa: E402
from progsynth.core.allocator import keep_freed_memory  # noqa: E402

LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 1.0, (0.9, 0.98), 1e-8


def fast_step_flops(c: TransformerConfig, n: int) -> int:
    """Multiply-add FLOPs of one training step of ``Transformer`` (the fast path, with the compiled
    row sums) on n examples: matrix products and the weighted row sums, forward and backward (×3)."""
    v, hd, width = c.d_vocab, c.n_heads * c.d_head, c.d_mlp + c.p
    tables = (
        v * c.d_model * hd                # queries at '=' per token
        + 2 * N_CTX * v * c.d_model * hd  # keys and values per (position, token)
        + N_CTX * v * v * hd              # score table
        + hd * c.d_model * width          # W_O W_in and W_O W_U per head
        + N_CTX * v * hd * width          # head rows: each head's value through them, per (position, token)
        + v * c.d_model * width           # the query stream's own MLP input and direct logits
        + c.d_mlp * c.d_model * c.p       # W_out W_U
    )
    per_example = (N_CTX * c.n_heads + 1) * width + c.d_mlp * c.p  # the row sums, relu(·) (W_out W_U)
    return 3 * 2 * (tables + n * per_example)


def straightforward_step_flops(c: TransformerConfig, n: int) -> int:
    """Matmul FLOPs of one training step of ``StraightforwardTransformer`` on n examples."""
    hd = c.n_heads * c.d_head
    per_position = 3 * c.d_model * hd + 2 * N_CTX * hd + hd * c.d_model + 2 * c.d_model * c.d_mlp + c.d_model * c.p
    return 3 * 2 * n * N_CTX * per_position


def _progsynth_step(config: TransformerConfig, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One Learner step of the fast model as a lens; returns the step's loss."""
    lens = from_module(Transformer(config, torch.Generator().manual_seed(0)))
    learner = Learner(lens, softmax_cross_entropy(), adamw(LR, BETAS, EPS, WEIGHT_DECAY), learning_rate(1.0))
    state = learner.init(lens.init())

    def step() -> torch.Tensor:
        nonlocal state
        state, loss = learner.step(state, x, y)
        return loss

    return step


def _reference_step(config: TransformerConfig, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One plain PyTorch step of the all-positions model with torch.optim.AdamW."""
    model = StraightforwardTransformer(config, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def median_ms(steps: dict[str, Callable[[], torch.Tensor]], threads: int, warmup: int, rounds: int,
               per_round: int) -> dict[str, float]:
    """Median ms per step of each stepper at ``threads`` threads, timed in interleaved rounds."""
    torch.set_num_threads(threads)
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(per_round):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def bench_nanda_step(threads: tuple[int, ...] = (2, 1), warmup: int = 3, rounds: int = 6, per_round: int = 3) -> dict:
    """Returns {"threads": {t: {"progsynth_ms", "reference_ms", "nanda_speedup", "gflops",
    "reference_gflops"}}, "first_loss": {...}, "progsynth_gflop", "reference_gflop", "n_train"}."""
    data = modular_dataset(ModularTask(p=113, op="add", train_fraction=0.3, split_seed=0))
    x, y = data.tokens()[data.train_idx], data.labels[data.train_idx]
    config = TransformerConfig(p=113)
    steps = {"progsynth": _progsynth_step(config, x, y), "reference": _reference_step(config, x, y)}
    first_loss = {name: float(step()) for name, step in steps.items()}
    flops = {"progsynth": fast_step_flops(config, len(x)), "reference": straightforward_step_flops(config, len(x))}
    result: dict = {"n_train": len(x), "first_loss": first_loss,
                    "progsynth_gflop": flops["progsynth"] / 1e9, "reference_gflop": flops["reference"] / 1e9,
                    "threads": {}}
    for t in threads:
        ms = median_ms(steps, t, warmup, rounds, per_round)
        result["threads"][t] = {
            "progsynth_ms": ms["progsynth"],
            "reference_ms": ms["reference"],
            "nanda_speedup": ms["reference"] / ms["progsynth"],
            "gflops": flops["progsynth"] / ms["progsynth"] / 1e6,
            "reference_gflops": flops["reference"] / ms["reference"] / 1e6,
        }
    return result


def bench_vmap8(seeds: int = 8, threads: tuple[int, ...] = (2, 1), warmup: int = 2, rounds: int = 6) -> dict:
    """Eight seeds of the ``quick`` preset (p = 53, the everyday config) stepped together through
    torch.func.vmap, exactly as ``progsynth train --seeds 0-7`` does, against the same eight seeds
    stepped one after another through the single-seed learner. Per thread count: ms for one step of
    all eight seeds each way, interleaved rounds, medians; ``vmap8_speedup`` = sequential / vmap.
    CPU only: runs are CPU-only in this version (no GPU was lent while it was written)."""
    from progsynth.runs.config import preset
    from progsynth.runs.experiment import Experiment
    from progsynth.runs.train import _stack

    experiment = Experiment(preset("quick"))
    x, y = experiment.x_train, experiment.y_train
    inits = [experiment.learner.init(experiment.init_params(seed)) for seed in range(seeds)]
    sequential_states = list(inits)
    stacked = [_stack([s.opt_state for s in inits]), _stack([s.params for s in inits])]
    vstep = torch.func.vmap(experiment.pure_step, in_dims=(0, 0, None, None))

    def vmapped() -> torch.Tensor:
        stacked[0], stacked[1], loss = vstep(stacked[0], stacked[1], x, y)
        return loss

    def sequential() -> torch.Tensor:
        losses = []
        for i, state in enumerate(sequential_states):
            sequential_states[i], loss = experiment.learner.step(state, x, y)
            losses.append(loss)
        return torch.stack(losses)

    first = {"vmap": vmapped(), "sequential": sequential()}
    max_loss_diff = float((first["vmap"] - first["sequential"]).abs().max())
    result: dict = {"seeds": seeds, "n_train": len(x), "first_step_max_loss_diff": max_loss_diff, "threads": {}}
    for t in threads:
        ms = median_ms({"vmap": vmapped, "sequential": sequential}, t, warmup, rounds, per_round=2)
        result["threads"][t] = {"vmap_ms": ms["vmap"], "sequential_ms": ms["sequential"],
                                "vmap8_speedup": ms["sequential"] / ms["vmap"]}
    return result


LOOP_EPOCHS = 300
"""Epochs of the ``nanda`` preset that ``bench_loop`` trains (metrics every 50 steps as the preset)."""


def bench_loop(threads: tuple[int, ...] = (2, 1), epochs: int = LOOP_EPOCHS) -> dict:
    """``loop_overhead``: the wall time per epoch of ``progsynth train --preset nanda``'s loop
    (``runs.train.train``: the step, metrics every 50 steps, checkpoints, resume points) against the
    bare step of the same config (``Experiment.learner.step``, the float64 loss included, timed for
    half the epochs before the loop and half after, after a warm-up) at each thread count. The run keeps the full run's checkpoint density: 200
    checkpoints per 25,000 epochs, so ``max_checkpoints`` = 200 · epochs / 25,000 (at least 2)."""
    import tempfile
    from pathlib import Path

    from progsynth.runs.config import preset
    from progsynth.runs.experiment import Experiment
    from progsynth.runs.train import train

    config = preset("nanda")
    scaled = config.override(epochs=epochs, max_checkpoints=max(2, round(200 * epochs / config.epochs)))
    result: dict = {"epochs": epochs, "max_checkpoints": scaled.max_checkpoints, "threads": {}}
    for t in threads:
        torch.set_num_threads(t)
        experiment = Experiment(config)
        state = [experiment.learner.init(experiment.init_params(0))]
        x, y = experiment.x_train, experiment.y_train

        def bare_step_seconds(steps: int) -> float:
            start = time.perf_counter()
            for _ in range(steps):
                state[0], _ = experiment.learner.step(state[0], x, y)
            return (time.perf_counter() - start) / steps

        bare_step_seconds(20)  # warm-up: the allocator's pools and the first steps' page faults
        before = bare_step_seconds(epochs // 2)
        with tempfile.TemporaryDirectory() as folder:
            run = train(scaled, Path(folder) / "nanda")
        bare = (before + bare_step_seconds(epochs // 2)) / 2  # around the loop, so drift cancels
        loop = run.seconds / epochs
        result["threads"][t] = {"bare_ms": bare * 1e3, "loop_ms": loop * 1e3, "loop_overhead": loop / bare}
    return result


def main() -> None:
    keep_freed_memory()  # as `progsynth` and the training loop do (core.allocator: opt-in)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds per thread count")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    nanda = bench_nanda_step(rounds=args.rounds)
    vmap8 = bench_vmap8()
    loop = bench_loop()
    load_after = os.getloadavg()[0]

    print(f"Nanda p=113 full-batch AdamW step, {nanda['n_train']} train pairs, float32 "
          f"(first-step loss: progsynth {nanda['first_loss']['progsynth']:.6f}, "
          f"reference {nanda['first_loss']['reference']:.6f})")
    print(f"matmul work per step: progsynth {nanda['progsynth_gflop']:.2f} GFLOP, "
          f"reference {nanda['reference_gflop']:.2f} GFLOP")
    print("speedup = reference ms / progsynth ms (target ≥ 3 at 2 threads)")
    print(f"{'threads':>7}{'progsynth ms':>14}{'reference ms':>14}{'speedup':>9}{'GFLOP/s':>9}{'ref GFLOP/s':>13}")
    for t, row in nanda["threads"].items():
        print(f"{t:>7}{row['progsynth_ms']:>14.1f}{row['reference_ms']:>14.1f}{row['nanda_speedup']:>9.2f}"
              f"{row['gflops']:>9.1f}{row['reference_gflops']:>13.1f}")
    print(f"\nEight seeds of the quick preset (p=53, {vmap8['n_train']} train pairs), one step of all eight "
          f"(first-step loss difference vmap vs sequential {vmap8['first_step_max_loss_diff']:.1e})")
    print(f"{'threads':>7}{'vmap ms':>10}{'sequential ms':>15}{'speedup':>9}")
    for t, row in vmap8["threads"].items():
        print(f"{t:>7}{row['vmap_ms']:>10.1f}{row['sequential_ms']:>15.1f}{row['vmap8_speedup']:>9.2f}")
    print("(CPU only: training runs on the CPU in this version)")
    print(f"\nThe nanda preset's training loop ({loop['epochs']} epochs, metrics every 50, {loop['max_checkpoints']} "
          "checkpoints) against its bare step; loop_overhead = loop ms / bare ms (target ≤ 1.15)")
    print(f"{'threads':>7}{'bare ms':>10}{'loop ms':>10}{'overhead':>10}")
    for t, row in loop["threads"].items():
        print(f"{t:>7}{row['bare_ms']:>10.1f}{row['loop_ms']:>10.1f}{row['loop_overhead']:>10.3f}")
    print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs "
          f"(a load above this run's own threads means other processes shared the cores); "
          f"GOMP_SPINCOUNT {SPINCOUNT}")

    main_row = nanda["threads"][2]
    summary = {
        "nanda_speedup": main_row["nanda_speedup"],
        "progsynth_ms": main_row["progsynth_ms"],
        "reference_ms": main_row["reference_ms"],
        "gflops": main_row["gflops"],
        "threads": 2,
        "progsynth_gflop_per_step": nanda["progsynth_gflop"],
        "nanda_speedup_1thread": nanda["threads"][1]["nanda_speedup"],
        "progsynth_ms_1thread": nanda["threads"][1]["progsynth_ms"],
        "reference_ms_1thread": nanda["threads"][1]["reference_ms"],
        "vmap8_speedup": vmap8["threads"][2]["vmap8_speedup"],
        "vmap8_speedup_1thread": vmap8["threads"][1]["vmap8_speedup"],
        "vmap8_ms": vmap8["threads"][2]["vmap_ms"],
        "sequential8_ms": vmap8["threads"][2]["sequential_ms"],
        "loop_overhead": loop["threads"][2]["loop_overhead"],
        "loop_overhead_1thread": loop["threads"][1]["loop_overhead"],
        "loop_ms_per_epoch": loop["threads"][2]["loop_ms"],
        "bare_step_ms": loop["threads"][2]["bare_ms"],
        "load_average": [load_before, load_after],
        "gomp_spincount": SPINCOUNT,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
