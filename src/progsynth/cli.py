"""The ``progsynth`` command. Thin: parses flags, calls library functions, prints.

Conventions (every command): ``--json`` prints one JSON object as the last line of output; exit
code 0 on success, 2 on a usage error, 1 on a failure (a ``ProgsynthError``, printed without a
stack trace), 130 on Ctrl-C. ``_Commands.invoke`` is the one place where a failure that escapes
a command becomes that one line: a ProgsynthError as it is, an operating-system error through
``errors.os_error`` (naming the path), Ctrl-C as a line saying that finished work is kept.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from progsynth.errors import ProgsynthError, os_error

DEFAULT_DEMO_OUT = "runs/quick"
"""Where ``progsynth demo`` puts its run (the demo module's default too)."""

EXAMPLES = """Examples (every command has --help, and --json for scripts):

progsynth demo
progsynth train --preset quick --out runs/q --seeds 0-3
progsynth train --resume runs/q/seed-0
progsynth meta-train runs/learned --family modular --steps 20 --meta-iterations 40
progsynth train --task modular --p 11 --model gromov --optim runs/learned --out runs/lo
progsynth analyze runs/q/seed-0
progsynth llc runs/q/seed-0
progsynth search --op 'a*b + a + b' --p 97 --train-fraction 0.1
progsynth versus runs/versus --quick
progsynth ntk runs/q/seed-0 --checkpoints 0,100,1300
progsynth path runs/q/seed-0@100 runs/q/seed-0@last
progsynth path runs/q/seed-0@last runs/q/seed-1@last --align
progsynth contrast runs/q/seed-0
progsynth report runs/q/seed-0 --png
progsynth compare runs/q
progsynth report --compare runs/q
progsynth sweep-report runs/sweep --x optim.weight_decay --y task.train_fraction
progsynth llc-dln --widths 20,10,10,10,20 --rank 5
progsynth circuit iris --classes 3
progsynth circuit digits --classes 10
progsynth circuit compile --function majority --n-bits 9
progsynth circuit readback runs/parity"""

INTERRUPTED = ("interrupted; everything finished before Ctrl-C is saved (a run's resume point, every "
               "measures.jsonl row written): run the same command again to continue")
"""What Ctrl-C prints when it stops a command that has no message of its own."""


class _Commands(TyperGroup):
    """The command group: turns what escapes a command into one line and an exit code (module docstring)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ProgsynthError as error:
            fail(error)
        except OSError as error:
            fail(os_error(error, "use"))
        except KeyboardInterrupt:
            Console(stderr=True, soft_wrap=True).print(INTERRUPTED, markup=False)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=_Commands,
    help="progsynth: deep learning as program synthesis.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
circuit_app = typer.Typer(cls=_Commands, help="Boolean circuits learned by reverse derivative ascent.", no_args_is_help=True)
app.add_typer(circuit_app, name="circuit")

console = Console(stderr=False)


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """Print a human summary (unless --json) and, with --json, the result as the last line."""
    if as_json:
        print(json.dumps(result, default=float))
    else:
        console.print(text if text is not None else result)


def _print_error(error: ProgsynthError) -> None:
    """One line on stderr (not wrapped at the terminal width, brackets in the message kept)."""
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(error))}")


def fail(error: ProgsynthError) -> None:
    """Report a ProgsynthError as one readable line and exit with code 1."""
    _print_error(error)
    raise typer.Exit(code=1)


def main() -> None:
    """Entry point (``progsynth``); failures become one line in ``_Commands.invoke``. The command
    is a process of its own, so it opts in to the malloc tuning of ``core.allocator``."""
    from progsynth.core.allocator import keep_freed_memory

    keep_freed_memory()
    app()


@contextlib.contextmanager
def _checkpoint_bar(label: str, as_json: bool, unit: str = "checkpoints") -> Iterator[Callable[..., None] | None]:
    """A transient rich bar "label ━━ done/total UNIT detail" for the body of the ``with``; yields
    its callback ``update(done, total, detail=None)`` (a string detail is shown as it is, a
    number reads "step N"), or None with --json. The bar stops however the body ends (error or Ctrl-C
    included)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if as_json:
        yield None
        return
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
                   TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=console, transient=True)
    task = bar.add_task(label, total=None, detail="")

    def update(done: int, total: int, detail: int | str | None = None) -> None:
        text = "" if detail is None else detail if isinstance(detail, str) else f"step {detail}"
        bar.update(task, completed=done, total=total, detail=text)

    with bar:
        yield update


# ---- training ----------------------------------------------------------------------------------
def _progress_bar(as_json: bool):
    """A rich progress bar showing the current losses, or a no-op when printing JSON."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if as_json:
        return None, None
    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                   console=console, transient=False)
    task = bar.add_task("train", total=1, losses="")

    def update(step: int, total: int, rows: list[dict]) -> None:
        if not bar.live.is_started:  # started by the first update, so a run that fails to start shows none
            bar.start()
        row = rows[0]
        text = (f"train {row['train_loss']:.3g} / test {row['test_loss']:.3g}  "
                f"acc {row['train_accuracy']:.3f} / {row['test_accuracy']:.3f}")
        bar.update(task, completed=step, total=total, losses=text)

    return bar, update


# The task options train and search share (typer reads an Option's settings; one object serves both).
_TASK = typer.Option(None, "--task", help="Task family: modular (default), parity or boolean.")
_OP = typer.Option(None, "--op", help="modular: operation on Z_p by name (add, sub, mul, div, x2+y2, ...), an "
                                      "expression in a and b such as 'a*b + a + b', or 'module:function'.")
_P = typer.Option(None, "--p", help="modular: the modulus p.")
_N_BITS = typer.Option(None, "--n-bits", help="parity, boolean: input bits per string.")
_K = typer.Option(None, "--k", help="parity: relevant bits.")
_N_SAMPLES = typer.Option(None, "--n-samples", help="parity, boolean: strings drawn at random (default: all 2^n).")
_FUNCTION = typer.Option(None, "--function", help="boolean: majority, comparator, random-circuit:G, table:BITS, "
                                                  "circuit:FORMULA or module:function.")
_TASK_SEED = typer.Option(None, "--task-seed", help="parity, boolean: seed of the relevant bits / random circuit "
                                                    "and of the sampled strings.")
_TRAIN_FRACTION = typer.Option(None, "--train-fraction", help="Fraction of the examples to train on.")
_SPLIT_SEED = typer.Option(None, "--split-seed", help="Seed of the train/test split.")


_TASK_FLAGS = {"task.family": "--task", "task.op": "--op", "task.p": "--p", "task.n_bits": "--n-bits",
               "task.k": "--k", "task.n_samples": "--n-samples", "task.function": "--function",
               "task.seed": "--task-seed", "task.train_fraction": "--train-fraction", "task.split_seed": "--split-seed"}
"""The config field each task option sets, and the option's name (for errors naming the flags given)."""


def _task_changes(task: str | None, op: str | None, p: int | None, n_bits: int | None, k: int | None,
                  n_samples: int | None, function: str | None, task_seed: int | None,
                  train_fraction: float | None, split_seed: int | None) -> dict[str, Any]:
    """The task options as ``RunConfig.override`` changes (None: not given)."""
    values = (task, op, p, n_bits, k, n_samples, function, task_seed, train_fraction, split_seed)
    return dict(zip(_TASK_FLAGS, values))


def _given_task_flags(changes: dict[str, Any]) -> list[str]:
    """The task options that were given, by their flag names."""
    return [_TASK_FLAGS[field] for field, value in changes.items() if value is not None]


@app.command()
def train(
    preset_name: str = typer.Option(None, "--preset", help="Preset to start from: quick, nanda, nanda-paper, "
                                                           "gromov, parity, boolean (default: the task family's, "
                                                           "quick for modular)."),
    config_file: str = typer.Option(None, "--config", help="A JSON config file (e.g. a run's config.json)."),
    out: str = typer.Option(None, "--out", help="Run directory to create (default runs/<preset>-seed<seed>)."),
    resume_dir: str = typer.Option(None, "--resume", help="Continue this run directory from its newest checkpoint."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds to train together through vmap, e.g. 0-7."),
    task: str = _TASK, op: str = _OP, p: int = _P, n_bits: int = _N_BITS, k: int = _K, n_samples: int = _N_SAMPLES,
    function: str = _FUNCTION, task_seed: int = _TASK_SEED, train_fraction: float = _TRAIN_FRACTION,
    split_seed: int = _SPLIT_SEED,
    model: str = typer.Option(None, help="transformer, gromov or mlp."),
    epochs: int = typer.Option(None, help="Epochs (full-batch steps)."),
    lr: float = typer.Option(None, help="Learning rate."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Weight decay."),
    seed: int = typer.Option(None, help="Model seed."),
    label_noise: float = typer.Option(
        None, "--label-noise", min=0.0, max=1.0,
        help="Fraction Q in [0, 1] of the training labels replaced by a uniformly random wrong label "
             "(exactly round(Q·n_train) of them; test labels stay true). Default 0 (none), or the --config "
             "file's."),
    label_noise_seed: int = typer.Option(
        None, "--label-noise-seed",
        help="Seed of which training labels --label-noise replaces and by what; independent of --seed and "
             "--split-seed. Default 0, or the --config file's."),
    until_generalised: bool = typer.Option(
        None, "--until-generalised/--full-budget",
        help="Stop once held-out accuracy has stayed ≥ 0.99 and a further --cleanup fraction of the steps "
             "so far has passed, with --epochs as the budget (stop.json in the run says why it stopped). "
             "Default: off, or the preset's / --config file's."),
    cleanup: float = typer.Option(
        None, "--cleanup", help="With --until-generalised: the fraction F of the steps to generalisation trained "
                                "after it (stop at step ≥ (1 + F)·g). Default 0.25, or the --config file's."),
    optim_file: str = typer.Option(
        None, "--optim", help="Train with a learned optimizer: the folder `progsynth meta-train` wrote (or a file in "
                              "it). config.json records its path and sha256, so --resume refuses a changed file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Train a network on an algorithmic task into a run directory.

    Every task family trains here: modular arithmetic (--op, --p), sparse parity (--task parity
    --n-bits N --k K [--n-samples M]) and Boolean functions (--task boolean --n-bits N --function F).

    Example: progsynth train --preset quick --out runs/quick
    Example: progsynth train --task parity --n-bits 20 --k 3 --n-samples 20000 --out runs/parity
    """
    from progsynth.runs.config import RunConfig, family_preset, for_operation, preset
    from progsynth.runs.train import parse_seeds, resume, train as train_run

    from progsynth.errors import ConfigError

    bar, update = _progress_bar(as_json)
    try:
        if resume_dir is not None and not resume_dir.strip():
            raise ConfigError("--resume needs a run directory, got an empty string")
        if resume_dir is not None:
            fixed = {"--preset": preset_name, "--config": config_file, "--out": out, "--seeds": seeds, "--model": model,
                     "--epochs": epochs, "--lr": lr, "--weight-decay": weight_decay, "--seed": seed,
                     "--label-noise": label_noise, "--label-noise-seed": label_noise_seed,
                     "--until-generalised/--full-budget": until_generalised, "--cleanup": cleanup,
                     "--optim": optim_file}
            given = [flag for flag, value in fixed.items() if value is not None] + _given_task_flags(
                _task_changes(task, op, p, n_bits, k, n_samples, function, task_seed, train_fraction, split_seed))
            if given:
                raise ConfigError(f"--resume continues a run with its own config.json; drop {', '.join(given)}")
            result = resume(resume_dir, progress=update)
        else:
            preset_name = preset_name or family_preset(task)
            config = RunConfig.load(config_file) if config_file else preset(preset_name)
            changes = _task_changes(task, op, p, n_bits, k, n_samples, function, task_seed, train_fraction,
                                    split_seed)
            config = config.override(**changes)
            if not config_file:
                config = for_operation(preset_name, config)
            config = config.override(**{"model.name": model, "epochs": epochs, "optim.lr": lr,
                                                   "optim.weight_decay": weight_decay, "seed": seed,
                                                   "label_noise": label_noise, "label_noise_seed": label_noise_seed,
                                                   "until_generalised": until_generalised, "cleanup": cleanup})
            if optim_file is not None:
                from progsynth.runs.meta import use_learned

                config = use_learned(config, optim_file)
            seed_list = parse_seeds(seeds) if seeds else None
            target = out or f"runs/{preset_name if not config_file else 'run'}-seed{seeds or config.seed}"
            result = train_run(config, target, seeds=seed_list, progress=update)
    except ProgsynthError as error:
        if bar and bar.live.is_started:
            bar.stop()
        fail(error)
    finally:
        if bar and bar.live.is_started:
            bar.stop()
    summary = {"run_dirs": [str(d) for d in result.run_dirs], "steps": result.steps,
               "total_steps": result.total_steps, "interrupted": result.interrupted,
               "seconds": round(result.seconds, 3), "final": result.final, "stopped": result.stopped}
    label = "last metrics at step" if result.interrupted else "step"  # metrics come every metrics_every steps
    text = "\n".join(
        f"{d}: {label} {r['step']:g}  train loss {r['train_loss']:.4g} acc {r['train_accuracy']:.3f}  "
        f"test loss {r['test_loss']:.4g} acc {r['test_accuracy']:.3f}" + ("  (generalised: stopped early)"
                                                                          if why == "generalised" else "")
        for d, r, why in zip(result.run_dirs, result.final, result.stopped))
    if result.interrupted:
        text += f"\ninterrupted at step {result.steps}; continue with: progsynth train --resume {result.run_dirs[0] if len(result.run_dirs) == 1 else Path(result.run_dirs[0]).parent}"
    emit(summary, as_json, text)
    if result.interrupted:
        raise typer.Exit(code=1)


# ---- learned optimizers -------------------------------------------------------------------------
@app.command("meta-train")
def meta_train(
    out: str = typer.Argument(..., help="Folder to write the learned optimizer into (new, or without one)."),
    family: str = typer.Option("regression", "--family", help="Problems to meta-train on: regression (linear "
                                                              "regressions) or modular (small p, Gromov's MLP)."),
    kind: str = typer.Option("momentum", "--kind", help="momentum (learned per-tensor step size and momentum) or "
                                                        "mlp (a per-coordinate MLP; fits any model)."),
    steps: int = typer.Option(40, "--steps", help="T: inner training steps unrolled per problem."),
    meta_iterations: int = typer.Option(150, "--meta-iterations", help="K: outer (Adam) steps on the "
                                                                       "meta-parameters."),
    meta_batch: int = typer.Option(4, "--meta-batch", help="Problems drawn per outer step."),
    meta_lr: float = typer.Option(0.05, "--meta-lr", help="Adam's step size on the meta-parameters."),
    objective: str = typer.Option("mean_log", "--objective", help="Meta-loss over the unroll: mean_log, mean or "
                                                                  "final (of the loss gap left; runs.meta)."),
    hidden: int = typer.Option(8, "--hidden", help="mlp kind: hidden units."),
    seed: int = typer.Option(0, "--seed", help="Seed of the problems drawn (and the MLP's first weights)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Meta-train a learned optimizer by differentiating through T unrolled training steps, and
    write it (learned_optimizer.safetensors + .json) for `progsynth train --optim OUT`.

    Example: progsynth meta-train runs/learned --family regression --steps 40 --meta-iterations 150
    Example: progsynth meta-train runs/learned-mod --family modular --kind mlp --steps 20 --meta-iterations 20
    """
    from progsynth.runs.meta import INFO_FILE, WEIGHTS_FILE, MetaConfig, check_out, meta_train as run, save_learned

    config = MetaConfig(family=family, kind=kind, steps=steps, meta_iterations=meta_iterations,
                        meta_batch=meta_batch, meta_lr=meta_lr, objective=objective, hidden=hidden, seed=seed)
    config.validate()
    check_out(out)  # before minutes of meta-training, not after
    try:
        with _checkpoint_bar("meta-train", as_json, unit="outer steps") as update:
            result = run(config, progress=None if update is None else
                         lambda done, total, loss: update(done, total, f"meta-loss {loss:.3f}"))
    except KeyboardInterrupt:
        Console(stderr=True, soft_wrap=True).print("interrupted; nothing was written (meta-training does not "
                                                   "resume: run the command again)", markup=False)
        raise typer.Exit(code=130) from None
    digest = save_learned(out, result)
    info = result.to_dict()
    summary = {"out": out, "files": [str(Path(out) / WEIGHTS_FILE), str(Path(out) / INFO_FILE)], "sha256": digest,
               **{k: info[k] for k in ("kind", "meta_train_seconds", "meta_iterations_done", "skipped",
                                       "meta_loss_first", "meta_loss_last", "rule")},
               "family": family, "steps": steps, "seed": seed}
    rule = info["rule"]
    shown = (", ".join(f"lr {lr:.3g} momentum {m:.3f}" for lr, m in zip(rule["lr"], rule["momentum"]))
             if kind == "momentum" else f"lr {rule['lr']:.3g}, linear part {[round(v, 3) for v in rule['linear']]}, "
                                        f"MLP output norm {rule['mlp_output_norm']:.3g}")

    def num(value: Any) -> str:
        return "—" if value is None else f"{value:.3f}"

    text = (f"{out}: learned optimizer ({kind}) meta-trained on {family} problems in {info['meta_train_seconds']:.1f} s; "
            f"meta-loss {num(info['meta_loss_first'])} → {num(info['meta_loss_last'])}"
            + (f" ({info['skipped']} outer steps skipped: an inner run diverged)" if info["skipped"] else "")
            + f"\nrule: {shown}\nsha256 {digest}\ntrain with it: progsynth train --optim {out} ...")
    emit(summary, as_json, text)


# ---- sweeps -------------------------------------------------------------------------------------
@app.command()
def sweep(
    directory: str = typer.Argument(..., help="Sweep directory (created, or continued when it exists)."),
    spec_file: str = typer.Option(None, "--spec", help="A TOML or JSON sweep spec (see progsynth.runs.sweep)."),
    preset_name: str = typer.Option(None, "--preset", help="Base preset (default quick) when no --spec is given."),
    config_file: str = typer.Option(None, "--config", help="Base config file (e.g. a run's config.json)."),
    grid: list[str] = typer.Option(None, "--grid", help="FIELD=V1,V2,... over any config field, e.g. "
                                                        "optim.weight_decay=0.3,1; repeat to cross several."),
    sets: list[str] = typer.Option(None, "--set", help="FIELD=VALUE fixed for every point; repeatable."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds per point, trained together through vmap, e.g. 0-2 "
                                                    "(default: the base config's seed)."),
    until_generalised: bool = typer.Option(False, "--until-generalised",
                                           help="Every run stops once generalised (train --until-generalised)."),
    address: str = typer.Option(None, "--address", help="Join this Ray cluster (HOST:PORT); default: RAY_ADDRESS, "
                                                        "else a local cluster on this machine."),
    workers: int = typer.Option(None, "--workers", help="Points trained at once (default: CPUs / --cpus-per-task)."),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="CPUs and torch threads per point (default 1)."),
    analyze: bool = typer.Option(False, "--analyze", help="Measure every run after training (progsynth analyze)."),
    llc: bool = typer.Option(False, "--llc", help="Estimate λ̂ at 8 checkpoints of every run (the demo's settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Train a grid of configurations on Ray: one run directory per point and seed.

    Runs on this machine by default (a local Ray cluster started and stopped here) or on a
    cluster given by --address. Running the same command again skips finished runs and resumes
    the others; Ctrl-C stops cleanly. `progsynth sweep-report DIR` draws the phase diagram.

    Example: progsynth sweep runs/wd --grid optim.weight_decay=0.1,0.3,1 --grid task.train_fraction=0.3,0.5 --seeds 0-2 --until-generalised
    """
    from progsynth.errors import ConfigError
    from progsynth.runs.sweep import SweepOptions, SweepSpec, load_sweep, parse_grid_flag, parse_set_flag, run_sweep

    try:
        given = spec_file or preset_name or config_file or grid or sets or seeds or until_generalised
        if spec_file and (preset_name or config_file or grid or sets or seeds):
            raise ConfigError("--spec gives the whole sweep; drop --preset, --config, --grid, --set and --seeds "
                              "(or put them in the spec file)")
        if preset_name and config_file:
            raise ConfigError("give --preset or --config, not both")
        if spec_file:
            spec = SweepSpec.load(spec_file)
        elif given:
            data: dict[str, Any] = {"config": config_file} if config_file else {"preset": preset_name or "quick"}
            data["set"] = dict(parse_set_flag(flag) for flag in sets or [])
            data["grid"] = {}
            for flag in grid or []:
                name, values = parse_grid_flag(flag)
                if name in data["grid"]:
                    raise ConfigError(f"--grid {name} is given twice; list all its values in one flag")
                data["grid"][name] = list(values)
            if seeds:
                data["seeds"] = seeds
            spec = SweepSpec.from_dict(data, "the sweep's flags")
        else:
            spec, _ = load_sweep(directory)  # continue the sweep the directory holds
        if until_generalised and not spec.base.until_generalised:
            spec = SweepSpec(spec.base.override(until_generalised=True), spec.grid, spec.points, spec.seeds)
        options = SweepOptions(address=address, workers=workers, cpus_per_task=cpus_per_task, analyze=analyze, llc=llc)
        with _checkpoint_bar("sweep", as_json, unit="runs") as update:
            result = run_sweep(spec, directory, options, progress=update)
    except ProgsynthError as error:
        fail(error)
    summary = result.to_dict()
    lines = [f"{p['point']}: {p['status']}" + (f" ({', '.join(p['stopped'])})" if p.get("stopped") else "")
             + (f": {p['message']}" if p.get("message") else "") for p in summary["results"]]
    lines.append(f"{summary['runs']} runs in {summary['points']} points on Ray ({summary['address']}), "
                 f"{summary['seconds']:.1f} s: " + ", ".join(f"{n} {k}" for k, n in sorted(summary["counts"].items()))
                 + f"; report: progsynth sweep-report {directory}")
    emit(summary, as_json, "\n".join(lines))
    if summary["failed"]:
        raise typer.Exit(code=1)


# ---- circuits ----------------------------------------------------------------------------------
class LabelCode(str, Enum):
    """How Iris classes become output bits."""

    onehot = "onehot"
    binary = "binary"


@circuit_app.command("iris")
def circuit_iris(
    classes: int = typer.Option(3, "--classes", min=2, max=3, help="2 (setosa, versicolor) or 3 classes."),
    labels: LabelCode = typer.Option(LabelCode.onehot, "--labels", help="Label code: onehot or binary."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Learn binarised Iris with a lookup-table circuit by reverse derivative ascent (one pass,
    batch size 1, from θ = 0), as in Wilson & Zanasi. An example counts as correct when all its
    output bits match (exact match, no argmax).

    Example: progsynth circuit iris --classes 2 --labels binary
    """
    import time

    from progsynth.models.circuits import exact_match, fit_rda, lookup_table, table_of
    from progsynth.tasks.boolean import IRIS_PAPER_TEST_ACCURACY, iris_bits

    try:
        start = time.perf_counter()
        data = iris_bits(classes, labels.value)
        model = lookup_table(data.x_train.shape[1], data.y_train.shape[1])
        theta = fit_rda(model, data.x_train, data.y_train)
        train_accuracy = exact_match(model, theta, data.x_train, data.y_train)
        test_accuracy = exact_match(model, theta, data.x_test, data.y_test)
        seconds = time.perf_counter() - start
    except ProgsynthError as error:
        fail(error)
    table = table_of(theta, data.y_train.shape[1]).astype(int)
    result = {
        "classes": classes, "labels": labels.value, "model": model.name, "parameter_bits": int(theta.size),
        "train_examples": len(data.x_train), "test_examples": len(data.x_test),
        "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
        "paper_test_accuracy": IRIS_PAPER_TEST_ACCURACY[classes], "seconds": round(seconds, 4),
        "table": ["".join(map(str, row)) for row in table],
    }
    text = (
        f"Iris, {classes} classes, {labels.value} labels: {model.name} ({theta.size} parameter bits), "
        f"RDA one pass, batch 1\n"
        f"train accuracy {train_accuracy:.3f}  test accuracy {test_accuracy:.3f}  "
        f"(paper, UCI file: {IRIS_PAPER_TEST_ACCURACY[classes]:.3f})  {seconds:.3f} s\n"
        "learned table, input bits (sepal length, sepal width, petal length, petal width) → output bits:\n"
        + "\n".join(
            "  ".join(f"{i:04b}"[::-1] + " → " + result["table"][i] for i in range(row, row + 4))
            for row in range(0, len(table), 4)
        )
    )
    emit(result, as_json, text)


@circuit_app.command("digits")
def circuit_digits(
    classes: int = typer.Option(2, "--classes", help="2 (0 vs 1, as the RDA paper's MNIST experiment) or 10."),
    epochs: int = typer.Option(5, "--epochs", help="Passes over the 100 training images per class (default 5)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the trees' wiring and of the training order."),
    votes: int = typer.Option(3, "--votes", help="Trees per pair of classes, decoded by majority (odd; default 3)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Learn scikit-learn's 8×8 digits, pixels thresholded at their mean, with forests of learned
    2-input lookup tables trained by reverse derivative ascent (one example per step, best-on-
    validation parameters kept per tree), beside a logistic regression on the same bits; print the
    learned circuit as a program, one line per output bit with its gate count.

    Example: progsynth circuit digits --classes 10 --epochs 5
    """
    from progsynth.errors import ConfigError
    from progsynth.models.circuits import digits_experiment
    from progsynth.tasks.boolean import DIGITS_PAPER_MNIST_ACCURACY
    from progsynth.tasks.common import check_int, check_seed

    try:  # bad flags are usage errors: one line, exit 2
        if classes not in (2, 10):
            raise ConfigError(f"--classes must be 2 (0 vs 1) or 10, got {classes}")
        check_int("--epochs", epochs, 1, 10_000)
        check_seed("--seed", seed)
        check_int("--votes", votes, 1, 99)
        if votes % 2 == 0:
            raise ConfigError(f"--votes must be odd (each pair takes its trees' majority), got {votes}")
    except ConfigError as error:
        _print_error(error)
        raise typer.Exit(code=2) from None
    with _checkpoint_bar("RDA", as_json, unit="steps") as update:
        run = digits_experiment(classes, epochs, seed, votes, progress=update)
    result = run.to_dict()
    if classes == 2:
        result["paper_mnist_test_accuracy"] = DIGITS_PAPER_MNIST_ACCURACY
    counts = run.program.gate_counts()
    what = "0 vs 1" if classes == 2 else "ten classes"
    lines = [
        f"digits, {what}: 64 pixel bits (pixel > {run.threshold:.2f}), train {run.examples['train']} / validation "
        f"{run.examples['validation']} / test {run.examples['test']} images",
        f"{run.model}: {len(counts)} trees of 63 learned 2-input tables ({run.votes} per pair of classes), "
        f"{run.parameter_bits} parameter bits; RDA, {run.epochs} epochs, {run.steps} steps of one example",
        f"{'':22}train   test",
        f"{'RDA circuit':22}{run.train_accuracy:.3f}   {run.test_accuracy:.3f}   "
        f"(last parameters instead of best on validation: test {run.last_test_accuracy:.3f})",
        f"{'logistic regression':22}{run.logistic_train_accuracy:.3f}   {run.logistic_test_accuracy:.3f}",
    ]
    if classes == 2:
        lines.append(f"(the RDA paper, MNIST 0 vs 1 with its mask model: test {DIGITS_PAPER_MNIST_ACCURACY:.3f})")
    lines += [
        f"program: {sum(counts)} gates; pRC is pixel row R, column C; output 'j vs i' is 1 for j; "
        f"constant and ignored table entries pruned",
        run.program.text(list(run.output_names)),
        "seconds: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in run.seconds.items()),
    ]
    emit(result, as_json, "\n".join(lines))


# ---- circuits ↔ ReLU networks (compile, read back) ---------------------------------------------
_SHOWN_GATES = 40
"""``circuit compile`` prints the circuit as a program when it has at most this many gates."""


@circuit_app.command("compile")
def circuit_compile(
    function: str = typer.Option("random-circuit:32", "--function",
                                 help="parity, majority, random-circuit:G or circuit:FORMULA (e.g. 'x0 & x1 ^ ~x2')."),
    n_bits: int = typer.Option(10, "--n-bits", help="Input bits."),
    seed: int = typer.Option(0, "--seed", help="random-circuit: its seed (the Boolean task's --task-seed)."),
    netlist: str = typer.Option(None, "--netlist", help="A JSON netlist file to compile instead of --function: "
                                                        "{\"inputs\": [...], \"gates\": {\"t\": [\"and\", \"a\", \"b\"]}, "
                                                        "\"outputs\": [...]}."),
    samples: int = typer.Option(65_536, "--samples", help="Inputs checked (uniformly drawn) beyond 16 bits."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Compile a Boolean circuit to an exact ReLU network (one unit per AND/OR/XOR gate) and check
    it against the circuit on every input (up to 16 bits; a sample beyond).

    Example: progsynth circuit compile --function majority --n-bits 9
    Example: progsynth circuit compile --function random-circuit:64 --n-bits 12 --seed 3
    """
    from progsynth.errors import ConfigError
    from progsynth.interp.circuit_readout import circuit_program
    from progsynth.models.compiled import check_compiled, compile_circuit, named_circuit, netlist_circuit
    from progsynth.runs.config import read_text

    if netlist is not None:
        text = read_text(Path(netlist), "netlist file")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"netlist file {netlist!r} is not JSON: {error.msg} at line {error.lineno}") from None
        circuit = netlist_circuit(spec)
    else:
        circuit = named_circuit(function, n_bits, seed)
    compiled = compile_circuit(circuit)
    check = check_compiled(compiled, samples=samples)
    program = circuit_program(circuit, live_only=True)
    r = compiled.report
    result = {**r.to_dict(), "check": check.to_dict(), "program": program.lines()}
    where = (f"all {check.inputs_checked:,} inputs" if check.exhaustive
             else f"{check.inputs_checked:,} random inputs (of 2^{r.inputs})")
    verdict = (f"exact on {where}" if check.exact else
               f"NOT exact on {where}: {check.mismatches:,} differ (max |error| {check.max_error:.3g})")
    def count(number: int, what: str) -> str:
        return f"{number:,} {what}{'' if number == 1 else 's'}"

    lines = [f"{r.circuit}: {count(r.inputs, 'input')}, {count(r.outputs, 'output')}, {count(r.gates, 'gate')} "
             f"({r.live_gates} live)",
             f"→ ReLU network: {count(r.neurons, 'unit')} in {count(r.depth, 'layer')}, {count(r.parameters, 'weight')}",
             f"check: {verdict}"]
    if r.live_gates <= _SHOWN_GATES:
        lines += ["circuit:"] + [f"  {line}" for line in program.lines()]
    emit(result, as_json, "\n".join(lines))


def _program_lines(lines: list[str], most: int = _SHOWN_GATES, width: int = 300) -> list[str]:
    """A program for the terminal: at most ``most`` lines (the last, the output, always shown), each
    cut at ``width`` characters; --json has them all."""
    clip = [line if len(line) <= width else line[:width] + " …" for line in lines]
    if len(clip) > most:
        clip = clip[:most - 1] + [f"… {len(clip) - most} more lines (--json lists them all)", clip[-1]]
    return [f"  {line}" for line in clip]


@circuit_app.command("readback")
def circuit_readback(
    run: str = typer.Argument(..., help="Run directory of a ReLU mlp trained on a task over at most 16 bits."),
    step: int = typer.Option(None, "--step", help="Checkpoint step (default: the newest scheduled one)."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Activations of a unit closer than this fraction "
                                                             "of its range count as one value."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Read a Boolean circuit out of a ReLU network trained on a Boolean task, check it against the
    network on every input, print it as a program, and record it in the run's measures.jsonl.

    Example: progsynth circuit readback runs/parity
    """
    from progsynth.interp.circuit_readout import readback_run

    found = readback_run(run, step, tolerance)
    r, result = found.readout, found.to_dict()
    units = ", ".join(f"{count} {kind}" for kind, count in r.units.items() if count)
    check = (f"exact: agrees with the network on all {r.inputs_checked:,} inputs" if r.exact else
             f"NOT exact: differs from the network on {r.mismatches:,} of {r.inputs_checked:,} inputs, e.g. "
             + ", ".join(r.mismatch_examples[:4]))

    def acc(split: str) -> str:
        values = (found.program_accuracy[split], found.network_accuracy[split])
        return " / ".join("—" if math.isnan(v) else f"{v:.3f}" for v in values)

    lines = [f"{found.run} at step {found.step}: {found.model}, {found.hidden_units} ReLU units, {found.task}",
             f"units: {units} → {r.level_gates} level gates, {r.distinct_gates} distinct, {r.terms_kept} kept",
             *_program_lines(r.program.lines()),
             f"{r.program.gate_count} gate{'s' if r.program.gate_count != 1 else ''}; {check}"]
    if r.equivalent is not None and r.equivalent.expression() != r.program.gates[-1].expression():
        lines.append(f"the same function as one gate over the bits: out = {r.equivalent.expression()}")
    lines.append(f"accuracy on the run's data, program / network: train {acc('train')}, test {acc('test')}")
    emit(result, as_json, "\n".join(lines))


# ---- interpretability --------------------------------------------------------------------------
def _analysis_text(report: dict[str, Any], measures: dict[str, Any]) -> str:
    """The human report of ``progsynth analyze``."""
    def held(key: str) -> str:  # None when no pair is held out
        return "n/a" if report[key] is None else f"{report[key]:.4f}"

    heldout = "held-out " if report["heldout_accuracy"] is not None else ""
    lines = [f"step {report['step']}: program", "", report["program"], "",
             f"relabelling {report['relabelling']}: explains {report['explained_fraction']:.1%} of the {heldout}"
             f"logits' variance ({report['coverage']:.1%} of the entries lie in its group)"]
    for score in report["relabellings"]:
        explained = "n/a: " + score["note"] if score["explained"] is None else f"{score['explained']:.1%}"
        lines.append(f"  {score['name']:<24} {explained}")
    chance = report["chance"]
    lines += [
        f"accuracy {report['accuracy']:.4f} on all pairs, {held('heldout_accuracy')} held out "
        f"(network: {report['network_accuracy']:.4f}, {held('network_heldout_accuracy')}; chance {chance:.4f})",
        f"agreement with the network's argmax {report['agreement']:.4f} on all pairs, "
        f"{held('heldout_agreement')} held out",
        f"description {report['description_bits']} bits; lookup table {report['lookup_table_bits']:.0f} bits",
        f"key frequencies {report['key_frequencies']} "
        f"({report['neurons_clustered']} of {report['neurons']} neurons clustered at one frequency):",
    ]
    for e in report["evidence"]:
        lines.append(f"  k={e['frequency']:<4} share of program {e['logit_share']:.3f}  amplitude {e['amplitude']:.3g}"
                     f"  phase {e['phase']:+.3f}  neurons {e['neurons']}  embedding share {e['embedding_share']:.3f}")
    lines.append("ablations (loss, accuracy on all pairs):")
    for a in report["ablations"]:
        lines.append(f"  {a['where']:<10} {a['name']:<16} {a['loss']:.4g}  {a['accuracy']:.4f}")
    lines += [f"measures: {measures['checkpoints']} checkpoints in {measures['file']} "
              f"({measures['computed']} new, {measures['skipped']} already there)"]
    if measures["final"]:
        f = measures["final"]
        lines.append(f"  final: restricted loss {f['restricted_loss']:.4g}, excluded loss {f['excluded_loss']:.4g}, "
                     f"test loss {'n/a' if f['test_loss'] is None else format(f['test_loss'], '.4g')}, "
                     f"Gini embedding {f['gini_embedding']:.3f}, "
                     f"Gini neuron-to-logit {f['gini_neuron_logit']:.3f}")
    lines += ["", f"verdict: {report['verdict']}"]
    return "\n".join(lines)


@app.command()
def analyze(
    run: str = typer.Argument(..., help="Run directory."),
    checkpoint: int = typer.Option(None, "--checkpoint", help="Step to read the program from (default: the final checkpoint)."),
    tolerance: float = typer.Option(1e-6, "--tolerance", help="compress's relative tolerance for the effective "
                                    "size (see progsynth.slt.compress)."),
    functional_inputs: int = typer.Option(4, "--functional-inputs", help="Inputs of the fixed subset the "
                                          "functional dimension (Jacobian rank) is taken on; 0 skips it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Read the program a run's network implements, and write its progress and degeneracy measures.

    Prints the extracted Fourier program with its accuracy, agreement with the network, description
    length and ablations, and writes restricted/excluded loss, Gini coefficients and weight norm for
    every checkpoint into RUN/measures.jsonl (only those not measured yet), and at every checkpoint
    the effective size (parameters of the smallest equivalent network, slt.compress), the units
    each degeneracy removed and the functional dimension.

    Example: progsynth analyze runs/gromov-seed0 --checkpoint 200
    """
    import math

    from rich.markup import escape

    from progsynth.interp.extract import extract_checkpoint
    from progsynth.interp.measures import measure_run
    from progsynth.runs.store import MEASURES
    from progsynth.slt.run_degeneracy import DegeneracySettings, measure_run_degeneracy

    try:
        settings = DegeneracySettings(tolerance, functional_inputs)
        settings.validate()
        chosen = extract_checkpoint(run, checkpoint) if checkpoint is not None else None
        with _checkpoint_bar("measure", as_json) as update:
            measured = measure_run(run, progress=update)
        with _checkpoint_bar("degeneracy", as_json) as update:
            degeneracy = measure_run_degeneracy(run, settings=settings, progress=update)
    except ProgsynthError as error:
        fail(error)
    extraction = chosen or measured.final
    final_row = measured.table.iloc[-1].to_dict() if not measured.table.empty else None
    measures = {"file": str(Path(run) / MEASURES), "checkpoints": int(len(measured.table)),
                "computed": measured.computed, "skipped": measured.skipped,
                "final": {"step": int(final_row["step"]),
                          **{k: None if math.isnan(final_row[k]) else float(final_row[k])  # no test pairs
                             for k in ("restricted_loss", "excluded_loss", "test_loss", "gini_embedding",
                                       "gini_neuron_logit", "weight_norm")}}
                if final_row else None}
    last = degeneracy.table.iloc[-1].to_dict() if not degeneracy.table.empty else None
    degenerate = {"computed": len(degeneracy.computed), "skipped": len(degeneracy.skipped),
                  "final": _degeneracy_final(last) if last else None}
    report = extraction.to_dict()
    text = _analysis_text(report, measures) + "\n" + _degeneracy_text(degenerate)
    emit({**report, "measures": measures, "degeneracy": degenerate}, as_json, escape(text))


DEGENERACY_COLUMNS = ("step", "params", "effective_params", "widths_before", "widths_after", "max_output_diff",
                      "units_dead", "units_zero_out", "units_constant", "units_duplicate", "units_linear_pairs",
                      "units_negligible", "functional_dimension", "functional_rows")
"""The fields of the final checkpoint's degeneracy row that ``progsynth analyze`` reports."""


def _degeneracy_final(row: dict[str, Any]) -> dict[str, Any]:
    """The final degeneracy row's reported fields as JSON: counts as ints (a measures table holds
    them as floats beside rows that lack them), None where a field was not measured."""
    final = {k: _plain(row.get(k)) for k in DEGENERACY_COLUMNS}
    return {k: int(v) if isinstance(v, float) and k not in ("max_output_diff",) else v for k, v in final.items()}


def _degeneracy_text(d: dict[str, Any]) -> str:
    """The degeneracy part of the analysis: counts and the final checkpoint's effective size."""
    lines = [f"degeneracy: {d['computed']} checkpoints measured, {d['skipped']} already there"]
    f = d["final"]
    if f:
        kinds = ", ".join(f"{k.removeprefix('units_').replace('_', '-')} {f[k]}" for k in DEGENERACY_COLUMNS
                          if k.startswith("units_") and f[k])
        lines.append(f"  step {f['step']}: effective size {f['effective_params']:,} of {f['params']:,} parameters "
                     f"(hidden units {f['widths_before']} → {f['widths_after']}; {kinds or 'no reductions'}; "
                     f"outputs within {f['max_output_diff']:.2g})")
        if f.get("functional_dimension") is not None:
            lines.append(f"  functional dimension {f['functional_dimension']} of {f['functional_rows']} Jacobian rows")
    return "\n".join(lines)


# ---- program search ----------------------------------------------------------------------------
def _search_text(found: dict[str, Any]) -> str:
    """The search summary: split, grammar, counts by size, top programs, accuracies, verdict."""
    def accuracy(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [f"search: {found['task']}: {found['n_train']} training examples, {found['n_test']} held out",
             f"grammar {found['grammar']}; sizes ≤ {found['max_size']}",
             f"{'size':>4} {'candidates':>12} {'kept':>12} {'consistent':>10}"]
    lines += [f"{s['size']:>4} {s['candidates']:>12,} {s['kept']:>12,} {s['consistent']:>10,}" for s in found["sizes"]]
    if found["top_programs"]:
        lines.append("top programs (one per held-out behaviour): bits, posterior mass, programs sharing it")
        lines += [f"  {t['text']:<40} {t['bits']:7.1f} bits  mass {t['mass']:.3g}  ({t['programs']})"
                  for t in found["top_programs"]]
    lines += [f"held-out accuracy: MAP {accuracy(found['map_heldout_accuracy'])}, "
              f"mixture {accuracy(found['mixture_heldout_accuracy'])}",
              f"{found['programs_enumerated']:,} programs enumerated, {found['distinct_behaviours']:,} distinct "
              f"behaviours kept, {found['seconds']:.2f} s",
              f"verdict: {found['verdict']}"]
    return "\n".join(lines)


@contextlib.contextmanager
def _search_bar(as_json: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    """A transient status line "search size S: candidates, kept" while the enumeration runs."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if as_json:
        yield None
        return
    bar = Progress(SpinnerColumn(), TextColumn("[bold]search[/] {task.description}"), TimeElapsedColumn(),
                   console=console, transient=True)
    task = bar.add_task("", total=None)

    def update(size: int, candidates: int, kept: int) -> None:
        bar.update(task, description=f"size {size}: {candidates:,} candidates, {kept:,} behaviours kept")

    with bar:
        yield update


@app.command()
def search(
    run: str = typer.Argument(None, help="Run directory: search on exactly its training split (and record the "
                                         "result in its measures.jsonl)."),
    task: str = _TASK, op: str = _OP, p: int = _P, n_bits: int = _N_BITS, k: int = _K, n_samples: int = _N_SAMPLES,
    function: str = _FUNCTION, task_seed: int = _TASK_SEED, train_fraction: float = _TRAIN_FRACTION,
    split_seed: int = _SPLIT_SEED,
    max_size: int = typer.Option(None, "--max-size", help="Largest program size in nodes (default 7)."),
    gates: str = typer.Option(None, "--gates", help="Boolean tasks: gates, e.g. and,or,xor,not (default: all; "
                                                    "xor alone for parity)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Search for the simplest programs that fit a task's training split (prior 2^-bits).

    Enumerates programs by size (arithmetic over Z_p, or Boolean formulas), keeps one per distinct
    behaviour on the training inputs, and puts the prior 2^-description length on those that fit
    every training label. Prints the top programs with their bits and posterior mass, and the
    held-out accuracy of the MAP program and of the Bayes mixture on the test split.

    Example: progsynth search --op 'a*b + a + b' --p 97 --train-fraction 0.1
    Example: progsynth search runs/gromov-seed0 --json
    """
    from rich.markup import escape

    from progsynth.errors import ConfigError
    from progsynth.runs.config import family_preset, preset
    from progsynth.search.tasks import DEFAULT_MAX_SIZE, parse_gates, search_run, search_task

    changes = _task_changes(task, op, p, n_bits, k, n_samples, function, task_seed, train_fraction, split_seed)
    try:
        gate_list = parse_gates(gates) if gates is not None else None
        size = DEFAULT_MAX_SIZE if max_size is None else max_size
        with _search_bar(as_json) as update:
            if run is not None:
                given = _given_task_flags(changes)
                if given:
                    raise ConfigError(f"a run directory fixes its task; drop the task flag(s) {', '.join(given)}")
                found = search_run(run, size, gate_list, progress=update)
            else:
                config = preset(family_preset(task)).override(**changes)
                found = search_task(config.task, size, gate_list, progress=update)
    except ProgsynthError as error:
        fail(error)
    summary = found.to_dict()
    emit(summary, as_json, escape(_search_text(summary)))


def _versus_text(result: dict[str, Any]) -> str:
    """The versus summary: one block per experiment."""
    def num(value: Any, spec: str = ".3g") -> str:
        return "—" if value is None else format(value, spec)

    lines = [f"versus: {len(result['computed'])} points computed, {len(result['skipped'])} already there "
             f"({result['out']}/versus.jsonl)"]
    for name, entry in result.get("data", {}).items():
        lines.append(f"data {name}: smallest fraction with held-out ≥ 0.99: SGD {num(entry['sgd_smallest_fraction'])}, "
                     f"search {num(entry['search_smallest_fraction'])}")
        lines += [f"  fraction {f:<6g} SGD {num(s, '.3f')}  MAP {num(m, '.3f')}  mixture {num(x, '.3f')}"
                  for f, s, m, x in zip(entry["fractions"], entry["sgd"], entry["map"], entry["mixture"])]
    if "size" in result:
        lines.append(f"size: SGD cheaper from size {num(result['size']['sgd_cheaper_from_size'])}")
        lines += [f"  {t['target']:<18} size {t['size']}: search {num(t['search_seconds'])} s "
                  f"({'correct' if t['search_correct'] else 'wrong'}), SGD "
                  + (f"{num(t['sgd_seconds'])} s" if t["sgd_generalised"] else "did not generalise")
                  for t in result["size"]["targets"]]
    for k, entry in result.get("parity", {}).items():
        lines.append(f"parity {k}: SGD steps ∝ n^{num(entry['sgd_exponent'])}; search found the planted subset: "
                     f"{entry['search_found_planted']}")
        lines += [f"  n {n:<3} SGD {num(s)} steps, search {c} subsets, weight ratio before the drop {num(r)}"
                  for n, s, c, r in zip(entry["n"], entry["sgd_steps"], entry["subsets"], entry["ratio_before_drop"])]
    if "found" in result:
        f = result["found"]
        lines.append(f"found: {f['same_function']} of {f['compared']} networks' programs compute the search's MAP")
        lines += [f"  {r['model']} {r['op']} {r['fraction']:g}: search {r['search']} ({r['search_bits']:.0f} bits), "
                  f"extracted {r['extracted_bits']} bits, same function: {r['same_function']}" for r in f["pairs"]]
    if result.get("page"):
        lines.append(f"page: {result['page']}")
    return "\n".join(lines)


@app.command()
def versus(
    out: str = typer.Argument(..., help="Output directory (rows in OUT/versus.jsonl, runs in OUT/runs/)."),
    experiment: str = typer.Option("all", "--experiment", help="data, size, parity, found, a comma list, or all."),
    quick: bool = typer.Option(False, "--quick", help="A seconds-long version of each experiment (smaller p, n)."),
    png: bool = typer.Option(False, "--png", help="Also write each figure as OUT/figures/<name>.png."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Put the program search and SGD side by side on the same tasks and splits.

    data: held-out accuracy against training fraction; size: seconds to a correct program against
    its size; parity: sparse parity's cost against n and the hidden progress; found: the search's
    MAP program against the program extracted from the network. Resumable: finished points are
    kept in OUT/versus.jsonl and skipped. Writes OUT/versus.html.

    Example: progsynth versus runs/versus --experiment data,found
    """
    from rich.markup import escape

    from progsynth.report.versus import write_versus_report
    from progsynth.search.versus import EXPERIMENTS, run_versus

    chosen = EXPERIMENTS if experiment.strip() == "all" else tuple(e.strip() for e in experiment.split(","))
    try:
        with _checkpoint_bar("versus", as_json, unit="points") as update:
            result = run_versus(out, chosen, quick=quick, progress=update)
        page = write_versus_report(result, png=png)
    except ProgsynthError as error:
        fail(error)
    summary = {**result.to_dict(), "page": str(page)}
    emit(summary, as_json, escape(_versus_text(summary)))


# ---- report ------------------------------------------------------------------------------------
@app.command()
def report(
    runs: list[str] = typer.Argument(..., help="Run directory (several with --compare)."),
    compare_runs: bool = typer.Option(False, "--compare", help="One page comparing the runs given (runs, or "
                                                               "directories holding runs)."),
    out: str = typer.Option(None, "--out", help="With --compare: the page to write (default: compare.html in the "
                                                "runs' common parent directory)."),
    png: bool = typer.Option(False, "--png", help="Also write every figure as RUN/figures/<name>.png (with "
                                                  "--compare: figures/ beside the page)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Write RUN/report.html, a self-contained page on what a run learned; with --compare, one page
    on many runs of one task.

    The page works offline: loss and accuracy over the detected phases, the progress measures, the
    Fourier spectrum of the embedding over training, neurons grouped by frequency, the extracted
    program, the NTK, paths and contrasts once measured, and the run's configuration. Analyses not
    run yet are listed with the command that adds them. --compare draws what `progsynth compare`
    prints: similarity matrices, the key-frequency histogram, agreement, similarity over training
    and the random-label table.

    Example: progsynth report runs/quick-seed0 --png
    Example: progsynth report --compare runs/q
    """
    from rich.markup import escape

    from progsynth.errors import ConfigError

    try:
        if compare_runs:
            from progsynth.compare.convergence import compare_runs as compare_many
            from progsynth.report.compare import write_compare_report

            with _checkpoint_bar("compare", as_json, unit="steps") as update:
                comparison = compare_many(runs, progress=update)
            page, pngs = write_compare_report(comparison, out, png=png)
            summary = {**comparison.to_dict(), "report": str(page), "png": [str(p) for p in pngs]}
            text = escape(_compare_text(summary)) + f"\nreport: {page}"
            if pngs:
                text += "\nfigures: " + ", ".join(map(str, pngs))
            emit(summary, as_json, text)
            return
        if len(runs) != 1 or out is not None:
            raise ConfigError(f"report takes one run directory (got {len(runs)}) and no --out; give --compare to "
                              "compare several runs on one page")
        from progsynth.report.html import write_report

        with _checkpoint_bar("report", as_json) as update:
            written = write_report(runs[0], png=png, progress=update)
    except ProgsynthError as error:
        fail(error)
    text = escape(written.summary.text()) + f"\nreport: {written.path}"
    if written.png:
        text += "\nfigures: " + ", ".join(str(p) for p in written.png)
    emit(written.to_dict(), as_json, text)


# ---- sweep report ------------------------------------------------------------------------------
def _sweep_report_text(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{phase} {n}" for phase, n in result["counts"].items() if n) or "no runs"
    axes = " × ".join(f for f in (result["x"], result["y"]) if f) or "none (nothing swept)"
    lines = [f"sweep {result['sweep']}: {len(result['cells'])} points, {len(result['runs'])} runs: {counts}",
             f"phase diagram over {axes}" + (f", one per value of {', '.join(result['facets'])}"
                                             if result["facets"] else "")]
    for cell in result["cells"]:
        shown = ", ".join(f"{phase} {n}/{cell['seeds']}" for phase, n in cell["counts"].items()) or cell["phase"]
        lines.append(f"  {cell['point']}: {cell['phase']}" + (" (tie)" if cell["tie"] else "") + f" — {shown}"
                     + (f" — {cell['message']}" if cell["message"] else ""))
    lines.append(f"report: {result['report']}")
    return "\n".join(lines)


@app.command("sweep-report")
def sweep_report(
    sweep: str = typer.Argument(..., help="Sweep directory (holding sweep.json)."),
    x: str = typer.Option(None, "--x", help="Swept field across the phase diagram (default: the grid's first)."),
    y: str = typer.Option(None, "--y", help="Swept field down the phase diagram (default: the grid's next; every "
                                            "other swept field gets a diagram per value)."),
    out: str = typer.Option(None, "--out", help="The page to write (default: SWEEP/report.html)."),
    reach: float = typer.Option(None, "--reach", help="Accuracy at which a split reaches (default 0.9, Liu et "
                                                      "al.'s)."),
    gap: int = typer.Option(None, "--gap", help="Steps from train reaching to test reaching at and beyond which a run "
                                                "grokked rather than comprehended (default 1000, Liu et al.'s)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Write SWEEP/report.html, one self-contained page on every run of a sweep.

    The page holds a phase diagram over two swept fields (Liu et al. 2022's comprehension,
    grokking, memorisation and confusion, per grid point the phase of most seeds and the count of
    each), the steps to generalise (test accuracy ≥ 0.99) against the data fraction, the key
    frequencies of the runs analysed, and one row per grid point and seed.

    Example: progsynth sweep-report runs/sweep --x optim.weight_decay --y task.train_fraction
    """
    from rich.markup import escape

    from progsynth.report.sweep import PhaseCriteria, write_sweep_report

    try:
        given = {"reach": reach, "gap": gap}
        criteria = PhaseCriteria(**{k: v for k, v in given.items() if v is not None})
        written = write_sweep_report(sweep, out, x, y, criteria)
    except ProgsynthError as error:
        fail(error)
    result = written.to_dict()
    emit(result, as_json, escape(_sweep_report_text(result)))


# ---- demo --------------------------------------------------------------------------------------
@app.command()
def demo(
    out: str = typer.Option(DEFAULT_DEMO_OUT, "--out", help="Run directory (reused: an interrupted demo continues)."),
    llc: bool = typer.Option(True, "--llc/--no-llc", help="Estimate the local learning coefficient at the checkpoints."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """The main job: train the quick preset, read the program out, estimate the LLC, write the report.

    Trains a one-layer transformer on a + b mod 53 until it groks (about a minute on 2 cores),
    measures every checkpoint, extracts the Fourier program, estimates the local learning
    coefficient over training, writes RUN/report.html and prints a one-screen summary. Run it again
    and it only adds what is missing.

    Example: progsynth demo --out runs/quick
    """
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from progsynth.demo import DemoProgress, run_demo

    bar, train_update = _progress_bar(as_json)
    stages = None if as_json else Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True)
    tasks: dict[str, Any] = {}

    def stage(name: str) -> None:
        if name == "train":
            bar.start()
            return
        bar.stop()
        if not stages.live.is_started:
            stages.start()
        tasks[name] = stages.add_task(name, total=None)

    def updater(name: str):
        return lambda done, total, *_: stages.update(tasks[name], completed=done, total=total)

    progress = None if as_json else DemoProgress(stage, train_update, updater("measure"), updater("llc"),
                                                 updater("report"), degeneracy=updater("measure"))
    try:
        result = run_demo(out, llc=llc, progress=progress)
    except ProgsynthError as error:
        fail(error)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"interrupted; everything so far is saved in {out}: run `progsynth demo --out {out}` "
                                   "again to continue")
        raise typer.Exit(code=1)
    finally:
        if bar:
            bar.stop()
        if stages:
            stages.stop()
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    text = f"{escape(result.report.summary.text())}\n\n{timing}\nreport: {result.report.path}"
    emit(result.to_dict(), as_json, text)


# ---- singular learning theory ------------------------------------------------------------------
def _sgld_config(chains: int | None, draws: int | None, burnin: int | None, epsilon: str | None,
                 localization: float | None, batch_size: int | None, seed: int | None) -> Any:
    """An SGLDConfig from the CLI's options: None keeps the field's documented default (the
    sampler reports no progress: a command passes its bar in with ``dataclasses.replace``)."""
    from progsynth.errors import ConfigError
    from progsynth.slt.llc import SGLDConfig

    fields: dict[str, Any] = {"num_chains": chains, "num_draws": draws, "num_burnin": burnin,
                              "localization": localization, "batch_size": batch_size, "seed": seed}
    if epsilon is not None and epsilon != "auto":
        try:
            fields["epsilon"] = float(epsilon)
        except ValueError:
            raise ConfigError(f"--epsilon must be a positive number or 'auto', got {epsilon!r}") from None
    config = SGLDConfig(**{k: v for k, v in fields.items() if v is not None})
    config.validate()
    return config


# The sampler options llc and llc-dln share (typer reads an Option's settings; one object serves both).
_CHAINS = typer.Option(None, "--chains", help="Chains, run together (default 8, SGLDConfig.num_chains).")
_DRAWS = typer.Option(None, "--draws", help="Draws per chain after burn-in (default 2000, SGLDConfig.num_draws).")
_BURNIN = typer.Option(None, "--burnin", help="Burn-in steps per chain (default: automatic, two relaxation "
                                              "times 2/(εγ) within [1000, 8000] per phase; SGLDConfig.num_burnin).")
_EPSILON = typer.Option(None, "--epsilon", help="SGLD step size, or 'auto' (default): a short sweep picks it "
                                                "(see progsynth.slt.llc).")
_GAMMA = typer.Option(None, "--gamma", help="Localization γ, the pull back to the checkpoint (default 5, "
                                            "SGLDConfig.localization).")
_BATCH = typer.Option(None, "--batch-size", help="Minibatch size (default 500, SGLDConfig.batch_size; the whole "
                                                 "set when it is smaller).")
_SEED = typer.Option(None, "--seed", help="Sampler seed (default 0).")


def _plain(value: Any) -> Any:
    """A measures-table cell as JSON: NaN (a field older rows lack) becomes None, numpy numbers plain."""
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _llc_text(row: dict[str, Any]) -> str:
    """One line per estimate: λ̂ ± se, ε, acceptance and any warnings."""
    what = "" if row.get("restrict") is None else f" [{row['restrict']}, {row['params_sampled']} weights]"
    data = "" if row.get("data") in (None, "train") else f" [{row['data']} rows]"
    systematic = row.get("llc_systematic")
    total = (f" (± {math.hypot(row['llc_stderr'], systematic):.2g} with the localization's systematic)"
             if isinstance(systematic, float) and math.isfinite(systematic) else "")
    text = (f"step {row['step']:>7}{what}{data}: λ̂ = {row['llc']:.4g} ± {row['llc_stderr']:.2g}{total}  "
            f"(ε {row['epsilon']:.3g}, nβ {row['nbeta']:.4g}, acceptance {row['acceptance']:.2f})")
    return "\n".join([text] + [f"    warning: {w}" for w in row["warnings"]])


@app.command()
def llc(
    run: str = typer.Argument(..., help="Run directory."),
    checkpoints: str = typer.Option("all", "--checkpoints", help="'all' or a comma list of checkpoint steps."),
    chains: int = _CHAINS, draws: int = _DRAWS, burnin: int = _BURNIN, epsilon: str = _EPSILON,
    localization: float = _GAMMA, batch_size: int = _BATCH, seed: int = _SEED,
    restrict: str = typer.Option(None, "--restrict", help="Refined LLC: move only this component's weights "
                                 "(the transformer's embedding, head0 ..., mlp, unembedding), or parameter-name "
                                 "patterns (comma-separated globs); 'all-components' runs each component."),
    data: str = typer.Option("train", "--data", help="The loss's rows: train (default), test (held-out pairs) or all."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Estimate the local learning coefficient λ̂ at a run's checkpoints by SGLD.

    Samples around each chosen checkpoint on the run's training set (nβ = n / log n) and appends
    one row per checkpoint to RUN/measures.jsonl, which `progsynth report` plots. Checkpoints
    already estimated with the same settings are skipped. With --restrict, only the named weights
    move (the refined LLC of Wang et al. 2024); with --data, the loss is taken on other rows.

    Example: progsynth llc runs/quick-seed0 --checkpoints 0,500,2000 --draws 500
    Example: progsynth llc runs/quick-seed0 --restrict all-components
    """
    from rich.markup import escape

    from progsynth.runs.store import MEASURES, RunStore
    from progsynth.slt.run_llc import estimate_run_llc, parse_steps, settings_of

    try:
        config = _sgld_config(chains, draws, burnin, epsilon, localization, batch_size, seed)
        steps = parse_steps(checkpoints, RunStore.open(run).checkpoint_steps())
        with _checkpoint_bar("llc", as_json) as update:
            result = estimate_run_llc(run, steps, config, progress=update, restrict=restrict, data=data)
    except ProgsynthError as error:
        fail(error)
    columns = ["step", "restrict", "data", "params_sampled", "llc", "llc_stderr", "llc_systematic", "llc_std", "epsilon",
               "nbeta",
               "localization", "init_loss", "acceptance", "diverged_chains", "warnings"]
    rows = [{k: row.get(k) for k in columns} for row in result.table.to_dict("records")]
    for row in rows:  # fields that rows written before the refined LLC lack (NaN in the table)
        row["restrict"], row["data"] = _plain(row["restrict"]), _plain(row["data"]) or "train"
        row["params_sampled"] = None if _plain(row["params_sampled"]) is None else int(row["params_sampled"])
    summary = {"run": str(run), "file": str(Path(run) / MEASURES), "computed": list(result.computed),
               "skipped": list(result.skipped), "settings": settings_of(config), "restrict": restrict, "data": data,
               "estimates": rows}
    text = "\n".join([_llc_text(row) for row in rows] + [
        f"{len(result.computed)} estimated, {len(result.skipped)} already there; written to {summary['file']}"])
    emit(summary, as_json, escape(text))


@app.command("llc-dln")
def llc_dln(
    widths: str = typer.Option("20,10,10,10,20", "--widths", help="Layer widths H0,...,HL."),
    rank: int = typer.Option(5, "--rank", help="Rank of the true product W_L ... W_1."),
    n: int = typer.Option(10_000, "--n", help="Number of samples."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the true network and the data."),
    chains: int = _CHAINS, draws: int = _DRAWS, burnin: int = _BURNIN, epsilon: str = _EPSILON,
    localization: float = _GAMMA, batch_size: int = _BATCH, seed: int = _SEED,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Check the LLC estimator on a deep linear network against Aoyagi's exact λ.

    Trains nothing: builds the network at a true parameter of the given rank, draws data from it
    and compares λ̂ (SGLD) with Aoyagi's λ.

    Example: progsynth llc-dln --widths 20,10,10,10,20 --rank 5 --json
    """
    from rich.markup import escape

    from dataclasses import replace

    from progsynth.errors import ConfigError
    from progsynth.slt.dln import check_dln_llc

    try:
        try:
            width_list = [int(w) for w in widths.split(",")]
        except ValueError:
            raise ConfigError(f"--widths must be a comma list of positive integers, got {widths!r}") from None
        config = _sgld_config(chains, draws, burnin, epsilon, localization, batch_size, seed)
        with _checkpoint_bar("SGLD", as_json, unit="steps") as update:
            check = check_dln_llc(width_list, rank, n=n, data_seed=data_seed, config=replace(config, progress=update))
    except ProgsynthError as error:
        fail(error)
    r = check.result
    out = {**check.to_dict(), "llc_std": r.llc_std, "llc_per_chain": r.llc_per_chain.tolist(), "n": r.n,
           "diagnostics": {"diverged": list(r.diagnostics.diverged), "below_start": list(r.diagnostics.below_start),
                           "step_curvature": r.diagnostics.step_curvature, "ok": r.diagnostics.ok,
                           "warnings": list(r.diagnostics.warnings)}}
    text = "\n".join([
        f"DLN widths {check.widths}, rank {check.rank}: d = {r.num_params}, n = {r.n}",
        f"λ̂ = {r.llc_mean:.4g} ± {r.llc_stderr:.2g} (se over {len(r.llc_per_chain)} chains; "
        f"± {r.llc_uncertainty:.2g} with the localization's systematic {r.llc_systematic:.2g})   "
        f"Aoyagi λ = {check.exact:g}   relative error {check.rel_error:+.1%}",
        f"ε {r.epsilon:.3g}, nβ {r.nbeta:.4g}, γ {r.localization:g}, acceptance {r.diagnostics.acceptance_mean:.2f}, "
        f"ε·κ_max {r.diagnostics.step_curvature:.2f}, {r.seconds:.1f} s",
    ] + [f"warning: {w}" for w in r.diagnostics.warnings] + (["diagnostics: all checks passed"] if r.diagnostics.ok else []))
    emit(out, as_json, escape(text))


# ---- the parameter-function map ----------------------------------------------------------------
def _num(value: Any, spec: str = ".3g") -> str:
    """A number for the text summaries; 'n/a' for None or NaN."""
    return "n/a" if value is None or (isinstance(value, float) and value != value) else format(value, spec)



def _ntk_text(row: dict[str, Any]) -> str:
    """One line per checkpoint: the top eigenvalues, effective rank, key share, factorisation check."""
    eig = row["eigenvalues"]
    key = row.get("key_share")
    return (f"step {row['step']:>7}: λ1..3 = {', '.join(f'{v:.4g}' for v in eig[:3])} (top {len(eig)}: "
            f"{row['top_share']:.1%} of the trace), effective rank {row['effective_rank']:.3g}"
            + (f", top eigenfunction's key share {key[0]:.3f}" if isinstance(key, list) and key else "")
            + f", factorisation error {row['factorisation_error']:.1e} ({row['method']}, {row['seconds']:.1f} s)")


@app.command()
def ntk(
    run: str = typer.Argument(..., help="Run directory."),
    checkpoints: str = typer.Option("all", "--checkpoints", help="'all' or a comma list of checkpoint steps."),
    inputs: int = typer.Option(None, "--inputs", help="Data rows the kernel is computed on (default 1000, "
                                                      "NTKConfig.inputs; all rows when fewer)."),
    top: int = typer.Option(None, "--top", help="Largest eigenvalues computed (default 20, NTKConfig.top)."),
    probes: int = typer.Option(None, "--probes", help="Probes of the trace estimate (default 16, NTKConfig.probes)."),
    method: str = typer.Option(None, "--method", help="auto (default), lanczos or dense."),
    seed: int = _SEED,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Measure the empirical neural tangent kernel Θ = J Jᵀ at a run's checkpoints.

    On a fixed subset of inputs: the top eigenvalues (matrix-free Lanczos on Jacobian-vector
    products), the trace, an effective rank, the check ∇_w L = J_fᵀ ∇ℓ through the lenses, and for
    tasks on Z_p the share of the top eigenfunctions along the final program's key frequencies.
    Appends one row per checkpoint to RUN/measures.jsonl, which `progsynth report` plots.

    Example: progsynth ntk runs/quick --checkpoints 0,100,1300 --top 10
    """
    from rich.markup import escape

    from progsynth.geometry.ntk import NTKConfig
    from progsynth.geometry.run_ntk import measure_run_ntk
    from progsynth.runs.store import MEASURES, RunStore
    from progsynth.slt.run_llc import parse_steps

    fields = {"inputs": inputs, "top": top, "probes": probes, "method": method, "seed": seed}
    try:
        config = NTKConfig(**{k: v for k, v in fields.items() if v is not None})
        config.validate()
        steps = parse_steps(checkpoints, RunStore.open(run).checkpoint_steps())
        with _checkpoint_bar("ntk", as_json) as update:
            result = measure_run_ntk(run, steps, config, progress=update)
    except ProgsynthError as error:
        fail(error)
    file = str(Path(run) / MEASURES)
    summary = {"run": str(run), "file": file, **result.to_dict()}
    rows = summary["rows"]
    text = "\n".join([_ntk_text(row) for row in rows] + [
        f"{len(result.computed)} measured, {len(result.skipped)} already there; written to {file}"])
    emit(summary, as_json, escape(text))

def _path_text(result: dict[str, Any], file: str) -> str:
    """The path summary: key frequencies, barriers, transitions and switch verdicts, a few points."""
    p, f = result["parameter"], result["function"]
    aligned = "" if not result["aligned"] else (
        f" (B aligned to A: {result['alignment']['moved']} units moved, parameter distance "
        f"{result['alignment']['distance_before']:.4g} → {result['alignment']['distance_after']:.4g})")
    lines = [f"path {result['a']} → {result['b']}{aligned}: {len(p['t'])} points"]
    if result["key_frequencies"] is not None:
        lines.append(f"mechanism measured with key frequencies {result['key_frequencies']} ({result['relabelling']} "
                     f"relabelling, from {result['key_from'].upper()}'s program)")
    elif result["note"]:
        lines.append(f"no mechanism measures: {result['note']}")
    lines.append(f"{'':<16}{'parameter path':>22}{'function path':>22}")
    for name in ("train_loss", "test_loss"):
        cells = [f"{_num(c['barriers'][name]['height'], '.4g')} at t={c['barriers'][name]['t']:.2f}"
                 if name in c["barriers"] else "n/a" for c in (p, f)]
        lines.append(f"{name + ' barrier':<16}{cells[0]:>22}{cells[1]:>22}")
    for i, tr in enumerate(p["transitions"]):
        cells = []
        for c in (p, f):
            match = next((x for x in c["transitions"] if x["measure"] == tr["measure"]), None)
            cells.append("n/a" if match is None else match["kind"] if match["kind"] != "moves" else
                         f"{match['t_low']:.2f}–{match['t_high']:.2f} ({match['width']:.2f})")
        lines.append(f"{tr['measure']:<16}{cells[0]:>22}{cells[1]:>22}")
    lines += [f"parameter path: {p['switch']['text']}", f"function path: {f['switch']['text']}"]
    marks = sorted({round(x * (len(p["t"]) - 1)) for x in (0, 0.25, 0.5, 0.75, 1)})
    lines.append("t                " + "".join(f"{p['t'][i]:>8.2f}" for i in marks))
    for label, c in (("param test acc", p), ("function test acc", f)):
        lines.append(f"{label:<17}" + "".join(f"{_num(c['values']['test_accuracy'][i], '.3f'):>8}" for i in marks))
    lines.append(f"written to {file}")
    return "\n".join(lines)


@app.command()
def path(
    a: str = typer.Argument(..., help="Checkpoint A as RUN@STEP (STEP a number or 'last')."),
    b: str = typer.Argument(..., help="Checkpoint B as RUN@STEP, of the same architecture and task."),
    points: int = typer.Option(51, "--points", help="Points along each path, endpoints included (2 to 1001)."),
    align: bool = typer.Option(False, "--align", help="First permute B's hidden units to match A's (weight "
                                                      "matching, Git Re-Basin): for two seeds."),
    mechanism: bool = typer.Option(True, "--mechanism/--no-mechanism", help="Measure restricted/excluded loss, key "
                                                                            "energy and Gini along the paths (Z_p tasks)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Walk the straight paths from checkpoint A to B, in parameter space and in function space.

    Along w(t) = (1−t) w_A + t w_B and f(t) = (1−t) f_A + t f_B: train/test loss and accuracy, the
    loss barrier above the chord, and the mechanism measures, with the interval over which they
    move from A's value to B's (a switch point when it is narrow). The result is appended to A's
    run measures.jsonl, which `progsynth report` draws.

    Example: progsynth path runs/quick@100 runs/quick@last
    Example: progsynth path runs/q/seed-0@last runs/q/seed-1@last --align
    """
    from rich.markup import escape

    from progsynth.geometry.checkpoints import parse_checkpoint
    from progsynth.geometry.paths import record_path, straight_path
    from progsynth.runs.store import MEASURES

    try:
        ref_a, ref_b = parse_checkpoint(a), parse_checkpoint(b)
        with _checkpoint_bar("path", as_json, unit="points") as update:
            result = straight_path(ref_a, ref_b, points=points, align=align, mechanism=mechanism, progress=update)
        record_path(result)
    except ProgsynthError as error:
        fail(error)
    file = str(ref_a.run / MEASURES)
    summary = {**result.to_dict(), "file": file}
    emit(summary, as_json, escape(_path_text(summary, file)))


def _contrast_text(result: dict[str, Any], file: str) -> str:
    """The contrast summary: one column per checkpoint, then what they share and how they move."""
    a, b = result["a"], result["b"]
    rows = [("train loss / accuracy", lambda s: f"{_num(s['train_loss'], '.3g')} / {_num(s['train_accuracy'], '.3f')}"),
            ("held-out loss / accuracy", lambda s: f"{_num(s['test_loss'], '.3g')} / {_num(s['test_accuracy'], '.3f')}")]
    if a["program"] is not None:
        rows += [("own key frequencies", lambda s: f"{len(s['program']['key_frequencies'])} (below)"),
                 ("Fourier share (held-out)", lambda s: f"{s['program']['explained']:.1%}"),
                 ("verdict, bits", lambda s: f"{s['program']['verdict_kind']}, {s['program']['description_bits']}"),
                 ("key energy (common)", lambda s: f"{s['common']['key_energy']:.3f}"),
                 ("Gini embedding", lambda s: f"{s['common']['gini_embedding']:.3f}")]
        for name in ("remove all key", "keep only key"):
            for where in ("embedding", "logits"):
                rows.append((f"{where}: {name} (acc)", lambda s, n=name, w=where: _num(next(
                    (x["accuracy"] for x in s["ablations"] if x["name"] == n and x["where"] == w), None), ".3f")))
    if a["llc"] is not None:
        rows.append(("λ̂ ± se", lambda s: f"{s['llc']['llc']:.4g} ± {s['llc']['llc_stderr']:.2g}"))
    rows.append(("‖Δf‖ one step", lambda s: f"{s['update_norm']:.3g}"))
    lines = [f"contrast {result['run']}: A = step {a['step']}, B = step {b['step']}",
             f"{'':<32}{'A':>20}{'B':>20}"]
    lines += [f"{label:<32}{cell(a):>20}{cell(b):>20}" for label, cell in rows]
    cos = result["update_cosine"]
    lines += [f"answers agree on {result['train_agreement']:.1%} of training pairs and {_num(result['heldout_agreement'], '.1%')} "
              "of held-out pairs",
              f"one optimizer step moves the two functions with cosine {_num(cos['all'], '.3f')} (training inputs "
              f"{_num(cos['train'], '.3f')}, held-out {_num(cos['test'], '.3f')})"]
    if result["key_frequencies"] is not None:
        lines += [f"{name}'s key frequencies {side['program']['key_frequencies']}" for name, side in (("A", a), ("B", b))]
        lines.append(f"common key frequencies {result['key_frequencies']} ({result['relabelling']}, from "
                     f"{result['key_from'].upper()}'s program)")
    lines += [f"note: {n}" for n in result["notes"]] + [f"written to {file}"]
    return "\n".join(lines)


@app.command()
def contrast(
    run: str = typer.Argument(..., help="Run directory."),
    step_a: int = typer.Option(None, "--a", help="Step of checkpoint A (default: the first checkpoint after the "
                                                 "training set is fitted)."),
    step_b: int = typer.Option(None, "--b", help="Step of checkpoint B (default: the last checkpoint)."),
    llc: bool = typer.Option(True, "--llc/--no-llc", help="Estimate λ̂ at both checkpoints (reuses estimates "
                                                        "with the same settings)."),
    chains: int = _CHAINS, draws: int = _DRAWS, burnin: int = _BURNIN, epsilon: str = _EPSILON,
    localization: float = _GAMMA, batch_size: int = _BATCH, seed: int = _SEED,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Same function, different program: compare two checkpoints that agree on the training set.

    Held-out behaviour, each one's extracted Fourier program, key energy and Gini on common key
    frequencies, ablations, λ̂, and the cosine between the changes one step of the run's optimizer
    makes to each one's outputs. Appended to RUN/measures.jsonl.

    Example: progsynth contrast runs/quick --a 100 --b 1300 --draws 500
    """
    from rich.markup import escape

    from progsynth.geometry.contrast import contrast_checkpoints
    from progsynth.runs.store import MEASURES

    try:
        config = _sgld_config(chains, draws, burnin, epsilon, localization, batch_size, seed) if llc else None
        with _checkpoint_bar("contrast", as_json, unit="parts") as update:
            result = contrast_checkpoints(run, step_a, step_b, llc=config, progress=update)
    except ProgsynthError as error:
        fail(error)
    file = str(Path(run) / MEASURES)
    summary = {**result.to_dict(), "file": file}
    emit(summary, as_json, escape(_contrast_text(summary, file)))


# ---- many runs ---------------------------------------------------------------------------------
def _matrix_text(title: str, names: list[str], matrix: list[list[Any]]) -> list[str]:
    """A small labelled matrix, two decimals per cell."""
    width = max(6, max(len(n) for n in names) + 1)
    lines = [title, " " * width + "".join(f"{i:>6}" for i in range(len(names)))]
    for i, (name, row) in enumerate(zip(names, matrix)):
        lines.append(f"{name:<{width}}" + "".join(f"{_num(v, '.2f'):>6}" for v in row) + f"  [{i}]")
    return lines


def _compare_text(c: dict[str, Any]) -> str:
    """The comparison: runs and programs, frequencies, similarity matrices, over training, groups,
    random labels."""
    names = [r["name"] for r in c["runs"]]
    lines = [f"{len(names)} runs, representations on {c['rows']} inputs ({c['seconds']:.1f} s)",
             f"{'run':<18}{'model':>12}{'optim':>9}{'Q':>5}{'step':>7}{'fitted':>7}{'general.':>9}{'held-out':>9}"]
    for r in c["runs"]:
        p = r["program"]
        program = "no program read (not a task on Z_p)" if p is None else \
            f"program {p['key_frequencies']} ({p['relabelling']}), {p['description_bits']} bits, {p['verdict_kind']}"
        lines += [f"{r['name']:<18}{r['model']:>12}{r['optimizer']:>9}{r['label_noise']:>5g}{r['step']:>7}"
                  f"{_num(r['fitted_step'], 'd'):>7}{_num(r['generalised_step'], 'd'):>9}{r['test_accuracy']:>9.3f}",
                  f"{'':<18}{program}"]
    f = c["frequencies"]
    if f is not None:
        lines.append("key-frequency sets: " + ", ".join(f"{x['frequencies']} ×{x['runs']}" for x in f["sets"]))
        lines.append(f"key frequencies: {f['counts']} (runs using each); most shared by {f['statistic']} runs, "
                     f"p = {f['p_value']:.3g} under uniform use"
                     + (f": preferred {f['preferred']}" if f["preferred"] else ": consistent with uniform use"))
    lines += _matrix_text("held-out agreement", names, c["agreement"])
    for measure, site in (("cka", "hidden"), ("cka", "embedding"), ("knn", "hidden"), ("stitching", "hidden")):
        lines += _matrix_text(f"{measure} ({site})", names, c["similarity"][measure][site])
    o = c["over_training"]
    if o["steps"]:
        lines.append(f"over training ({len(o['steps'])} common steps), mean over pairs at the first / last step: "
                     + ", ".join(f"{key} {_num(o[key][0], '.2f')} → {_num(o[key][-1], '.2f')}"
                                 for key in ("agreement", "cka_hidden", "knn_hidden", "stitching_hidden")))
    g = c["grokking"]
    lines.append(f"generalisation step against closeness to the others (mean hidden CKA): Spearman ρ = "
                 f"{_num(g['spearman'], '.3f')}")
    for group in c["groups"]:
        lines.append(f"by {group['setting']}: CKA within {_num(group['cka_within'], '.3f')}, between "
                     f"{_num(group['cka_between'], '.3f')}; " + "; ".join(
                         f"{x['value']}: {x['generalised']}/{len(x['runs'])} generalised, mean step "
                         f"{_num(x['mean_generalised_step'], '.0f')}" for x in group["groups"]))
    if c["random_labels"]:
        lines.append(f"{'random labels':<24}{'Q':>6}{'fit ep.':>9}{'× clean':>9}{'held-out':>9}{'Σw²':>10}{'λ̂':>9}"
                     f"{'eff. params':>13}  program")
        for r in c["random_labels"]:
            program = f"{r['program_bits']} bits" if r["program_bits"] is not None else \
                f"none ({r['verdict']}); table {_num(r['lookup_table_bits'], '.0f')} bits"
            lines.append(f"{r['run']:<24}{r['label_noise']:>6g}{_num(r['fit_epochs'], '.0f'):>9}"
                         f"{_num(r['fit_ratio'], '.2f'):>9}{r['heldout_accuracy']:>9.3f}{r['weight_norm']:>10.4g}"
                         f"{_num(r['llc'], '.4g'):>9}{_num(r['effective_parameters'], 'd'):>13}  {program}")
    lines += [f"note: {n}" for n in c["notes"]]
    return "\n".join(lines)


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Run directories, or directories holding runs (e.g. runs/q for "
                                               "runs/q/seed-0 … seed-7)."),
    inputs: int = typer.Option(800, "--inputs", help="Data rows the representations are read on (drawn with "
                                                     "--seed; all when fewer; CompareConfig.inputs)."),
    k: int = typer.Option(10, "--k", help="Neighbours of the mutual k-NN alignment."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rows and of the uniformity test."),
    ridge: float = typer.Option(0.01, "--ridge", help="Ridge of the stitching fit, relative to the mean eigenvalue "
                                                      "(CompareConfig.ridge)."),
    over_training: bool = typer.Option(True, "--over-training/--final-only", help="Also compare at every "
                                                                                  "checkpoint step the runs share."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Compare many runs of one task: programs, functions, representations, over training.

    Each run at its newest checkpoint: its extracted program, the distribution of key frequencies
    across runs with a uniformity test, held-out agreement, CKA, mutual k-NN and linear stitching
    of the embeddings and hidden units, the same at every common checkpoint step, grokking time
    against closeness, the settings the runs differ in, and a random-label table when some run
    trained with --label-noise. Nothing is written; `progsynth report --compare` draws the page.

    Example: progsynth compare runs/q
    Example: progsynth compare runs/adamw runs/adam runs/momentum --final-only
    """
    from rich.markup import escape

    from progsynth.compare.convergence import CompareConfig, compare_runs

    try:
        config = CompareConfig(inputs=inputs, k=k, seed=seed, ridge=ridge, over_training=over_training)
        with _checkpoint_bar("compare", as_json, unit="steps") as update:
            result = compare_runs(runs, config, progress=update)
    except ProgsynthError as error:
        fail(error)
    summary = result.to_dict()
    emit(summary, as_json, escape(_compare_text(summary)))
