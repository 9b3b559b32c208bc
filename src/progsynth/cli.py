"""The ``progsynth`` command. Thin: parses flags, calls library functions, prints.

Conventions (every command): ``--json`` prints one JSON object as the last line of output; exit
code 0 on success, 2 on a usage error, 1 on a failure (a ``ProgsynthError``, printed without a
stack trace).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
import sys
from typing import Any

import typer
from rich.console import Console

from progsynth.errors import ProgsynthError

app = typer.Typer(
    help="progsynth: deep learning as program synthesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
circuit_app = typer.Typer(help="Boolean circuits learned by reverse derivative ascent.", no_args_is_help=True)
app.add_typer(circuit_app, name="circuit")

console = Console(stderr=False)


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """Print a human summary (unless --json) and, with --json, the result as the last line."""
    if as_json:
        print(json.dumps(result, default=float))
    else:
        console.print(text if text is not None else result)


def fail(error: ProgsynthError) -> None:
    """Report a ProgsynthError as one readable line and exit with code 1."""
    Console(stderr=True).print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


def main() -> None:
    """Entry point that turns ProgsynthError into exit code 1 without a stack trace."""
    try:
        app()
    except ProgsynthError as error:  # pragma: no cover - typer normally handles this in commands
        Console(stderr=True).print(f"[bold red]error:[/] {error}")
        sys.exit(1)


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
        row = rows[0]
        text = (f"train {row['train_loss']:.3g} / test {row['test_loss']:.3g}  "
                f"acc {row['train_accuracy']:.3f} / {row['test_accuracy']:.3f}")
        bar.update(task, completed=step, total=total, losses=text)

    return bar, update


@app.command()
def train(
    preset_name: str = typer.Option("quick", "--preset", help="Preset to start from: quick, nanda, gromov."),
    config_file: str = typer.Option(None, "--config", help="A JSON config file (e.g. a run's config.json)."),
    out: str = typer.Option(None, "--out", help="Run directory to create (default runs/<preset>-seed<seed>)."),
    resume_dir: str = typer.Option(None, "--resume", help="Continue this run directory from its newest checkpoint."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds to train together through vmap, e.g. 0-7."),
    op: str = typer.Option(None, help="Operation on Z_p (add, sub, mul, div, ...)."),
    p: int = typer.Option(None, help="Modulus p."),
    train_fraction: float = typer.Option(None, "--train-fraction", help="Fraction of pairs to train on."),
    model: str = typer.Option(None, help="transformer, gromov or mlp."),
    epochs: int = typer.Option(None, help="Epochs (full-batch steps)."),
    lr: float = typer.Option(None, help="Learning rate."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Weight decay."),
    seed: int = typer.Option(None, help="Model seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Train a network on an algorithmic task into a run directory.

    Example: progsynth train --preset quick --out runs/quick
    """
    from progsynth.runs.config import RunConfig, preset
    from progsynth.runs.train import parse_seeds, resume, train as train_run

    bar, update = _progress_bar(as_json)
    try:
        if resume_dir:
            if bar:
                bar.start()
            result = resume(resume_dir, progress=update)
        else:
            config = RunConfig.load(config_file) if config_file else preset(preset_name)
            config = config.override(**{"task.op": op, "task.p": p, "task.train_fraction": train_fraction,
                                        "model.name": model, "epochs": epochs, "optim.lr": lr,
                                        "optim.weight_decay": weight_decay, "seed": seed})
            seed_list = parse_seeds(seeds) if seeds else None
            target = out or f"runs/{preset_name if not config_file else 'run'}-seed{seeds or config.seed}"
            if bar:
                bar.start()
            result = train_run(config, target, seeds=seed_list, progress=update)
    except ProgsynthError as error:
        if bar:
            bar.stop()
        fail(error)
    finally:
        if bar:
            bar.stop()
    summary = {"run_dirs": [str(d) for d in result.run_dirs], "steps": result.steps,
               "total_steps": result.total_steps, "interrupted": result.interrupted,
               "seconds": round(result.seconds, 3), "final": result.final}
    text = "\n".join(
        f"{d}: step {r['step']}  train loss {r['train_loss']:.4g} acc {r['train_accuracy']:.3f}  "
        f"test loss {r['test_loss']:.4g} acc {r['test_accuracy']:.3f}" for d, r in zip(result.run_dirs, result.final))
    if result.interrupted:
        text += f"\ninterrupted at step {result.steps}; continue with: progsynth train --resume {result.run_dirs[0] if len(result.run_dirs) == 1 else Path(result.run_dirs[0]).parent}"
    emit(summary, as_json, text)
    if result.interrupted:
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
