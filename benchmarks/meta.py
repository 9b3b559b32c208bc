"""A learned optimizer against Adam with a tuned learning rate, on held-out problems of its family.

For each case (``CASES``):

1. Meta-train the learned optimizer (``progsynth.runs.meta.meta_train``) on problems drawn from
   the family with the meta seed; the meta-training seconds are the cost.
2. Tune Adam's learning rate (torch.optim's defaults otherwise, through ``core.optim.adam``, which
   reproduces ``torch.optim.Adam``) on ``--tune-problems`` *training* problems (the meta seed's
   stream): the rate of a log grid (``ADAM_GRID``) with the fewest median steps to the target,
   ties broken by the mean steps.
3. On ``--held-out`` problems from another seed (seen by neither), count the steps each takes to
   reach the target: the loss within ``gap`` of the problem's least loss, relative to the start
   (L_t − L* ≤ gap·(L_0 − L*)), within ``budget`` steps.

Cases: ``regression`` (the headline) — the 'momentum' kind (per-tensor step size and momentum)
on linear regressions with correlated features, gap 1e-3; ``modular`` — the 'mlp' kind on
small modular-arithmetic tasks with Gromov's MLP, gap 1e-4.

Figures (per case, and the headline's at the top level of the JSON): ``steps_ratio`` — the median
over held-out problems of Adam's steps over the learned optimizer's (> 1: the learned optimizer
is faster; a problem left unreached counts as budget + 1 steps); ``reached_learned`` /
``reached_adam`` — the fraction of held-out problems reaching the target; ``meta_train_seconds``;
``adam_lr``.

Run: ``.venv/bin/python benchmarks/meta.py [--case regression|modular]``. Prints a table per case
and a summary, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from progsynth.core.optim import adam
from progsynth.runs.meta import MetaConfig, meta_train, sample_problem, steps_to_target

HELD_OUT_SEED = 1_000_003
"""Seeds the held-out problems' stream (distinct from any meta seed used here)."""
ADAM_GRID = [10 ** (k / 4) for k in range(-12, 3)]
"""Adam learning rates tried: 1e-3 to ~3.2 in quarter decades."""


def _steps(optimizer, problems, budget: int, gap: float) -> list[int | None]:
    return [steps_to_target(optimizer, p, budget, gap) for p in problems]


def _cost(steps: list[int | None], budget: int) -> list[int]:
    return [budget + 1 if s is None else s for s in steps]


def tune_adam(problems, budget: int, gap: float) -> tuple[float, list[tuple[float, float, float]]]:
    """The Adam rate of ``ADAM_GRID`` with the fewest median steps to the target on ``problems``."""
    rows = []
    for lr in ADAM_GRID:
        cost = _cost(_steps(adam(lr), problems, budget, gap), budget)
        rows.append((lr, statistics.median(cost), statistics.fmean(cost)))
    best = min(rows, key=lambda r: (r[1], r[2]))
    return best[0], rows


CASES = {
    "regression": dict(family="regression", kind="momentum", steps=40, iterations=150, gap=1e-3, budget=300),
    "modular": dict(family="modular", kind="mlp", steps=20, iterations=20, gap=1e-4, budget=100),
}
"""The configurations measured: a learned per-tensor step size and momentum on linear regressions
(the headline), and the per-coordinate MLP on small modular-arithmetic tasks with Gromov's MLP."""


def run_case(family: str, kind: str, steps: int, iterations: int, gap: float, budget: int, meta_batch: int,
             seed: int, tune_problems: int, held_out: int) -> dict:
    """Meta-train, tune Adam, compare on held-out problems; print the case's table; return its figures."""
    config = MetaConfig(family=family, kind=kind, steps=steps, meta_iterations=iterations, meta_batch=meta_batch,
                        seed=seed)
    result = meta_train(config)
    info = result.to_dict()

    train_gen = torch.Generator().manual_seed(seed)
    tune = [sample_problem(family, train_gen) for _ in range(tune_problems)]
    start = time.perf_counter()
    adam_lr, _ = tune_adam(tune, budget, gap)
    tune_seconds = time.perf_counter() - start

    held_gen = torch.Generator().manual_seed(HELD_OUT_SEED)
    held = [sample_problem(family, held_gen) for _ in range(held_out)]
    learned_steps = _steps(result.optimizer, held, budget, gap)
    adam_steps = _steps(adam(adam_lr), held, budget, gap)
    ratios = [a / b for a, b in zip(_cost(adam_steps, budget), _cost(learned_steps, budget))]

    print(f"\n== {family} family, kind {kind}: T = {steps}, K = {iterations}, meta-batch {meta_batch}, seed {seed}")
    print(f"meta-trained in {result.seconds:.1f} s (meta-loss {info['meta_loss_first']:.3f} -> "
          f"{info['meta_loss_last']:.3f}, {result.skipped} outer steps skipped); rule: {json.dumps(info['rule'])}")
    edge = " (at the edge of the grid!)" if adam_lr in (ADAM_GRID[0], ADAM_GRID[-1]) else ""
    print(f"Adam lr tuned on {tune_problems} training problems ({tune_seconds:.1f} s): {adam_lr:.3g}{edge}")
    print(f"held-out problems: steps to reach gap {gap:g} (budget {budget}; '-' never)")
    print(f"{'problem':>8} {'learned':>8} {'adam':>8} {'ratio':>7}")
    for i, (s_l, s_a, r) in enumerate(zip(learned_steps, adam_steps, ratios)):
        print(f"{i:>8} {s_l if s_l is not None else '-':>8} {s_a if s_a is not None else '-':>8} {r:>7.2f}")
    figures = {
        "family": family, "kind": kind, "steps": steps, "meta_iterations": iterations, "meta_batch": meta_batch,
        "seed": seed, "gap": gap, "budget": budget, "held_out": held_out, "steps_ratio": statistics.median(ratios),
        "reached_learned": sum(s is not None for s in learned_steps) / len(held),
        "reached_adam": sum(s is not None for s in adam_steps) / len(held),
        "median_steps_learned": statistics.median(_cost(learned_steps, budget)),
        "median_steps_adam": statistics.median(_cost(adam_steps, budget)),
        "adam_lr": adam_lr, "adam_tune_seconds": round(tune_seconds, 2),
        "meta_train_seconds": round(result.seconds, 2), "meta_loss_first": info["meta_loss_first"],
        "meta_loss_last": info["meta_loss_last"], "rule": info["rule"],
    }
    print(f"median steps: learned {figures['median_steps_learned']}, Adam {figures['median_steps_adam']}; "
          f"steps ratio (Adam / learned, median) {figures['steps_ratio']:.2f}; reached: learned "
          f"{figures['reached_learned']:.0%}, Adam {figures['reached_adam']:.0%}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-problems", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=20)
    args = parser.parse_args()

    names = list(CASES) if args.case == "all" else [args.case]
    cases = [run_case(**CASES[name], meta_batch=args.meta_batch, seed=args.seed, tune_problems=args.tune_problems,
                      held_out=args.held_out) for name in names]
    print(f"\n{'case':<12} {'kind':<9} {'meta s':>7} {'Adam lr':>8} {'learned':>8} {'Adam':>6} {'ratio':>6} "
          f"{'reached L/A':>12}")
    for c in cases:
        print(f"{c['family']:<12} {c['kind']:<9} {c['meta_train_seconds']:>7.1f} {c['adam_lr']:>8.3g} "
              f"{c['median_steps_learned']:>8g} {c['median_steps_adam']:>6g} {c['steps_ratio']:>6.2f} "
              f"{c['reached_learned']:>6.0%}/{c['reached_adam']:.0%}")
    head = cases[0]
    print(json.dumps({**{k: head[k] for k in ("family", "kind", "steps_ratio", "reached_learned", "reached_adam",
                                              "meta_train_seconds", "adam_lr")},
                      "meta_train_seconds_total": round(sum(c["meta_train_seconds"] for c in cases), 2),
                      "cases": cases}))


if __name__ == "__main__":
    main()
