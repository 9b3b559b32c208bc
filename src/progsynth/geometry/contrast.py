"""Same function, different program: two checkpoints of one run that agree on the training set.

By default A is the first checkpoint at which the network fits its training set (train accuracy
≥ ``FITTED``, from the training metrics) and B the last one: typically a memorising network and a
generalising one that answer every training pair alike. ``contrast_checkpoints`` compares them where
they can differ:

- **training set**: each one's loss and accuracy and the fraction of training pairs on which their
  answers (argmax) agree; below ``FITTED`` the result says the two do not compute the same function
  there;
- **held-out behaviour**: each one's held-out loss and accuracy and their agreement on held-out pairs;
- **Fourier structure** (tasks on Z_p): each one's own extracted program (key frequencies, the
  share of its held-out logits a Fourier program explains, verdict, bits) and, on one common set
  of key frequencies (those of the endpoint whose program explains more, as ``geometry.paths``),
  the key energy of the logits and the Gini coefficient of the embedding's Fourier norms;
- **ablations** with those common key frequencies (``interp.extract.ablations``);
- **LLC** at both checkpoints (``slt.run_llc``: estimated and recorded like ``progsynth llc``,
  reusing an estimate with the same sampler settings that is already there);
- **the direction further training pushes each**: one step of the run's own optimizer lens from
  each checkpoint's stored optimizer state, on the whole training set (a run trained on minibatches
  is stepped full-batch, so that no batch order favours either), and the change Δf of the
  network's outputs on every input; the cosine between Δf_A and Δf_B (on all inputs, the training
  inputs and the held-out ones) says whether the same training moves the two functions alike.
  Nothing is written back: the step is measured, not taken.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from progsynth.errors import ConfigError, NotApplicableError, RunError
from progsynth.geometry.checkpoints import CheckpointRef, Opened, open_checkpoint
from progsynth.geometry.paths import common_program
from progsynth.interp.extract import Extraction, ablations, extract
from progsynth.interp.fourier import DTYPE, gini
from progsynth.interp.frequencies import embedding_norms
from progsynth.interp.measures import logit_measures
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore, _summarise, first_step_reaching
from progsynth.slt.llc import SGLDConfig
from progsynth.slt.run_llc import estimate_steps, parse_steps

__all__ = ["ANALYSIS", "FITTED", "Side", "Contrast", "default_steps", "contrast_checkpoints", "load_contrasts"]

ANALYSIS = "contrast"
"""The ``analysis`` value of a contrast's row in measures.jsonl."""
FITTED = 0.99
"""Train accuracy (and train agreement) from which a network counts as fitting its training set."""

ProgressFn = Callable[[int, int, str], None]
"""Called as (parts done, parts in all, what is being done)."""


@dataclass(frozen=True)
class Side:
    """One checkpoint of the contrast."""

    step: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    program: dict[str, Any] | None
    """Its own extracted program: key_frequencies, explained, verdict_kind, description_bits,
    heldout_accuracy, heldout_agreement (None for tasks not on Z_p)."""
    common: dict[str, float] | None
    """key_energy and gini_embedding with the common key frequencies (None off Z_p)."""
    ablations: list[dict[str, Any]] | None
    llc: dict[str, float] | None
    """llc and llc_stderr (None when not estimated)."""
    update_norm: float
    """‖Δf‖ over every input after one optimizer step."""


@dataclass(frozen=True, eq=False)
class Contrast:
    """Everything ``contrast_checkpoints`` found (module docstring)."""

    run: Path
    a: Side
    b: Side
    train_agreement: float
    heldout_agreement: float
    same_on_train: bool
    relabelling: str | None
    key_frequencies: list[int] | None
    key_from: str | None
    update_cosine: dict[str, float]
    """{'all', 'train', 'test'}: cosine between Δf_A and Δf_B on those inputs."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The measures.jsonl row (without ``step``) and the ``--json`` output."""
        return {"analysis": ANALYSIS, "run": str(self.run), "a": asdict(self.a), "b": asdict(self.b),
                "train_agreement": self.train_agreement, "heldout_agreement": self.heldout_agreement,
                "same_on_train": self.same_on_train, "relabelling": self.relabelling,
                "key_frequencies": self.key_frequencies, "key_from": self.key_from,
                "update_cosine": self.update_cosine, "notes": list(self.notes), "seconds": self.seconds}


def default_steps(store: RunStore) -> tuple[int, int]:
    """(A, B): the first checkpoint at or after the first metrics step with train accuracy ≥
    ``FITTED``, and the last checkpoint. RunError when the run never fitted its training set."""
    steps = store.checkpoint_steps()
    if not steps:
        raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints")
    fitted = first_step_reaching(store.metrics(), "train_accuracy", FITTED)
    if fitted is None:
        raise RunError(f"run {str(store.path)!r} never reached train accuracy {FITTED} in its metrics, so there is "
                       f"no memorising checkpoint to default to; give --a STEP (available: {_summarise(steps)})")
    first = next((s for s in steps if s >= fitted), steps[-1])
    return first, steps[-1]


def _answers_agree(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> float:
    return float((x[rows].argmax(1) == y[rows].argmax(1)).double().mean()) if rows.numel() else math.nan


def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    norm = float(u.norm() * v.norm())
    return float((u * v).sum()) / norm if norm > 0 else math.nan


def _update(experiment: Experiment, opened: Opened, logits: torch.Tensor) -> torch.Tensor:
    """Δf on every input after one step of the run's learner from the checkpoint, full batch."""
    state, _ = experiment.learner.step(opened.state, experiment.x_train, experiment.y_train)
    moved = experiment.learner.optimizer.get(state.opt_state, state.params)
    return experiment.logits(moved).to(DTYPE) - logits


def _program_summary(e: Extraction) -> dict[str, Any]:
    held = (lambda v: None if math.isnan(v) else v)
    return {"key_frequencies": e.key_frequencies, "explained": e.fit.explained, "verdict_kind": e.verdict_kind,
            "description_bits": e.description_bits, "heldout_accuracy": held(e.heldout_accuracy),
            "heldout_agreement": held(e.heldout_agreement)}


def contrast_checkpoints(run: str | Path, step_a: int | None = None, step_b: int | None = None,
                         llc: SGLDConfig | None = None, progress: ProgressFn | None = None) -> Contrast:
    """Compare two checkpoints of ``run`` (module docstring) and append the result to its
    measures.jsonl, holding its write lock; ``llc=None`` skips the LLC."""
    started = time.perf_counter()
    store = RunStore.open(run)
    if llc is not None:
        llc.validate()
    with store.writer():
        default_a, default_b = default_steps(store) if step_a is None or step_b is None else (None, None)
        step_a = default_a if step_a is None else step_a
        step_b = default_b if step_b is None else step_b
        parse_steps(f"{step_a},{step_b}", store.checkpoint_steps())  # RunError listing the steps on disk
        if step_a == step_b:
            raise ConfigError(f"--a and --b are both step {step_a}; contrast two different checkpoints")
        parts = 4 + (1 if llc is not None else 0)

        def report(done: int, what: str) -> None:
            if progress:
                progress(done, parts, what)

        experiment = Experiment(store.config())
        opened = [open_checkpoint(experiment, CheckpointRef(store.path, s)) for s in (step_a, step_b)]
        logits = [experiment.logits(o.params).to(DTYPE) for o in opened]
        data = experiment.data
        report(1, "programs")
        notes: list[str] = []
        extractions = common = None
        try:
            extractions = [extract(experiment, o.params, o.ref.step) for o in opened]
        except NotApplicableError as error:
            notes.append(f"Fourier structure and ablations: {error}")
        if extractions is not None:
            common, key_from = common_program(*extractions)
        report(2, "ablations")
        sides_extra = []
        for o, lg in zip(opened, logits):
            if common is None:
                sides_extra.append((None, None))
                continue
            measured = logit_measures(experiment, lg, common.grid, common.key_frequencies)
            mechanism = {"key_energy": measured["key_energy"],
                         "gini_embedding": gini(embedding_norms(experiment, o.params, common.grid))}
            cut = [vars(a) for a in ablations(experiment, o.params, lg, common.grid, common.key_frequencies)]
            sides_extra.append((mechanism, cut))
        report(3, "update directions")
        updates = [_update(experiment, o, lg) for o, lg in zip(opened, logits)]
        cosine = {"all": _cosine(updates[0], updates[1]),
                  "train": _cosine(updates[0][data.train_idx], updates[1][data.train_idx]),
                  "test": _cosine(updates[0][data.test_idx], updates[1][data.test_idx]) if data.test_idx.numel()
                  else math.nan}
        llc_values: list[dict[str, float] | None] = [None, None]
        if llc is not None:
            report(4, "LLC")
            table = estimate_steps(store, [step_a, step_b], llc).table
            for i, step in enumerate((step_a, step_b)):
                row = table[table["step"] == step].iloc[-1]
                llc_values[i] = {"llc": float(row["llc"]), "llc_stderr": float(row["llc_stderr"])}
        sides = []
        for i, (o, (mechanism, cut)) in enumerate(zip(opened, sides_extra)):
            metrics = experiment.evaluate(o.params)
            sides.append(Side(o.ref.step, metrics["train_loss"], metrics["train_accuracy"], metrics["test_loss"],
                              metrics["test_accuracy"],
                              _program_summary(extractions[i]) if extractions is not None else None,
                              mechanism, cut, llc_values[i], float(updates[i].norm())))
        train_agreement = _answers_agree(logits[0], logits[1], data.train_idx)
        same = train_agreement >= FITTED and min(s.train_accuracy for s in sides) >= FITTED
        if not same:
            notes.append(f"the two checkpoints do not compute the same function on the training set: their answers "
                         f"agree on {train_agreement:.1%} of the training pairs and their train accuracies are "
                         f"{sides[0].train_accuracy:.3f} and {sides[1].train_accuracy:.3f}")
        result = Contrast(store.path, sides[0], sides[1], train_agreement,
                          _answers_agree(logits[0], logits[1], data.test_idx), same,
                          common.grid.relabelling.name if common else None,
                          common.key_frequencies if common else None, key_from if common else None, cosine, notes,
                          time.perf_counter() - started)
        store.append_measures({"step": step_b, **result.to_dict()})
        report(parts, "done")
        return result


def load_contrasts(run: str | Path) -> list[dict[str, Any]]:
    """The run's contrast rows, the newest per pair of steps, in the order written."""
    table = RunStore.open(run).measures()
    if table.empty or "analysis" not in table.columns:
        return []
    newest: dict[tuple, dict[str, Any]] = {}
    for row in table[table["analysis"] == ANALYSIS].to_dict("records"):
        pair = (row["a"]["step"], row["b"]["step"])
        newest.pop(pair, None)
        newest[pair] = row
    return list(newest.values())
