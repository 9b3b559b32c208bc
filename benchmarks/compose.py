"""Models built by composition against the same models as ``nn.Module``s (issue 17).

For each of the three families whose training model is a composite of the core's primitives
(each primitive with its hand-written reverse derivative), one ``core.learner.Learner`` step of
the composite against the same step with the model as ``core.smooth.from_module(module)`` (the
module's forward under ``torch.func.vjp``, i.e. autograd), same parameters, loss and optimizer:

- ``gromov``: the ``gromov`` preset, p = 97, 50 % of the 9,409 one-hot pairs, 500 x² units, MSE,
  AdamW lr 1e-2, weight decay 5 (``linear >> square >> linear``).
- ``embedding_mlp``: a + b mod 113, 30 % of pairs (3,830), 128-wide embeddings, 512 ReLU units,
  cross-entropy, AdamW lr 1e-3, weight decay 1 (``embedding >> linear >> relu >> linear``).
- ``dln``: the deep linear network [20, 10, 10, 10, 20] on n = 10,000 Gaussian inputs with MSE and
  AdamW lr 1e-3 (``linear >> linear >> linear >> linear``, no biases).

Full-batch steps. Per family and thread count (1 and 2): warm-up, then interleaved rounds (the order
alternates per round), median ms per step; ``compose_ratio_*`` = composite ms / module ms (the
target is ≤ 1.05 at both thread counts). Before timing, each pair takes one step from the same
state and the largest difference of the new parameters is printed: the two sides compute the same
step (float32 rounding apart).

Prints a table, then one JSON object as the last line. On a shared machine the absolute times move
with the load (the run prints the load average); the ratio is measured interleaved to be robust to
that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

# As benchmarks/train_step.py: a short OpenMP spin so a busy core does not stall every parallel
# region; set before torch loads and applied to both sides of every comparison.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
SPINCOUNT = os.environ["GOMP_SPINCOUNT"] if "torch" not in sys.modules else "libgomp default (torch loaded first)"

import torch  # noqa: E402  (after the OpenMP setting above)
from torch.utils import _pytree as pytree  # noqa: E402
from train_step import median_ms  # noqa: E402  (benchmarks/ is the script's folder, on sys.path)

from progsynth.core.allocator import keep_freed_memory  # noqa: E402
from progsynth.core.learner import Learner  # noqa: E402
from progsynth.core.losses import learning_rate, mse  # noqa: E402
from progsynth.core.optim import adamw  # noqa: E402
from progsynth.core.smooth import from_module  # noqa: E402
from progsynth.models.linear import dln_data, dln_lens, dln_module, random_dln  # noqa: E402
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig, preset  # noqa: E402
from progsynth.tasks import make_task  # noqa: E402
from progsynth.runs.experiment import Experiment  # noqa: E402

DLN_WIDTHS, DLN_N = (20, 10, 10, 10, 20), 10_000


def _stepper(learner: Learner, params: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    state = [learner.init(params)]

    def step() -> torch.Tensor:
        state[0], loss = learner.step(state[0], x, y)
        return loss

    return step


def _max_diff(a: Any, b: Any) -> float:
    return max(float((s - t).abs().max()) for s, t in zip(pytree.tree_leaves(a), pytree.tree_leaves(b)))


def experiment_pair(config: RunConfig) -> tuple[dict[str, Callable[[], torch.Tensor]], float]:
    """The run config's composite (``Experiment.model``) and ``from_module`` of its module, each in
    the experiment's own learner (loss, optimizer), from seed 0's parameters; and the largest
    parameter difference after one step of each from that state."""
    experiment = Experiment(config)
    composite = experiment.learner
    module = Learner(from_module(experiment.module_template), composite.loss, composite.optimizer, composite.rate)
    x, y = experiment.x_train, experiment.y_train
    params = experiment.init_params(0)
    one = [learner.step(learner.init(params), x, y)[0].params for learner in (composite, module)]
    steps = {"composite": _stepper(composite, params, x, y), "module": _stepper(module, params, x, y)}
    return steps, _max_diff(*one)


def dln_pair() -> tuple[dict[str, Callable[[], torch.Tensor]], float]:
    """``dln_lens`` over (W₁, …, W_L) against ``from_module(dln_module(...))`` over {"0.weight", ...}."""
    generator = torch.Generator().manual_seed(0)
    x, y = dln_data(random_dln(DLN_WIDTHS, generator), DLN_N, generator=generator)
    params = random_dln(DLN_WIDTHS, generator)
    module = dln_module(params)
    named = {k: v.detach().clone() for k, v in module.named_parameters()}
    optimizer = adamw(1e-3, (0.9, 0.999), 1e-8, 0.0)
    composite = Learner(dln_lens(DLN_WIDTHS), mse(), optimizer, learning_rate(1.0))
    reference = Learner(from_module(module), mse(), optimizer, learning_rate(1.0))
    one = [composite.step(composite.init(params), x, y)[0].params,
           tuple(reference.step(reference.init(named), x, y)[0].params.values())]
    steps = {"composite": _stepper(composite, params, x, y), "module": _stepper(reference, named, x, y)}
    return steps, _max_diff(*one)


def families() -> dict[str, Callable[[], tuple[dict[str, Callable[[], torch.Tensor]], float]]]:
    """The three families' (steppers, one-step parameter difference) builders, by name."""
    embedding_mlp = RunConfig(task=make_task("modular", p=113, train_fraction=0.3),
                              model=ModelConfig(name="mlp", d_model=128, d_mlp=512),
                              optim=OptimConfig(lr=1e-3, weight_decay=1.0))
    return {"gromov": lambda: experiment_pair(preset("gromov")),
            "embedding_mlp": lambda: experiment_pair(embedding_mlp),
            "dln": dln_pair}


def main() -> None:
    keep_freed_memory()  # as `progsynth train` does (core.allocator: opt-in)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds per thread count")
    parser.add_argument("--per-round", type=int, default=5, help="steps per side per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side first")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: dict[str, dict] = {}
    for name, build in families().items():
        steps, diff = build()
        rows[name] = {"param_diff": diff, "threads": {}}
        for t in (1, 2):
            ms = median_ms(steps, t, args.warmup, args.rounds, args.per_round)
            rows[name]["threads"][t] = {**ms, "ratio": ms["composite"] / ms["module"]}
    load_after = os.getloadavg()[0]

    print("One full-batch Learner step, composite of primitives vs from_module(nn.Module) (autograd); "
          "ratio = composite / module (target ≤ 1.05)")
    print(f"{'family':>14}{'threads':>8}{'composite ms':>14}{'module ms':>11}{'ratio':>8}{'1-step Δparams':>16}")
    for name, row in rows.items():
        for t, r in row["threads"].items():
            print(f"{name:>14}{t:>8}{r['composite']:>14.2f}{r['module']:>11.2f}{r['ratio']:>8.3f}"
                  f"{row['param_diff']:>16.1e}")
    print(f"1-minute load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs; "
          f"GOMP_SPINCOUNT {SPINCOUNT}")
    summary: dict[str, Any] = {}
    for name, row in rows.items():
        summary[f"compose_ratio_{name}"] = row["threads"][2]["ratio"]
    for name, row in rows.items():
        summary[f"compose_ratio_{name}_1thread"] = row["threads"][1]["ratio"]
    for name, row in rows.items():
        summary[f"{name}_composite_ms"] = row["threads"][2]["composite"]
        summary[f"{name}_module_ms"] = row["threads"][2]["module"]
        summary[f"{name}_one_step_param_diff"] = row["param_diff"]
    summary.update(threads=2, load_average=[load_before, load_after], gomp_spincount=SPINCOUNT)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
