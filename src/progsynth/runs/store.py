"""The run directory: the contract between training and analysis (DESIGN.md).

Layout of a run directory::

    config.json                      the RunConfig (a config file for `progsynth train --config`)
    checkpoints/step_00001234.safetensors
                                     scheduled checkpoints: parameters + optimizer state
    resume.safetensors               the latest resume point (may be newer than any scheduled one)
    metrics.jsonl                    append-only training metrics, one JSON object per line
    measures.jsonl                   append-only analysis measures (interp, slt), one per line

Checkpoints are safetensors: tensors plus string metadata, no code, so a shared run can be opened
safely. Every file is written atomically (temporary file, fsync, rename), and a new run directory
appears only once it holds its config and its step-0 checkpoint, so no run is ever half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils import _pytree as pytree

from progsynth.errors import RunError
from progsynth.runs.config import RunConfig

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
RESUME = "resume.safetensors"
METRICS = "metrics.jsonl"
MEASURES = "measures.jsonl"


def _atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` to a temporary file next to ``path``, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def flatten_named(prefix: str, tree: Any) -> dict[str, torch.Tensor]:
    """A pytree of tensors as {prefix + keypath: tensor}, the form safetensors stores."""
    leaves, _ = pytree.tree_flatten_with_path(tree)
    return {prefix + pytree.keystr(path): leaf for path, leaf in leaves}


def unflatten_named(prefix: str, like: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    """Fill a pytree shaped like ``like`` from {prefix + keypath: tensor}; RunError if anything is missing."""
    leaves, spec = pytree.tree_flatten_with_path(like)
    values = []
    for path, leaf in leaves:
        key = prefix + pytree.keystr(path)
        if key not in tensors:
            raise RunError(f"checkpoint {source} has no tensor {key!r}; it does not match this run's model/optimizer")
        value = tensors[key]
        if value.shape != leaf.shape:
            raise RunError(f"checkpoint {source}: {key!r} has shape {tuple(value.shape)}, expected {tuple(leaf.shape)}")
        values.append(value.to(leaf.dtype))
    return pytree.tree_unflatten(values, spec)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the step and its named tensors (``params[...]``, ``opt[...]``, ``rng``)."""

    step: int
    tensors: dict[str, torch.Tensor]
    source: str

    def params(self, like: Any) -> Any:
        """The parameters, as a pytree shaped like ``like`` (e.g. fresh ``model.init()`` output)."""
        return unflatten_named("params", like, self.tensors, self.source)

    def opt_state(self, like: Any) -> Any:
        """The optimizer state, as a pytree shaped like ``like`` (e.g. ``optimizer.init(params)``)."""
        return unflatten_named("opt", like, self.tensors, self.source)


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: RunConfig, first_checkpoint: dict[str, torch.Tensor]) -> RunStore:
        """Create a complete new run directory (config + step-0 checkpoint) atomically.

        The directory is assembled under a temporary name and renamed into place, so a failure
        leaves nothing behind. An existing non-empty directory is refused.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise RunError(f"run directory {str(path)!r} already exists and is not empty; "
                           "choose another --out or resume it with --resume")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.staging-"))
        try:
            store = cls(staging)
            (staging / CHECKPOINTS).mkdir()
            (staging / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            store.save_checkpoint(0, first_checkpoint)
            if path.exists():
                path.rmdir()
            os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    # ---- reading --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """Open an existing run directory, with a clear error if it is not one."""
        store = cls(path)
        if not store.path.is_dir():
            raise RunError(f"run directory {str(store.path)!r} does not exist")
        if not (store.path / CONFIG).is_file():
            raise RunError(f"{str(store.path)!r} is not a run directory: it has no {CONFIG}")
        return store

    def config(self) -> RunConfig:
        """The run's configuration."""
        return RunConfig.load(self.path / CONFIG)

    def checkpoint_steps(self) -> list[int]:
        """Steps of the scheduled checkpoints on disk, ascending."""
        steps = []
        for file in (self.path / CHECKPOINTS).glob("step_*.safetensors"):
            try:
                steps.append(int(file.stem.removeprefix("step_")))
            except ValueError:
                continue
        return sorted(steps)

    def load_checkpoint(self, step: int | None = None) -> Checkpoint:
        """A scheduled checkpoint (``step``), or with ``step=None`` the newest state on disk
        (the resume point if it is newer than every scheduled checkpoint)."""
        if step is None:
            return self._newest()
        file = self.path / CHECKPOINTS / f"step_{step:08d}.safetensors"
        if not file.is_file():
            steps = self.checkpoint_steps()
            raise RunError(f"run {str(self.path)!r} has no checkpoint at step {step}; "
                           f"available: {_summarise(steps)}")
        return self._read(file)

    def _newest(self) -> Checkpoint:
        steps = self.checkpoint_steps()
        candidates = []
        if steps:
            candidates.append(self._read(self.path / CHECKPOINTS / f"step_{steps[-1]:08d}.safetensors"))
        if (self.path / RESUME).is_file():
            candidates.append(self._read(self.path / RESUME))
        if not candidates:
            raise RunError(f"run {str(self.path)!r} has no checkpoint to resume from")
        return max(candidates, key=lambda c: c.step)

    @staticmethod
    def _read(file: Path) -> Checkpoint:
        try:
            tensors = load_file(str(file))
            with open(file, "rb") as handle:
                header_len = int.from_bytes(handle.read(8), "little")
                metadata = json.loads(handle.read(header_len)).get("__metadata__", {})
            step = int(metadata["step"])
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise RunError(f"checkpoint {str(file)!r} is corrupted or not a progsynth checkpoint ({error})") from None
        return Checkpoint(step, tensors, str(file))

    def metrics(self) -> pd.DataFrame:
        """The training metrics as a DataFrame (one row per evaluation)."""
        return _read_jsonl(self.path / METRICS)

    def measures(self) -> pd.DataFrame:
        """The analysis measures as a DataFrame (one row per checkpoint and analysis)."""
        return _read_jsonl(self.path / MEASURES)

    # ---- writing --------------------------------------------------------------------------
    def save_checkpoint(self, step: int, tensors: dict[str, torch.Tensor], resume_point: bool = False) -> None:
        """Atomically write a scheduled checkpoint (or, with ``resume_point``, the resume point)."""
        file = self.path / RESUME if resume_point else self.path / CHECKPOINTS / f"step_{step:08d}.safetensors"
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        _atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata={"step": str(step)}))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl."""
        _append_jsonl(self.path / METRICS, row)

    def append_measures(self, row: dict[str, Any]) -> None:
        """Append one row to measures.jsonl."""
        _append_jsonl(self.path / MEASURES, row)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows newer than ``after_step`` (used on resume, so no step is logged twice)."""
        file = self.path / METRICS
        if not file.is_file():
            return
        kept = [line for line in file.read_text().splitlines() if line and json.loads(line)["step"] <= after_step]
        _atomic_write(file, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))


def _append_jsonl(file: Path, row: dict[str, Any]) -> None:
    with open(file, "a") as handle:
        handle.write(json.dumps(row, default=float) + "\n")
        handle.flush()


def _read_jsonl(file: Path) -> pd.DataFrame:
    if not file.is_file() or file.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_json(file, lines=True)


def _summarise(steps: list[int]) -> str:
    if not steps:
        return "none"
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{len(steps)} steps from {steps[0]} to {steps[-1]} (e.g. {', '.join(map(str, steps[:4]))}, ...)"
