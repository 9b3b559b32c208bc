"""Sweeps: a grid of run configurations trained on Ray, locally by default or on a cluster.

A **spec** (``SweepSpec``) is a base config, a grid (field → values, crossed), optional explicit
points (each a dict of overrides, crossed with the grid) and the seeds. Every field is a dotted
config name as ``RunConfig.override`` takes it (``optim.lr``, ``task.train_fraction``,
``model.init``, ``until_generalised``, ...); every field and value is checked before anything
starts. A spec file is TOML or JSON::

    preset = "quick"              # or: config = "runs/x/config.json"
    seeds = "0-2"                 # or [0, 1, 2]
    [set]                         # fixed overrides of the base
    until_generalised = true
    [grid]
    "optim.weight_decay" = [0.3, 1.0]
    "task.train_fraction" = [0.3, 0.5]
    # [[points]]                  # optional: explicit points, crossed with the grid
    # "model.init" = "tl"

The **sweep directory** (the contract the sweep report reads)::

    SWEEP/sweep.json              the resolved spec (base as a full config), written once
    SWEEP/.lock                   held by the sweep's driver: a second driver is refused
    SWEEP/<point>/point.json      {"name", "values"}: the point's overrides
    SWEEP/<point>/seed-N/         a normal run directory per seed (stop.json says why it stopped)
    SWEEP/<point>/failed.json     {"message", "seeds"} when the point failed (the others go on)

A point is named by its values, ``field=value`` joined by ``,`` (characters other than letters,
digits and ``._=+-,`` become ``_``, and then a short hash keeps names apart).

**Execution.** One Ray task per point trains its seeds together through vmap (``runs.train``),
then runs the analyses asked for (``analyze``: ``interp.measures.measure_run``; ``llc``: λ̂ at the
demo's eight log-spaced checkpoints with its short-chain settings, ``demo.DEMO_LLC``). With no
address (and no ``RAY_ADDRESS``) ``ray.init`` starts a local cluster of ``workers ×
cpus_per_task`` CPUs and stops it at the end; with one it joins that cluster (every node needs
progsynth installed). Nothing is lost: a point's task resumes what its runs left (finished runs are
skipped, a failed point is retried), Ray re-runs a task whose worker died (``max_retries``), which
then resumes from the run's last resume point, and Ctrl-C cancels the tasks, whose runs save a
resume point, so running the same sweep again continues.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import threading
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

from progsynth.errors import ConfigError, NotApplicableError, ProgsynthError, RunError, os_error
from progsynth.runs.config import RunConfig, preset, read_text
from progsynth.runs.store import RunStore, atomic_write, hold_lock
from progsynth.runs.train import SEED_DIR, finished, parse_seeds
from progsynth.tasks import task_to_dict

SPEC = "sweep.json"
POINT = "point.json"
FAILED = "failed.json"
SPEC_VERSION = 1
ADDRESS_TIMEOUT_S = 10.0
"""How long a cluster address may take to accept a connection before the sweep refuses it."""

Scalar = str | int | float | bool | None
ProgressFn = Callable[[int, int, str], None]
"""``progress(runs_done, runs_total, detail)``."""


def config_fields(config: RunConfig) -> list[str]:
    """Every dotted field a sweep may set on ``config``: top-level scalars, ``model.*``,
    ``optim.*`` and the task family's fields as ``task.*`` (``seed`` is the sweep's ``seeds``)."""
    top = [f.name for f in fields(config) if f.name not in ("task", "model", "optim", "seed")]
    model = [f"model.{f.name}" for f in fields(config.model)]
    optim = [f"optim.{f.name}" for f in fields(config.optim)]
    return sorted(top + model + optim + [f"task.{name}" for name in task_to_dict(config.task)])


def _check_field(base: RunConfig, name: Any, value: Any, where: str) -> RunConfig:
    """``base`` with ``name = value``, or a one-line ConfigError naming it (and, for an unknown
    field, listing the valid ones)."""
    valid = config_fields(base)
    if name == "seed":
        raise ConfigError(f"{where}: sweep the model seed with seeds (--seeds), not the field 'seed'")
    if name not in valid:
        raise ConfigError(f"{where}: unknown config field {name!r}; valid fields: {', '.join(valid)}")
    if not isinstance(value, Scalar.__args__):  # type: ignore[attr-defined]
        raise ConfigError(f"{where}: {name} must be text, a number, true/false or null, got {value!r}")
    try:
        return base.override(**{name: value})
    except ConfigError as error:
        raise ConfigError(f"{where}: {name}={value!r}: {error}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {name}={value!r} is not valid ({error})") from None


def point_name(values: dict[str, Scalar]) -> str:
    """The directory name of a point (module docstring)."""
    if not values:
        return "base"
    text = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._=+,-]", "_", text)
    if safe != text or len(safe) > 150:
        safe = safe[:150] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return safe


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its name, its overrides, and the config they give."""

    name: str
    values: dict[str, Scalar]
    config: RunConfig


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains (module docstring)."""

    base: RunConfig
    grid: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)
    """Field → values; the grid is their product, in this order."""
    points: tuple[dict[str, Scalar], ...] = ({},)
    """Explicit points (overrides), each crossed with the grid; ``({},)``: the grid alone."""
    seeds: tuple[int, ...] = (0,)
    """Model seeds, trained together through vmap at each point."""

    def expand(self) -> list[SweepPoint]:
        """Every point, validated (ConfigError naming the first bad field or value)."""
        if not isinstance(self.grid, dict) or not isinstance(self.points, tuple):
            raise ConfigError("a sweep's grid must be a mapping of field → list of values, and points a list")
        for name, values in self.grid.items():
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"grid field {name!r} needs a non-empty list of values, got {values!r}")
            for value in values:
                _check_field(self.base, name, value, "grid")
        combos = list(itertools.product(*self.grid.values())) if self.grid else [()]
        result, names = [], {}
        for extra in self.points:
            if not isinstance(extra, dict):
                raise ConfigError(f"each of a sweep's points must be a mapping of field → value, got {extra!r}")
            overlap = sorted(set(extra) & set(self.grid))
            if overlap:
                raise ConfigError(f"points set {', '.join(overlap)}, which the grid sweeps too; set each field in one place")
            for combo in combos:
                values = {**extra, **dict(zip(self.grid, combo))}
                config = self.base
                for name, value in values.items():
                    config = _check_field(config, name, value, "point" if name in extra else "grid")
                name = point_name(values)
                if name in names:
                    raise ConfigError(f"two points would share the directory {name!r}: {names[name]} and {values}")
                names[name] = values
                result.append(SweepPoint(name, values, config))
        return result

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as ``sweep.json`` holds it."""
        return {"version": SPEC_VERSION, "base": self.base.to_dict(), "grid": {k: list(v) for k, v in self.grid.items()},
                "points": [dict(p) for p in self.points], "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "the sweep spec") -> SweepSpec:
        """A spec from a file's data: ``base`` (a full config) or ``preset`` / ``config`` (a
        config file's path), plus ``set``, ``grid``, ``points`` and ``seeds``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a mapping (a JSON object or TOML table), got {type(data).__name__}")
        known = {"version", "base", "preset", "config", "set", "grid", "points", "seeds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(sorted(known))}")
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise ConfigError(f"{source} has version {data['version']!r}; this progsynth reads version {SPEC_VERSION}")
        given = [k for k in ("base", "preset", "config") if k in data]
        if len(given) > 1:
            raise ConfigError(f"{source}: give one of base, preset and config, not {' and '.join(given)}")
        if "base" in data:
            base = RunConfig.from_dict(data["base"])
        elif "config" in data:
            base = RunConfig.load(data["config"])
        else:
            base = preset(data.get("preset", "quick"))
        settings = data.get("set", {})
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: set must be a mapping of field → value, got {settings!r}")
        for name, value in settings.items():
            base = _check_field(base, name, value, "set")
        grid = data.get("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{source}: grid must be a mapping of field → list of values, got {grid!r}")
        grid = {k: tuple(v) if isinstance(v, list) else v for k, v in grid.items()}
        points = data.get("points", [{}])
        if not isinstance(points, list):
            raise ConfigError(f"{source}: points must be a list of mappings, got {points!r}")
        seeds = data.get("seeds", [base.seed])
        seeds = parse_seeds(seeds) if isinstance(seeds, str) else seeds
        if (not isinstance(seeds, list) or not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0
                                                            for s in seeds) or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"{source}: seeds must be distinct non-negative integers like [0, 1, 2] or '0-2', got {seeds!r}")
        spec = cls(base, grid, tuple(points or [{}]), tuple(seeds))
        spec.expand()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        """Read a TOML (``.toml``) or JSON spec file."""
        path = Path(path)
        text = read_text(path, "sweep spec")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            kind = "TOML" if path.suffix == ".toml" else "JSON"
            raise ConfigError(f"sweep spec {str(path)!r} is not valid {kind}: {error}") from None
        return cls.from_dict(data, f"sweep spec {str(path)!r}")


def parse_grid_flag(text: str) -> tuple[str, tuple[Scalar, ...]]:
    """``"optim.lr=1e-3,3e-3"`` → ("optim.lr", (0.001, 0.003)); values read as JSON scalars
    (numbers, true/false, null) or else as text."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ConfigError(f"--grid must look like FIELD=V1,V2,..., got {text!r}")
    return name.strip(), tuple(_scalar(v.strip()) for v in values.split(","))


def parse_set_flag(text: str) -> tuple[str, Scalar]:
    """``"epochs=3000"`` → ("epochs", 3000), the value read as by ``parse_grid_flag`` (one value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ConfigError(f"--set must look like FIELD=VALUE, got {text!r}")
    return name.strip(), _scalar(value.strip())


def _scalar(text: str) -> Scalar:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, Scalar.__args__) else text  # type: ignore[attr-defined]


# ---- the sweep directory -------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: Path, what: str) -> Any:
    """JSON from ``path``; RunError naming it (as ``what``) when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise RunError(f"{str(path)!r} is not a valid {what} (not JSON: {error})") from None
    except OSError as error:
        raise os_error(error, "read", path) from None


def load_sweep(directory: str | Path) -> tuple[SweepSpec, list[SweepPoint]]:
    """The spec a sweep directory holds and its points (RunError if it is not a sweep directory)."""
    directory = Path(directory)
    if not (directory / SPEC).is_file():
        raise RunError(f"{str(directory)!r} is not a sweep directory: it has no {SPEC}")
    spec = SweepSpec.from_dict(read_json(directory / SPEC, "sweep spec"), f"{str(directory / SPEC)!r}")
    return spec, spec.expand()


def _different(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]


def _check_directory(directory: Path, spec: SweepSpec) -> None:
    """RunError unless ``directory`` is new, empty, or a sweep directory holding this very spec."""
    if (directory / SPEC).is_file():
        saved, wanted = read_json(directory / SPEC, "sweep spec"), json.loads(json.dumps(spec.to_dict()))
        if saved != wanted:
            keys = _different(saved, wanted) if isinstance(saved, dict) else ["everything"]
            raise RunError(f"sweep directory {str(directory)!r} holds a different sweep (its {', '.join(keys)} "
                           "differ); give a new directory to start this sweep, or delete that one to replace it")
        return
    try:
        taken = directory.exists() and (not directory.is_dir() or any(directory.iterdir()))
    except OSError as error:
        raise os_error(error, "read", directory) from None
    if taken:
        raise RunError(f"{str(directory)!r} exists and is not a sweep directory (no {SPEC}); give a new or empty directory")


def _prepare(directory: Path, spec: SweepSpec, points: list[SweepPoint]) -> None:
    """Create the sweep directory with its spec and every point's ``point.json`` (what is missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / SPEC).is_file():
            _write_json(directory / SPEC, spec.to_dict())
        for point in points:
            folder = directory / point.name
            if not (folder / POINT).is_file():
                folder.mkdir(exist_ok=True)
                _write_json(folder / POINT, {"name": point.name, "values": point.values})
    except OSError as error:
        raise os_error(error, "create", directory) from None


def _seed_dir(point_dir: Path, seed: int) -> Path:
    return point_dir / SEED_DIR.format(seed)


def _point_done(point_dir: Path, seeds: tuple[int, ...]) -> bool:
    """Every seed's run finished and the point has not failed."""
    if (point_dir / FAILED).exists():
        return False
    for seed in seeds:
        run = _seed_dir(point_dir, seed)
        if not (run / "config.json").is_file() or not finished(RunStore(run)):
            return False
    return True


# ---- one point (runs inside a Ray task) -------------------------------------------------------
def run_point(point_dir: str, config: dict[str, Any], seeds: list[int], analyze: bool = False,
              llc: bool = False, threads: int = 1) -> dict[str, Any]:
    """Train (or resume) one point's seeds and run the analyses asked for. A ProgsynthError (a
    non-finite loss, a config the task refuses) is written to ``failed.json`` and returned as
    status "failed"; Ctrl-C (Ray's cancel) leaves resumable runs and returns "interrupted"."""
    import torch

    from progsynth.runs.train import resume, train

    torch.set_num_threads(threads)
    folder, started = Path(point_dir), time.monotonic()
    result: dict[str, Any] = {"point": folder.name, "seeds": list(seeds), "stopped": [], "message": None}
    try:
        (folder / FAILED).unlink(missing_ok=True)
        run_config = RunConfig.from_dict(config)
        missing = [s for s in seeds if not (_seed_dir(folder, s) / "config.json").is_file()]
        interrupted = False
        if missing:
            out = _seed_dir(folder, missing[0]) if len(missing) == 1 else folder
            interrupted |= train(run_config, out, seeds=missing).interrupted
        stores = [RunStore(_seed_dir(folder, s)) for s in seeds]
        waiting = [store for store in stores if not finished(store)]
        steps = {store.load_checkpoint().step for store in waiting}
        if waiting and not interrupted:
            groups = [folder] if len(steps) == 1 and len(waiting) == len(stores) else [s.path for s in waiting]
            for group in groups:
                interrupted |= resume(group).interrupted
        result["stopped"] = [(store.stop() or {}).get("reason", "") for store in stores]
        if not interrupted:
            result["message"] = "; ".join(_analyse(stores, analyze, llc)) or None
        result["status"] = "interrupted" if interrupted else "finished"
    except KeyboardInterrupt:
        result["status"] = "interrupted"
    except ProgsynthError as error:
        result.update(status="failed", message=str(error))
        _write_json(folder / FAILED, {"message": str(error), "seeds": list(seeds)})
    result["seconds"] = time.monotonic() - started
    return result


def _analyse(stores: list[RunStore], analyze: bool, llc: bool) -> list[str]:
    """Run the analyses asked for on every run; what does not apply to the task (``analyze`` reads
    Fourier programs over Z_p only) is skipped and returned as notes, not a failure."""
    notes = []
    if analyze:
        from progsynth.interp.measures import measure_run

        for store in stores:
            try:
                measure_run(store.path)
            except NotApplicableError as error:
                notes.append(f"analyze skipped: {error}")
                break
    if llc:
        from progsynth.demo import DEMO_LLC, DEMO_LLC_CHECKPOINTS, log_spaced
        from progsynth.slt.run_llc import estimate_run_llc

        for store in stores:
            estimate_run_llc(store.path, log_spaced(store.checkpoint_steps(), DEMO_LLC_CHECKPOINTS), DEMO_LLC)
    return notes


# ---- the driver ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (not what it trains: re-running with other options continues it)."""

    address: str | None = None
    """A Ray cluster's address (HOST:PORT or ray://HOST:PORT); None: ``RAY_ADDRESS`` if set,
    else a local cluster started for this sweep."""
    workers: int | None = None
    """Points trained at once; None: the local cluster's CPUs (os.cpu_count) / cpus_per_task,
    or the cluster's CPUs / cpus_per_task."""
    cpus_per_task: int = 1
    """CPUs (and torch threads) per point's task."""
    analyze: bool = False
    """Run ``progsynth analyze``'s measures on every run after training."""
    llc: bool = False
    """Estimate λ̂ at eight log-spaced checkpoints of every run (the demo's settings)."""
    max_retries: int = 3
    """Times Ray re-runs a point whose worker process died (it resumes its runs)."""

    def validate(self) -> None:
        for name in ("cpus_per_task", "max_retries") + (("workers",) if self.workers is not None else ()):
            value = getattr(self, name)
            low = 0 if name == "max_retries" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 4096:
                raise ConfigError(f"{name.replace('_', '-')} must be an integer from {low} to 4096, got {value!r}")


@dataclass
class SweepResult:
    """What a sweep call did: one entry per point (``run_point``'s result, or status "skipped"
    for a point whose runs had all finished before)."""

    directory: Path
    points: list[dict[str, Any]]
    seconds: float
    address: str

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for point in self.points:
            counts[point["status"]] = counts.get(point["status"], 0) + 1
        return {"sweep": str(self.directory), "address": self.address, "seconds": round(self.seconds, 3),
                "points": len(self.points),
                "runs": sum(len(p["seeds"]) for p in self.points), "counts": counts,
                "failed": [{"point": p["point"], "message": p["message"]} for p in self.points if p["status"] == "failed"],
                "results": self.points}


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """ConfigError unless ``address`` (HOST:PORT or ray://HOST:PORT) accepts a TCP connection
    within ``timeout`` seconds, so a dead address fails in seconds, not after Ray's retries."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]\s]+?)\]?:(\d{1,5})", address.strip())
    if not match:
        raise ConfigError(f"Ray address must look like HOST:PORT or ray://HOST:PORT, got {address!r}")
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise RunError(f"no Ray cluster answers at {address!r} ({error.strerror or error}); start one with "
                       "'ray start --head' there, or leave out --address to run on this machine") from None


def run_sweep(spec: SweepSpec, directory: str | Path, options: SweepOptions = SweepOptions(),
              progress: ProgressFn | None = None) -> SweepResult:
    """Run every point of ``spec`` not finished yet into ``directory`` on Ray (module docstring).
    Everything is checked (spec, options, address, an existing directory's spec) and Ray started
    before the directory is created or changed."""
    options.validate()
    points = spec.expand()
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    directory = Path(directory)
    _check_directory(directory, spec)
    started = time.monotonic()
    seeds = spec.seeds
    results: list[dict[str, Any]] = []
    todo = []
    for point in points:
        if _point_done(directory / point.name, seeds) and not (options.analyze or options.llc):
            results.append({"point": point.name, "seeds": list(seeds), "status": "skipped", "message": None,
                            "stopped": [RunStore(_seed_dir(directory / point.name, s)).stop()["reason"] for s in seeds],
                            "seconds": 0.0})
        else:
            todo.append(point)
    if progress:
        progress(len(results) * len(seeds), len(points) * len(seeds), f"{len(results)} points already done")
    if not todo:
        return SweepResult(directory, results, time.monotonic() - started, "none needed")
    with _ray(address, options) as ray:
        _prepare(directory, spec, points)
        with hold_lock(directory, "sweep directory"):
            with _sigterm_as_interrupt():
                results += _drive(ray, directory, todo, seeds, options, len(results) * len(seeds),
                                  len(points) * len(seeds), progress)
    return SweepResult(directory, results, time.monotonic() - started, address or "local")


@contextlib.contextmanager
def _ray(address: str | None, options: SweepOptions) -> Iterator[Any]:
    """Ray for the body of the ``with``: joined at ``address``, or a local cluster started here
    (and stopped at the end); an address that does not hold a Ray cluster is a RunError."""
    import ray

    if ray.is_initialized():  # the caller's own Ray session (e.g. a notebook): use it as it is
        yield ray
        return
    local_cpus = None if address else (options.workers or os.cpu_count() or 1) * options.cpus_per_task
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        with _quiet_stderr():  # Ray's start-up notes and connection retries, written by its C++ core
            ray.init(address=address, num_cpus=local_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"at {address!r}" if address else "on this machine"
        raise RunError(f"could not start or join a Ray cluster {where}: {str(error).strip().splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """For the body of the ``with``, SIGTERM (a batch scheduler's or ``kill``'s stop) acts as
    Ctrl-C: the sweep cancels its tasks and its runs save a resume point. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the body of the ``with`` (C++ logs included)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _drive(ray: Any, directory: Path, todo: list[SweepPoint], seeds: tuple[int, ...], options: SweepOptions,
           done_runs: int, total_runs: int, progress: ProgressFn | None) -> list[dict[str, Any]]:
    """Submit one task per point, at most ``workers`` at once, and collect their results."""
    results: list[dict[str, Any]] = []
    workers = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // options.cpus_per_task)
    task = ray.remote(run_point).options(num_cpus=options.cpus_per_task, max_retries=options.max_retries,
                                         retry_exceptions=False)
    pending: dict[Any, SweepPoint] = {}
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                point = queue.pop(0)
                ref = task.remote(str(directory / point.name), point.config.to_dict(), list(seeds),
                                  options.analyze, options.llc, options.cpus_per_task)
                pending[ref] = point
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                point = pending.pop(ref)
                results.append(_collect(ray, ref, point, seeds))
                done_runs += len(seeds)
                if progress:
                    progress(done_runs, total_runs, f"{point.name}: {results[-1]['status']}")
    except KeyboardInterrupt:
        for ref in pending:  # the runs save a resume point; running the sweep again continues them
            ray.cancel(ref)
        for ref, point in pending.items():
            _collect(ray, ref, point, seeds, timeout=30)
        raise
    return results


def _collect(ray: Any, ref: Any, point: SweepPoint, seeds: tuple[int, ...], timeout: float | None = None) -> dict[str, Any]:
    """A task's result; a task that Ray gave up on (its worker died more than ``max_retries``
    times, or it was cancelled) becomes a failed or interrupted entry, so the other points go on."""
    try:
        return ray.get(ref, timeout=timeout)
    except (ray.exceptions.TaskCancelledError, ray.exceptions.GetTimeoutError):
        return {"point": point.name, "seeds": list(seeds), "status": "interrupted", "stopped": [],
                "message": None, "seconds": math.nan}
    except ray.exceptions.RayError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return {"point": point.name, "seeds": list(seeds), "status": "failed", "stopped": [],
                "message": f"the point's task failed on Ray: {message}", "seconds": math.nan}
