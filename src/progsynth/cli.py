"""The ``progsynth`` command. Thin: parses flags, calls library functions, prints.

Conventions (every command): ``--json`` prints one JSON object as the last line of output; exit
code 0 on success, 2 on a usage error, 1 on a failure (a ``ProgsynthError``, printed without a
stack trace).
"""

from __future__ import annotations

import json
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
