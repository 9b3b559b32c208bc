"""The training loop: iterate the learner's step, checkpoint on a schedule, log metrics, resume.

There is one training loop, and it trains through ``core.learner`` (the put of the composite
optimizer ; model ; loss ; rate lens). Several seeds train in one process as one vmapped step
(``torch.func.vmap`` over stacked parameters and optimizer states), each seed writing its own run
directory; one seed is the same loop without vmap.

Every run records why training stopped in its ``stop.json`` (``RunStore.record_stop``): the budget
was used, it generalised (``RunConfig.until_generalised``: each seed stops by its own rule and
leaves the vmapped stack), Ctrl-C, or a failure with its message. ``finished`` reads it, so
``resume`` and sweeps leave finished runs alone.

Nothing is lost: scheduled checkpoints plus a resume point at least every ``resume_every_s``
seconds and on Ctrl-C, so an interruption loses at most one resume interval, and
``resume(run_dir)`` continues bit-identically (full-batch training is deterministic on the CPU for
a fixed thread count).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree

from progsynth.core.allocator import keep_freed_memory
from progsynth.core.learner import TrainState
from progsynth.errors import ConfigError, NonFiniteError, RunError, os_error
from progsynth.runs.config import GENERALISED_ACCURACY, RunConfig
from progsynth.runs.experiment import Experiment
from progsynth.runs.schedule import checkpoint_schedule
from progsynth.runs.store import RunStore, flatten_named

SEED_DIR = "seed-{}"


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or interrupted) training run reports."""

    run_dirs: list[Path]
    """One run directory per seed."""
    steps: int
    """Optimizer steps completed."""
    total_steps: int
    """Steps the configuration asks for."""
    final: list[dict[str, float]]
    """The last metrics row of each seed."""
    interrupted: bool
    """True when stopped by Ctrl-C (or a stop callback) before the end: resumable."""
    seconds: float
    """Wall time of this call's training loop."""
    stopped: list[str]
    """Each seed's stop reason (``runs.store.STOP_REASONS``), as its ``stop.json`` records it."""


ProgressFn = Callable[[int, int, list[dict[str, float]]], None]


def parse_seeds(text: str) -> list[int]:
    """'3' -> [3]; '0-7' -> [0..7]; '1,4,9' -> [1, 4, 9]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"seeds must look like '3', '0-7' or '1,4,9', got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def train(
    config: RunConfig,
    out: str | Path,
    seeds: list[int] | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train ``config`` into ``out`` (one seed: ``out`` is the run directory; several seeds:
    ``out/seed-N`` each, trained together through vmap). ``should_stop(step)`` returning True acts
    like Ctrl-C after that step (used by tests and by callers with their own stop signal)."""
    config.validate()
    config.to_dict()  # a config that config.json cannot record fails here, before any directory exists
    seeds = [config.seed] if seeds is None else seeds
    if len(seeds) > 1 and config.batch_size is not None:
        raise ConfigError("training several seeds at once needs full-batch training (batch_size None), "
                          f"got batch_size={config.batch_size}")
    out = Path(out)
    experiment = Experiment(config)  # validates task and model before any directory exists
    dirs = [out] if len(seeds) == 1 else [out / SEED_DIR.format(s) for s in seeds]
    for d in dirs:
        try:
            taken = d.exists() and (not d.is_dir() or any(d.iterdir()))
        except OSError as error:
            raise os_error(error, "create", d) from None
        if taken:
            raise RunError(f"run directory {str(d)!r} already exists and is not empty; "
                           "choose another --out or resume it with --resume")
    states, stores = [], []
    for seed, d in zip(seeds, dirs):
        seeded = config.override(seed=seed)
        state = experiment.learner.init(experiment.init_params(seed))
        rng = _batch_generator(seeded)
        stores.append(RunStore.create(d, seeded, _checkpoint_tensors(state, rng)))
        states.append((state, rng))
    with _writing(stores):
        return _Loop(experiment, config, stores, states, progress, should_stop).run()


def resume(run_dir: str | Path, progress: ProgressFn | None = None,
           should_stop: Callable[[int], bool] | None = None) -> TrainResult:
    """Continue a run (or a multi-seed group directory) from its newest checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {str(run_dir)!r} does not exist")
    if (run_dir / "config.json").is_file():
        dirs = [run_dir]
    else:
        dirs = sorted(run_dir.glob("seed-*"), key=lambda p: int(p.name.removeprefix("seed-")))
        if not dirs:
            raise RunError(f"{str(run_dir)!r} is neither a run directory (no config.json) nor a group of seed-N runs")
    stores = [RunStore.open(d) for d in dirs]
    with _writing(stores):
        return _resume_locked(run_dir, stores, progress, should_stop)


def finished(store: RunStore) -> bool:
    """Whether a run's training ended for good: it generalised under ``until_generalised``, or used
    the whole budget its config.json asks for now (a budget raised by editing config.json, or
    ``until_generalised`` turned off, lets ``resume`` go on)."""
    record = store.stop()
    if record is None:
        return False
    config = store.config()
    if record["reason"] == "generalised":
        return config.until_generalised
    return record["reason"] == "budget" and record["step"] >= config.epochs * Experiment(config).steps_per_epoch


@contextlib.contextmanager
def _writing(stores: list[RunStore]) -> Iterator[None]:
    """Hold every store's write lock (``RunStore.writer``), so a second trainer is refused."""
    with contextlib.ExitStack() as stack:
        for store in stores:
            stack.enter_context(store.writer())
        yield


def _resume_locked(run_dir: Path, stores: list[RunStore], progress: ProgressFn | None,
                   should_stop: Callable[[int], bool] | None) -> TrainResult:
    """``resume`` once the locks are held: read the newest state, drop newer metrics, train on.
    Every seed's newest checkpoint is read (and so checked); seeds whose training already ended for
    good (``finished``) are then left as they are."""
    configs = [s.config() for s in stores]
    experiment = Experiment(configs[0])
    states = []
    for store, seeded in zip(stores, configs):
        checkpoint = store.load_checkpoint()
        fresh = experiment.learner.init(experiment.init_params(seeded.seed))
        params = checkpoint.params(fresh.params)
        state = TrainState(checkpoint.opt_state(fresh.opt_state), params, checkpoint.step)
        rng = _batch_generator(seeded)
        if rng is not None:
            if "rng" not in checkpoint.tensors:
                raise RunError(f"checkpoint {checkpoint.source} holds no minibatch order, but the run's config.json "
                               f"asks for batch_size {seeded.batch_size}; it was trained full batch, so restore "
                               "its config.json (batch_size null)")
            rng.restore(checkpoint.tensors["rng"])
        states.append((state, rng))
    done = [finished(store) for store in stores]
    if all(done):
        final = [{k: float(v) for k, v in s.metrics().iloc[-1].items()} for s in stores]
        return TrainResult([s.path for s in stores], max(s.step for s, _ in states),
                           configs[0].epochs * experiment.steps_per_epoch, final, False, 0.0,
                           [s.stop()["reason"] for s in stores])
    stores = [store for store, d in zip(stores, done) if not d]
    states = [state for state, d in zip(states, done) if not d]
    if len({s.step for s, _ in states}) != 1:
        raise RunError(f"the seeds in {str(run_dir)!r} stopped at different steps "
                       f"({[s.step for s, _ in states]}); resume them one by one")
    for store, (state, _) in zip(stores, states):  # only now, when nothing can fail any more, touch the files
        store.truncate_metrics(state.step)
    return _Loop(experiment, configs[0], stores, states, progress, should_stop).run()


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """For the body of the ``with``, Ctrl-C (SIGINT) only sets a flag that the yielded callable
    reads, so the loop stops between steps: a step, a metrics row or a checkpoint is never cut in
    half, and a second Ctrl-C cannot interrupt the saving of the resume point. Signals reach only
    the main thread; elsewhere the flag stays False and nothing changes."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received.is_set
        return
    previous = signal.signal(signal.SIGINT, lambda *_: received.set())
    try:
        yield received.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


class _BatchOrder:
    """The minibatch order's generator, remembering its state at the start of the current epoch
    (what a checkpoint saves, so a resumed run redraws that epoch's order and skips ahead)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch_start_state = self.generator.get_state()

    def next_epoch(self, n: int) -> torch.Tensor:
        self.epoch_start_state = self.generator.get_state()
        return torch.randperm(n, generator=self.generator)

    def restore(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
        self.epoch_start_state = state


def _batch_generator(config: RunConfig) -> _BatchOrder | None:
    return None if config.batch_size is None else _BatchOrder(config.seed)


def _checkpoint_tensors(state: TrainState, rng: _BatchOrder | None) -> dict[str, torch.Tensor]:
    """Parameters, optimizer state and, for minibatch runs, the batch order's epoch-start state."""
    tensors = {**flatten_named("params", state.params), **flatten_named("opt", state.opt_state)}
    if rng is not None:
        tensors["rng"] = rng.epoch_start_state
    return tensors


def _stack(trees: list[Any]) -> Any:
    leaves = [pytree.tree_flatten(t)[0] for t in trees]
    spec = pytree.tree_flatten(trees[0])[1]
    return pytree.tree_unflatten([torch.stack(group) for group in zip(*leaves)], spec)


def _index(tree: Any, i: int) -> Any:
    return pytree.tree_map(lambda t: t[i], tree)


class _Generalisation:
    """Watches one seed's held-out accuracy for ``until_generalised``: ``since`` is the first step of
    the current streak of evaluations at or above ``GENERALISED_ACCURACY`` (None outside a streak);
    the seed is done at step ≥ (1 + cleanup) · since."""

    def __init__(self, cleanup: float, metrics: Any):
        self.cleanup, self.since = cleanup, None
        for step, accuracy in zip(metrics.get("step", []), metrics.get("test_accuracy", [])):
            self.update(int(step), float(accuracy))

    def update(self, step: int, accuracy: float) -> None:
        if accuracy >= GENERALISED_ACCURACY:
            self.since = step if self.since is None else self.since
        else:
            self.since = None

    def done(self, step: int) -> bool:
        return self.since is not None and step >= (1 + self.cleanup) * self.since


class _Loop:
    """One training loop over a group of seeds sharing a config (one seed: no vmap).

    ``active`` lists the seeds still training (indices into ``stores``): under
    ``until_generalised`` a seed that is done gets its final checkpoint and ``stop.json`` and leaves
    the vmapped stack, so the others go on without computing it."""

    def __init__(self, experiment: Experiment, config: RunConfig, stores: list[RunStore],
                 states: list[tuple[TrainState, _BatchOrder | None]],
                 progress: ProgressFn | None, should_stop: Callable[[int], bool] | None):
        self.experiment, self.config, self.stores = experiment, config, stores
        self.progress, self.should_stop = progress, should_stop
        self.steps_per_epoch = experiment.steps_per_epoch
        self.total = config.epochs * self.steps_per_epoch
        self.schedule = set(checkpoint_schedule(self.total, config.max_checkpoints))
        self.step = states[0][0].step
        self.rngs = [rng for _, rng in states]
        self.active = list(range(len(stores)))
        self.stopped: list[str | None] = [None] * len(stores)
        self.final: list[dict[str, float] | None] = [None] * len(stores)
        self.watches = ([_Generalisation(config.cleanup, store.metrics()) for store in stores]
                        if config.until_generalised else None)
        if len(states) == 1:
            state = states[0][0]
            self.opt_state, self.params = state.opt_state, state.params
            self._step = self._single_step
        else:
            self.opt_state = _stack([s.opt_state for s, _ in states])
            self.params = _stack([s.params for s, _ in states])
            self._vstep = torch.func.vmap(experiment.pure_step, in_dims=(0, 0, None, None))
            self._step = self._vmapped_step
        self.last_rows: list[dict[str, float]] = []

    def _single_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        state, _ = self.experiment.learner.step(TrainState(self.opt_state, self.params, self.step), x, y)
        self.opt_state, self.params = state.opt_state, state.params

    def _vmapped_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        opt_state, params, loss = self._vstep(self.opt_state, self.params, x, y)
        if not bool(torch.isfinite(loss).all()):
            bad = [self.active[i] for i, v in enumerate(loss.tolist()) if not math.isfinite(v)]
            raise NonFiniteError(f"the loss became non-finite at step {self.step} for seed runs "
                                 f"{[str(self.stores[i].path) for i in bad]}")
        self.opt_state, self.params = opt_state, params

    def _seed(self, position: int) -> TrainState:
        """The state of the ``position``-th active seed."""
        if self._step == self._single_step:
            return TrainState(self.opt_state, self.params, self.step)
        return TrainState(_index(self.opt_state, position), _index(self.params, position), self.step)

    def _save(self, resume_point: bool, positions: list[int] | None = None) -> None:
        for position in range(len(self.active)) if positions is None else positions:
            i = self.active[position]
            self.stores[i].save_checkpoint(self.step, _checkpoint_tensors(self._seed(position), self.rngs[i]),
                                           resume_point)

    def _log(self) -> None:
        rows = []
        for position, i in enumerate(self.active):
            seed = self._seed(position)
            used = self.experiment.learner.optimizer.get(seed.opt_state, seed.params)
            row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, **self.experiment.evaluate(used)}
            self.stores[i].append_metrics(row)
            if self.watches is not None:
                self.watches[i].update(self.step, row["test_accuracy"])
            rows.append(row)
            self.final[i] = row
        self.last_rows = rows

    def _record_stop(self, i: int, reason: str, message: str | None = None) -> None:
        watch = self.watches[i] if self.watches is not None else None
        self.stores[i].record_stop(reason, self.step, self.step / self.steps_per_epoch,
                                   watch.since if watch is not None else None, message)
        self.stopped[i] = reason

    def _retire_generalised(self) -> None:
        """Under ``until_generalised``: give each seed that is done its final checkpoint and
        ``stop.json``, and drop it from the stack."""
        done = [position for position, i in enumerate(self.active) if self.watches[i].done(self.step)]
        if not done:
            return
        if self.step not in self.schedule:
            self._save(resume_point=False, positions=done)
        for position in done:
            self._record_stop(self.active[position], "generalised")
        keep = [position for position in range(len(self.active)) if position not in done]
        if keep and self._step == self._vmapped_step:
            index = torch.tensor(keep)
            self.opt_state = pytree.tree_map(lambda t: t.index_select(0, index), self.opt_state)
            self.params = pytree.tree_map(lambda t: t.index_select(0, index), self.params)
        self.active = [self.active[position] for position in keep]
        self.last_rows = [self.last_rows[position] for position in keep]

    def _batches(self) -> Any:
        experiment, rng = self.experiment, self.rngs[0]
        if rng is None:
            while True:
                yield experiment.x_train, experiment.y_train
        while True:
            order = rng.next_epoch(experiment.n_train)
            for start in range(0, experiment.n_train, self.config.batch_size):
                index = order[start:start + self.config.batch_size]
                yield experiment.x_train[index], experiment.y_train[index]

    def run(self) -> TrainResult:
        keep_freed_memory()  # functional steps reuse freed blocks instead of page-faulting (opt-in, core.allocator)
        started = time.monotonic()
        try:
            interrupted = self._train()
        except NonFiniteError as error:
            for i in self.active:
                self._record_stop(i, "failed", str(error))
            raise
        for i in self.active:
            self._record_stop(i, "interrupted" if interrupted else "budget")
        final = [row if row is not None else {} for row in self.final]
        return TrainResult([s.path for s in self.stores], self.step, self.total, final, interrupted,
                           time.monotonic() - started, [reason or "" for reason in self.stopped])

    def _train(self) -> bool:
        """The loop itself; True when interrupted (resumable)."""
        last_resume_save = time.monotonic()
        interrupted = False
        logged = self.stores[0].metrics()
        if logged.empty:
            self._log()
        else:
            for i, store in enumerate(self.stores):  # e.g. resuming a finished run: nothing to add
                self.final[i] = {k: float(v) for k, v in store.metrics().iloc[-1].items()}
            self.last_rows = [row for row in self.final if row is not None]
            if int(logged["step"].iloc[-1]) != self.step:
                self.last_rows = []
        if self.watches is not None:
            self._retire_generalised()
        batches = self._batches()
        skip = self.step % self.steps_per_epoch  # minibatch position within the epoch on resume
        for _ in range(skip):
            next(batches)
        with _deferred_interrupts() as interrupt_requested:
            try:
                while self.step < self.total and self.active:
                    x, y = next(batches)
                    self._step(x, y)
                    self.step += 1
                    if self.step % self.config.metrics_every == 0 or self.step == self.total:
                        self._log()
                        if self.progress:
                            self.progress(self.step, self.total, self.last_rows)
                        if self.watches is not None:
                            self._retire_generalised()
                            if not self.active:
                                break
                    if self.step in self.schedule:
                        self._save(resume_point=False)
                    if time.monotonic() - last_resume_save > self.config.resume_every_s:
                        self._save(resume_point=True)
                        last_resume_save = time.monotonic()
                    stop = interrupt_requested() or (self.should_stop is not None and self.should_stop(self.step))
                    if stop and self.step < self.total:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:  # Ctrl-C (the flag) or a KeyboardInterrupt raised by a callback
                interrupted = True
                self._save(resume_point=True)
            if self.active and not interrupted and (not self.last_rows or self.last_rows[0]["step"] != self.step):
                self._log()
        return interrupted
