"""The run directory: the contract between training and analysis (DESIGN.md).

Layout of a run directory::

    config.json                      the RunConfig (a config file for `progsynth train --config`)
    checkpoints/step_00001234.safetensors
                                     scheduled checkpoints: parameters + optimizer state
    resume.safetensors               the latest resume point (may be newer than any scheduled one)
    metrics.jsonl                    append-only training metrics, one JSON object per line
    measures.jsonl                   append-only analysis measures (interp, slt), one per line
    stop.json                        why training last stopped: {"reason": "budget" | "generalised"
                                     | "interrupted" | "failed", "step", "epoch", "generalised_step",
                                     "message"}; absent while a run is being trained for the first time

Checkpoints are safetensors: tensors plus string metadata, no code, so a shared run can be opened
safely. Every file is written atomically (temporary file, fsync, rename), and a new run directory
appears only once it holds its config and its step-0 checkpoint, so no run is ever half-written.

Trust nothing read back: a checkpoint's ``step`` metadata must be a decimal integer in
[0, ``MAX_STEP``] and, for a scheduled checkpoint, equal the step in its file name; the
checkpoints folder must be a folder; the append-only files must be JSON objects line by line.
Anything else is a one-line RunError naming the file, raised before anything is written.

Writers. One process at a time writes a run directory (``RunStore.writer``): an exclusive
``flock`` on ``.lock`` (holding the writer's PID), refused with the holder's PID while held and
released by the kernel when its process ends, so a lock left by a killed process is never stale.
Readers take no lock.

Torn lines. A crash or a full disk can leave the last line of metrics.jsonl or measures.jsonl
half-written (no newline at the end). Readers skip that line with a ``RunWarning``; the next
append first cuts it off (and warns), so it never joins the next row. Any other bad line is an
error, never silently dropped. Operating-system errors while writing become one-line RunErrors
naming the path (``errors.os_error``); an atomic write that fails leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils import _pytree as pytree

from progsynth.errors import RunError, RunWarning, os_error
from progsynth.runs.config import RunConfig

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
RESUME = "resume.safetensors"
STOP = "stop.json"
STOP_REASONS = ("budget", "generalised", "interrupted", "failed")
"""Why training stopped: the epoch budget was used, the run generalised (``until_generalised``),
Ctrl-C or a stop callback (resumable), or an error (``message``)."""
METRICS = "metrics.jsonl"
MEASURES = "measures.jsonl"
LOCK = ".lock"
MAX_STEP = 10**12
"""Largest step a checkpoint may claim."""
_CHECKPOINT_NAME = re.compile(r"step_(\d{8,})\.safetensors")
_STAGING = ".{name}.staging-{pid}-"


def atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` to a temporary file next to ``path``, fsync, then rename."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise os_error(error, "write", path) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise os_error(error, "write", path) from None
        if isinstance(error, SafetensorError):  # safetensors reports a failed write (e.g. no space) so
            raise os_error(OSError(errno.EIO, str(error)), "write", path) from None
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
        try:
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise RunError(f"run directory {str(path)!r} already exists and is not an empty directory; "
                               "choose another --out or resume it with --resume")
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_staging(path)
            staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=_STAGING.format(name=path.name, pid=os.getpid())))
        except OSError as error:
            raise os_error(error, "create", path) from None
        try:
            store = cls(staging)
            (staging / CHECKPOINTS).mkdir()
            (staging / LOCK).touch()
            (staging / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            store.save_checkpoint(0, first_checkpoint)
            if path.exists():
                path.rmdir()
            os.replace(staging, path)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise RunError(f"run directory {str(path)!r} was just created by another process; "
                               "choose another --out") from None
            if isinstance(error, OSError):
                raise os_error(error, "create", path) from None
            raise
        return cls(path)

    @contextlib.contextmanager
    def writer(self) -> Iterator[RunStore]:
        """Hold the run directory's write lock for the body of the ``with`` (module docstring);
        RunError naming the holder's PID when another process holds it."""
        with hold_lock(self.path, "run directory"):
            yield self

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
        folder = self.path / CHECKPOINTS
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{str(folder)!r} should be the folder of the run's checkpoints but is a file")
        steps = []
        for file in folder.glob("step_*.safetensors"):
            match = _CHECKPOINT_NAME.fullmatch(file.name)
            if match is not None and int(match.group(1)) <= MAX_STEP:
                steps.append(int(match.group(1)))
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
        return self._read(file, expected_step=step)

    def _newest(self) -> Checkpoint:
        steps = self.checkpoint_steps()
        candidates = []
        if steps:
            candidates.append(self._read(self.path / CHECKPOINTS / f"step_{steps[-1]:08d}.safetensors", steps[-1]))
        if (self.path / RESUME).is_file():
            candidates.append(self._read(self.path / RESUME))
        if not candidates:
            raise RunError(f"run {str(self.path)!r} has no checkpoint to resume from")
        return max(candidates, key=lambda c: c.step)

    @staticmethod
    def _read(file: Path, expected_step: int | None = None) -> Checkpoint:
        """Load a checkpoint and check its ``step`` metadata (module docstring)."""
        def bad(why: str) -> RunError:
            return RunError(f"checkpoint {str(file)!r} {why}; it is not a usable progsynth checkpoint "
                            "(restore or delete it)")

        try:
            with open(file, "rb") as handle:
                header_len = int.from_bytes(handle.read(8), "little")
                if not 0 < header_len <= 100_000_000:
                    raise bad(f"has a header length of {header_len} bytes")
                header = json.loads(handle.read(header_len))
            tensors = load_file(str(file))
        except RunError:
            raise
        except (SafetensorError, ValueError, RecursionError) as error:
            raise bad(f"is corrupted ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
        except OSError as error:
            raise os_error(error, "read", file) from None
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not isinstance(metadata.get("step"), str):
            raise bad("has no step in its metadata")
        text = metadata["step"]
        if not text.isascii() or not text.isdigit() or len(text) > 13 or int(text) > MAX_STEP:
            raise bad(f"claims step {text[:30]!r}, expected an integer from 0 to {MAX_STEP}")
        step = int(text)
        if expected_step is not None and step != expected_step:
            raise bad(f"claims step {step} but its name says step {expected_step}")
        return Checkpoint(step, tensors, str(file))

    def stop(self) -> dict[str, Any] | None:
        """Why training last stopped (``stop.json``), or None when it never stopped (being trained,
        or killed). RunError when the file is not a stop record."""
        file = self.path / STOP
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            record = None
        except OSError as error:
            raise os_error(error, "read", file) from None
        if not isinstance(record, dict) or record.get("reason") not in STOP_REASONS:
            raise RunError(f"{str(file)!r} is not a stop record (expected a JSON object whose reason is one of "
                           f"{', '.join(STOP_REASONS)}); delete it and resume the run")
        return record

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
        atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata={"step": str(step)}))

    def record_stop(self, reason: str, step: int, epoch: float, generalised_step: int | None = None,
                    message: str | None = None) -> None:
        """Atomically write ``stop.json`` (see ``stop``)."""
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {STOP_REASONS}, got {reason!r}")
        record = {"reason": reason, "step": step, "epoch": epoch, "generalised_step": generalised_step,
                  "message": message}
        atomic_write(self.path / STOP, lambda tmp: tmp.write_text(json.dumps(record) + "\n"))

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
        rows = read_rows(file)
        for number, row in enumerate(rows, start=1):
            step = row.get("step")
            if isinstance(step, bool) or not isinstance(step, (int, float)):
                raise RunError(f"{str(file)!r} line {number} has no numeric step; the file is damaged")
        kept = [row for row in rows if row["step"] <= after_step]
        if len(kept) == len(rows) and file.read_bytes().endswith(b"\n") or not file.stat().st_size:
            return  # nothing to drop: leave the file as it is
        atomic_write(file, lambda tmp: tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in kept)))


@contextlib.contextmanager
def hold_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.lock`` (holding this process's PID) for the body of
    the ``with``; RunError naming the holder's PID when another process holds it. The kernel
    releases it when the process ends, so a lock left by a killed process is never stale."""
    file = Path(folder) / LOCK
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise os_error(error, "lock", file) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{what} {str(folder)!r} is being written by process {holder} (it holds "
                           f"{LOCK}); wait for it to finish or stop it, then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def first_step_reaching(metrics: pd.DataFrame, column: str, threshold: float, below: bool = False) -> int | None:
    """The first logged step whose ``column`` is ≥ ``threshold`` (when a run fitted its training set
    or generalised), or with ``below`` < ``threshold`` (a loss falling under a level), or None when
    it never did or the metrics lack the column."""
    if metrics.empty or column not in metrics.columns:
        return None
    hits = metrics.loc[metrics[column] < threshold if below else metrics[column] >= threshold, "step"]
    return int(hits.min()) if len(hits) else None


def _append_jsonl(file: Path, row: dict[str, Any]) -> None:
    """Append one row, first cutting off a torn last line (module docstring)."""
    line = json.dumps(row, default=float) + "\n"
    try:
        with open(file, "a+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(max(0, size - 1))
                if handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    keep = data.rfind(b"\n") + 1
                    warnings.warn(RunWarning(f"{file}: cut off a torn last line ({size - keep} bytes) before "
                                             "appending"), stacklevel=3)
                    handle.truncate(keep)
            handle.write(line.encode())
            handle.flush()
    except OSError as error:
        raise os_error(error, "append to", file) from None


def read_rows(file: Path) -> list[dict[str, Any]]:
    """The rows of an append-only JSON-lines file ([] if it does not exist). A torn last line (no
    newline) is skipped with a RunWarning; any other line that is not a JSON object is a RunError."""
    try:
        data = file.read_bytes() if file.is_file() else b""
    except OSError as error:
        raise os_error(error, "read", file) from None
    lines = data.split(b"\n")
    if lines[-1]:
        warnings.warn(RunWarning(f"{file}: skipped a torn last line ({len(lines[-1])} bytes, no newline); "
                                 "the next write cuts it off"), stacklevel=3)
    rows = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            row = None
        if not isinstance(row, dict):
            raise RunError(f"{str(file)!r} line {number} is not a JSON object; the file is damaged (restore it or "
                           "remove that line)")
        rows.append(row)
    return rows


def _read_jsonl(file: Path) -> pd.DataFrame:
    rows = read_rows(file)
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def _remove_stale_staging(path: Path) -> None:
    """Delete staging directories of ``path`` left by processes that no longer run (a kill during
    ``RunStore.create``); a live process's staging directory is left alone."""
    pattern = re.compile(re.escape(f".{path.name}.staging-") + r"(\d+)-")
    for entry in path.parent.glob(f".{glob.escape(path.name)}.staging-*"):
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _summarise(steps: list[int]) -> str:
    if not steps:
        return "none"
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{len(steps)} steps from {steps[0]} to {steps[-1]} (e.g. {', '.join(map(str, steps[:4]))}, ...)"
