"""The LLC estimator against exact answers, and against devinterp 1.3.2 on the same problem.

- **Deep linear networks** (``dln_max_rel_error``): seven shapes and ranks, including widths
  [20, 10, 10, 10, 20] at rank 5 (λ = 97) and the small deep [8, 6, 4, 6, 8] at rank 2 (λ = 17.5),
  each at a true parameter with n = 10,000 samples (``progsynth.slt.dln.check_dln_llc``), estimated
  with the *automatic defaults* (``SGLDConfig()``: ε = "auto" with its burn-in retunes, nβ = n / log n,
  γ = 5, 8 chains plus 4 localization-check chains at γ = 10, burn-in of two relaxation times
  2 / (εγ) within [1,000, 8,000] steps per phase, 2,000 draws, batch 500) and compared with Aoyagi's
  exact λ. Target |λ̂ − λ| / λ ≤ 5 %; each row also prints the burn-in phases and the diagnostics'
  warnings, and ``sys``, the systematic uncertainty |λ̂(γ) − λ̂(2γ)| from the check chains
  (``LLCResult.llc_systematic``; the ± to judge λ̂ by is √(se² + sys²), ``llc_uncertainty``).
- **Regular model** (``regular_rel_error``): one full-rank linear layer 15 → 10 (d = 150), whose
  learning coefficient is d / 2 = 75, with the same defaults. Target ≤ 5 %.
- **devinterp 1.3.2** (``devinterp_agree``, ``llc_speedup``): on the [20, 10, 10, 10, 20] rank-5
  network and the same data, both estimators run with identical ε (the one the ``epsilon="auto"``
  sweep picked above, before any burn-in retune), nβ = n / log n, γ = 10, 8 chains, 500 burn-in
  steps, 1,000 draws, batch 500 and seed 0 (progsynth without its localization-check chains, so
  both run exactly 8 chains). devinterp runs its chains one after the other (``cores=1``); progsynth runs them as one
  batched computation, with the DLN loss's own gradient for all chains at once
  (``slt.dln.DLNLoss.chains_grad_and_value``, checked against autograd in the tests). ``llc_speedup`` = devinterp seconds / progsynth seconds (target ≥ 3), each
  after a short warm-up run so neither pays one-off start-up costs. The estimates agree when
  |λ̂_progsynth − λ̂_devinterp| ≤ 2 × √(se² + se²) (a two-sided 95 % test; with identical
  samplers the difference is within one combined se only about two times in three, so both the
  ratio ``devinterp_z`` and the verdict are reported).

- **compress** (``compress_seconds``): ``slt.compress.compress`` on the nanda-size transformer over
  all 12,769 pairs (target ≤ 10 s).
- **Refined LLC** (``restrict_all_components_seconds``): ``llc --restrict all-components`` on 8
  log-spaced checkpoints of a quick-preset run trained in the benchmark (training not timed), with
  the demo's short-chain settings: 7 components × 8 checkpoints (target ≤ 3 minutes).

Conventions, checked in devinterp's source (``devinterp/optim/sgld.py``,
``devinterp/slt/sampler.py``, ``devinterp/slt/llc.py``): its SGLD step is
w ← w − (lr/2)[nβ ∇L_m(w) + γ(w − w₀)] + √lr N(0, 1), exactly ours with ε = lr (same 1/2, same
noise scale √ε, localization γ applied as is); λ̂_chain = nβ (mean over draws of the minibatch loss
recorded before each step − L_init), as ours. Two differences are removed by passing values
explicitly: devinterp's default nβ uses the *batch size* (m / log m), so we pass nβ = n / log n;
its default L_init averages a few minibatches, so we pass the exact full-data loss L_n(w*) that
progsynth uses. The loss is the same function (``squared_error``: mean over rows of ‖ŷ − y‖²) and
minibatches are drawn the same way (a fresh shuffle per epoch, 500 rows per step). Standard errors
on both sides are the std over chains (ddof = 1) / √chains.

Threads: torch runs at 1 thread throughout. The machine has 2 cores shared with other jobs;
progsynth's batched step is also timed at 2 threads and printed, but on a shared machine the
second thread contends with the neighbours (it was several times *slower* here), and 1 thread is
the like-for-like setting for devinterp's sequential chains.

Needs devinterp 1.3.2 (a benchmark-only dependency; ``make bench`` installs it). Prints a table,
then one JSON object as the last line. Runs in about 5-6 minutes on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
import time
import warnings
from typing import Any

import torch

from progsynth.core.allocator import keep_freed_memory
from progsynth.models.linear import dln_module
from progsynth.slt.dln import check_dln_llc, dln_loss, dln_problem
from progsynth.slt.llc import LLCResult, SGLDConfig, default_nbeta, estimate_llc, squared_error

HEADLINE_THREADS = 1
"""Torch threads for every timed run (module docstring)."""

DLN_CASES: list[tuple[tuple[int, ...], int]] = [
    ((20, 10, 10, 10, 20), 5),
    ((10, 5, 10), 2),
    ((8, 8, 8, 8), 4),
    ((30, 20, 10, 20, 30), 3),
    ((12, 6, 12), 0),
    ((5, 10, 15, 10, 5), 5),
    ((8, 6, 4, 6, 8), 2),
]
"""(widths, rank) of the deep linear networks; the first is the reference case (λ = 97)."""

REGULAR = ((15, 10), 10)
"""One full-rank linear layer: a regular model, λ = d / 2."""

N = 10_000
COMPARE = {"chains": 8, "burnin": 500, "draws": 1000, "localization": 10.0, "batch_size": 500, "seed": 0}
"""Settings shared by progsynth and devinterp in the side-by-side run (ε comes from the auto rule)."""

INSTALL = "pip install --no-deps devinterp==1.3.2 'tqdm>=4.65,<5' 'cloudpickle>=3.0,<4'"


def require_devinterp() -> None:
    """Exit with a clear message when devinterp 1.3.2 is not importable."""
    try:
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # noqa: F401
    except ImportError as error:
        sys.exit(f"benchmarks/llc.py needs devinterp 1.3.2 (benchmark-only dependency): {error}.\n"
                 f"Install it with `make bench`, or: {INSTALL}")
    version = importlib.metadata.version("devinterp")
    if version != "1.3.2":
        print(f"warning: devinterp {version} is installed; the comparison was written for 1.3.2", file=sys.stderr)


def dln_case(widths: tuple[int, ...], rank: int) -> dict[str, Any]:
    """λ̂ with the automatic defaults next to Aoyagi's λ."""
    check = check_dln_llc(widths, rank, n=N, config=SGLDConfig())
    row = check.to_dict()
    row["sweep_epsilon"] = check.result.sweep.chosen
    row["ok"] = abs(check.rel_error) <= 0.05
    return row


def progsynth_run(epsilon: float, draws: int, burnin: int, chains: int) -> tuple[LLCResult, float]:
    """progsynth on the comparison network at fixed ε; (result, seconds)."""
    params, data = dln_problem(*DLN_CASES[0], n=N)
    config = SGLDConfig(epsilon=epsilon, nbeta=default_nbeta(N), localization=COMPARE["localization"],
                        num_chains=chains, num_draws=draws, num_burnin=burnin, batch_size=COMPARE["batch_size"],
                        seed=COMPARE["seed"], check_localization_chains=0)
    start = time.perf_counter()
    result = estimate_llc(dln_loss, params, data, config)
    return result, time.perf_counter() - start


def devinterp_run(epsilon: float, init_loss: float, draws: int, burnin: int, chains: int) -> tuple[dict[str, Any], float]:
    """devinterp 1.3.2 on the same network and data, same settings; (its results, seconds)."""
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader, TensorDataset

    params, (x, y) = dln_problem(*DLN_CASES[0], n=N)
    loader = DataLoader(TensorDataset(x, y), batch_size=COMPARE["batch_size"], shuffle=True)

    def evaluate(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        inputs, targets = batch
        return squared_error(model(inputs), targets), {}

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation and "nbeta passed in" notices
        out = estimate_learning_coeff_with_summary(
            model=dln_module(params), loader=loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs={"lr": epsilon, "nbeta": default_nbeta(N), "localization": COMPARE["localization"]},
            num_chains=chains, num_draws=draws, num_burnin_steps=burnin, init_loss=init_loss,
            seed=COMPARE["seed"], cores=1, verbose=False, online=False,
        )
    return out, time.perf_counter() - start


def compare(epsilon: float) -> dict[str, Any]:
    """The side-by-side run (module docstring), after a short warm-up of each."""
    c = COMPARE
    warm, _ = progsynth_run(epsilon, 20, 10, 2)
    devinterp_run(epsilon, warm.init_loss, 20, 10, 2)
    ours, ours_s = progsynth_run(epsilon, c["draws"], c["burnin"], c["chains"])
    theirs, theirs_s = devinterp_run(epsilon, ours.init_loss, c["draws"], c["burnin"], c["chains"])
    theirs_se = theirs["llc/std"] / math.sqrt(c["chains"])
    z = abs(ours.llc_mean - theirs["llc/mean"]) / math.hypot(ours.llc_stderr, theirs_se)
    return {
        "widths": list(DLN_CASES[0][0]), "rank": DLN_CASES[0][1], "epsilon": epsilon, "nbeta": ours.nbeta,
        **{k: v for k, v in c.items()}, "init_loss": ours.init_loss,
        "progsynth_llc": ours.llc_mean, "progsynth_se": ours.llc_stderr, "progsynth_s": ours_s,
        "devinterp_llc": theirs["llc/mean"], "devinterp_se": theirs_se, "devinterp_s": theirs_s,
        "z": z, "agree": z <= 2.0, "speedup": theirs_s / ours_s,
    }


def thread_timing(epsilon: float) -> dict[str, float]:
    """Seconds for a short progsynth run (8 chains, 300 steps) at 1 and 2 threads."""
    seconds = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seconds[f"{threads}_thread"] = progsynth_run(epsilon, 200, 100, COMPARE["chains"])[1]
    torch.set_num_threads(HEADLINE_THREADS)
    return seconds


def compress_nanda() -> dict[str, Any]:
    """``compress_seconds``: ``slt.compress.compress`` on the nanda-size transformer (p = 113,
    d_model 128, 4 heads × 32, d_mlp 512, float32) over all 12,769 pairs, at its initialisation
    (seed 0; a trained checkpoint is in README → Results), median of 3 calls."""
    from progsynth.models.transformer import Transformer, TransformerConfig
    from progsynth.slt.compress import compress
    from progsynth.tasks.modular import ModularTask, modular_dataset

    tokens = modular_dataset(ModularTask(p=113, op="add", train_fraction=0.3, split_seed=0)).tokens()
    model = Transformer(TransformerConfig(p=113), torch.Generator().manual_seed(0))
    compress(model, tokens[:64])  # warm-up
    times = []
    for _ in range(3):
        started = time.perf_counter()
        found = compress(model, tokens)
        times.append(time.perf_counter() - started)
    return {"seconds": sorted(times)[1], "params_before": found.params_before, "params_after": found.params_after,
            "counts": found.counts, "max_output_diff": found.max_output_diff}


def restricted_quick() -> dict[str, Any]:
    """``restrict_all_components_seconds``: ``progsynth llc RUN --restrict all-components`` on 8
    log-spaced checkpoints of a freshly trained quick-preset run (trained here, not timed) with the
    demo's short-chain settings (``progsynth.demo.DEMO_LLC``): 7 components × 8 checkpoints, at 2
    torch threads, what the command uses on this 2-core machine (1 thread took 234 s against 164 s
    at 2 in the run that set this)."""
    import tempfile
    from pathlib import Path

    from progsynth.demo import DEMO_LLC, DEMO_LLC_CHECKPOINTS, log_spaced
    from progsynth.runs.config import preset
    from progsynth.runs.store import RunStore
    from progsynth.runs.train import train
    from progsynth.slt.run_llc import estimate_run_llc

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "quick"
        train(preset("quick"), run)
        steps = log_spaced(RunStore.open(run).checkpoint_steps(), DEMO_LLC_CHECKPOINTS)
        torch.set_num_threads(2)
        started = time.perf_counter()
        result = estimate_run_llc(run, steps, DEMO_LLC, restrict="all-components")
        seconds = time.perf_counter() - started
        torch.set_num_threads(HEADLINE_THREADS)
    table = result.table
    return {"seconds": seconds, "estimates": len(result.computed), "steps": steps,
            "components": sorted(set(table["restrict"])),
            "final": {r.restrict: r.llc for r in table[table["step"] == steps[-1]].itertuples()}}


def main() -> None:
    keep_freed_memory()  # as `progsynth` and the training loop do (core.allocator: opt-in)
    require_devinterp()
    torch.set_num_threads(HEADLINE_THREADS)
    start = time.perf_counter()
    rows = [dln_case(widths, rank) for widths, rank in DLN_CASES]
    regular = dln_case(*REGULAR)
    regular["d_over_2"] = regular["num_params"] / 2
    regular["rel_error"] = (regular["llc_mean"] - regular["d_over_2"]) / regular["d_over_2"]
    side = compare(rows[0]["sweep_epsilon"])
    threads = thread_timing(rows[0]["sweep_epsilon"])
    squeezed = compress_nanda()
    refined = restricted_quick()

    print(f"LLC estimator, automatic defaults (SGLDConfig()), n = {N}, torch threads = {HEADLINE_THREADS}")
    print(f"{'model':<22} {'rank':>4} {'d':>5} {'λ exact':>8} {'λ̂':>8} {'se':>6} {'sys':>6} {'rel err':>8} "
          f"{'ε':>9} {'accept':>6} {'γ-shift':>7} {'s':>6}  burn-in phases (ε/steps)")
    for row in rows + [regular]:
        name = "regular " + "x".join(map(str, row["widths"])) if row is regular else ",".join(map(str, row["widths"]))
        print(f"{name:<22} {row['rank']:>4} {row['num_params']:>5} {row['lambda']:>8g} {row['llc_mean']:>8.2f} "
              f"{row['llc_stderr']:>6.2f} {row['llc_systematic']:>6.2f} {row['rel_error']:>+8.1%} {row['epsilon']:>9.3g} {row['acceptance']:>6.2f} "
              f"{row['localization_shift']:>+7.1%} {row['seconds']:>6.1f}  "
              + ", ".join(f"{p['epsilon']:.2g}/{p['steps']}" for p in row["burnin"])
              + ("" if row["ok"] else "   > 5 %") + "".join(f"\n    warning: {w}" for w in row["warnings"]))
    print(f"\nside by side on {side['widths']} rank {side['rank']} (λ = {rows[0]['lambda']:g}): ε {side['epsilon']:.3g}, "
          f"nβ {side['nbeta']:.1f}, γ {side['localization']:g}, {side['chains']} chains, {side['burnin']} burn-in, "
          f"{side['draws']} draws, batch {side['batch_size']}")
    print(f"  progsynth  λ̂ = {side['progsynth_llc']:.2f} ± {side['progsynth_se']:.2f}   {side['progsynth_s']:.2f} s")
    print(f"  devinterp  λ̂ = {side['devinterp_llc']:.2f} ± {side['devinterp_se']:.2f}   {side['devinterp_s']:.2f} s")
    print(f"  difference / combined se = {side['z']:.2f} ({'agree' if side['agree'] else 'DISAGREE'} at 2 se); "
          f"speedup {side['speedup']:.1f}x")
    print(f"progsynth at 1 / 2 threads (8 chains, 300 steps): {threads['1_thread']:.2f} s / {threads['2_thread']:.2f} s; "
          f"headline uses {HEADLINE_THREADS}")
    print(f"\ncompress on the nanda-size transformer (all 12,769 pairs, float32, 1 thread): "
          f"{squeezed['seconds']:.2f} s (target ≤ 10 s); {squeezed['params_before']:,} → {squeezed['params_after']:,} "
          f"parameters, {squeezed['counts']}, outputs within {squeezed['max_output_diff']:.2g}")
    print(f"llc --restrict all-components on {len(refined['steps'])} checkpoints of a quick run, demo settings, 2 threads: "
          f"{refined['seconds']:.1f} s for {refined['estimates']} estimates (target ≤ 180 s); components "
          f"{refined['components']}")
    print(f"total {time.perf_counter() - start:.0f} s")

    print(json.dumps({
        "dln_max_rel_error": max(abs(r["rel_error"]) for r in rows),
        "regular_rel_error": abs(regular["rel_error"]),
        "devinterp_agree": side["agree"],
        "devinterp_z": side["z"],
        "llc_speedup": side["speedup"],
        "compress_seconds": squeezed["seconds"],
        "restrict_all_components_seconds": refined["seconds"],
        "threads": HEADLINE_THREADS,
        "thread_seconds": threads,
        "dln": rows,
        "regular": regular,
        "devinterp": side,
        "seconds": time.perf_counter() - start,
    }, default=float))


if __name__ == "__main__":
    main()
