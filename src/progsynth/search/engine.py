"""``search_programs``: explicit program search with a simplicity prior, from data to a verdict.

One call validates the data, enumerates the grammar's programs up to ``max_size`` pruned by
observational equivalence on the training inputs (``search.enumerate``), puts the prior 2^−ℓ on
the programs consistent with every training label (``search.posterior``), and, given query
inputs, predicts on them with the MAP program and with the Bayes mixture.

Verdicts: 'found' (some program fits every training label; the MAP is reported), 'no-fit' (none
of size ≤ max_size does: not an error; the best partial fit is reported) and 'stopped' (a guard
stopped the search before max_size; the text says why and what was found up to the size before).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from progsynth.errors import ConfigError
from progsynth.search.enumerate import Enumeration, ProgramRefs, Progress, SizeCount, enumerate_programs
from progsynth.search.grammar import Grammar
from progsynth.search.hashing import row_keys
from progsynth.search.kernels import kernel_for
from progsynth.search.posterior import Posterior, posterior, predictive
from progsynth.tasks.expression import Expr, render

__all__ = ["search_programs", "SearchResult", "TopProgram", "BestFit", "DEFAULT_MAX_CANDIDATES",
           "DEFAULT_MAX_MEMORY_BYTES", "DEFAULT_MAX_CONSISTENT", "TOP_PROGRAMS"]

DEFAULT_MAX_CANDIDATES = 2_000_000_000
"""Default budget of candidate programs evaluated (time grows in proportion)."""
DEFAULT_MAX_MEMORY_BYTES = 4 << 30
"""Default budget of bytes held by the enumeration (stored rows, references, hash set)."""
DEFAULT_MAX_CONSISTENT = 100_000
"""Default number of consistent programs recorded; the rest are counted as dropped."""
TOP_PROGRAMS = 10
"""Programs (or held-out behaviours) listed in a result."""
_QUERY_ELEMENTS = 1 << 22
"""Most query values (programs × query inputs) evaluated at once."""


@dataclass(frozen=True)
class TopProgram:
    """A program of the posterior: with query inputs, the shortest of one held-out behaviour and
    that behaviour's total mass; without, one program and its own mass."""

    text: str
    bits: float
    size: int
    mass: float
    programs: int
    """How many consistent programs share the behaviour (1 without query inputs)."""

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "bits": self.bits, "size": self.size, "mass": self.mass, "programs": self.programs}


@dataclass(frozen=True)
class BestFit:
    """The kept program that gets the most training labels right (ties: fewer bits, then earlier)."""

    program: Expr
    text: str
    bits: float
    size: int
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "bits": self.bits, "size": self.size, "correct": self.correct,
                "total": self.total, "accuracy": self.accuracy}


@dataclass(frozen=True)
class SearchResult:
    """Everything one search found; ``to_dict`` is JSON-ready."""

    grammar: str
    """``Grammar.describe()``."""
    max_size: int
    n_train: int
    map_program: Expr | None
    """The MAP program (shortest consistent code), or None when none fits."""
    map_text: str | None
    map_bits: float | None
    map_size: int | None
    map_mass: float | None
    """Posterior mass of the MAP program itself."""
    top_programs: tuple[TopProgram, ...]
    n_consistent: int
    """Consistent programs recorded (the posterior's support)."""
    consistent_dropped: int
    """Consistent programs found after ``max_consistent`` was reached, not recorded."""
    n_query: int | None
    map_predictions: np.ndarray | None
    mixture_predictions: np.ndarray | None
    map_heldout_accuracy: float | None
    mixture_heldout_accuracy: float | None
    sizes: tuple[SizeCount, ...]
    programs_enumerated: int
    """Candidate programs evaluated on the training inputs, over all sizes."""
    distinct_behaviours: int
    evaluations: int
    """Program-input evaluations: programs_enumerated × n_train."""
    estimated_candidates: float | None
    """The pre-search estimate of programs_enumerated (``search.estimate``), or None."""
    seconds: float
    best_fit: BestFit | None
    stopped_at: int | None
    """The size the search stopped before, or None when it reached max_size."""
    verdict_kind: str
    """'found', 'no-fit' or 'stopped' (module docstring)."""
    verdict: str

    @property
    def consistent_cap_reached(self) -> bool:
        return self.consistent_dropped > 0

    def to_dict(self) -> dict[str, Any]:
        def listed(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {
            "grammar": self.grammar, "max_size": self.max_size, "n_train": self.n_train,
            "map_program": self.map_text, "map_bits": self.map_bits, "map_size": self.map_size,
            "map_mass": self.map_mass, "top_programs": [t.to_dict() for t in self.top_programs],
            "n_consistent": self.n_consistent, "consistent_cap_reached": self.consistent_cap_reached,
            "consistent_dropped": self.consistent_dropped, "n_query": self.n_query,
            "map_predictions": listed(self.map_predictions), "mixture_predictions": listed(self.mixture_predictions),
            "map_heldout_accuracy": self.map_heldout_accuracy,
            "mixture_heldout_accuracy": self.mixture_heldout_accuracy,
            "sizes": [s.to_dict() for s in self.sizes], "programs_enumerated": self.programs_enumerated,
            "distinct_behaviours": self.distinct_behaviours, "evaluations": self.evaluations,
            "estimated_candidates": self.estimated_candidates, "seconds": self.seconds,
            "best_fit": None if self.best_fit is None else self.best_fit.to_dict(),
            "stopped_at": self.stopped_at, "verdict_kind": self.verdict_kind, "verdict": self.verdict,
        }


# ---- validation ---------------------------------------------------------------------------------
def _column(grammar: Grammar, value: Any, what: str) -> np.ndarray:
    """One validated 1-D column of domain values: int64 residues in [0, p), or bools."""
    array = np.asarray(value)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"{what} must be a non-empty 1-D array, got shape {array.shape}")
    if grammar.domain == "zp":
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"{what} must hold integers (residues mod {grammar.p}), got dtype {array.dtype}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= grammar.p:
            bad = low if low < 0 else high
            raise ConfigError(f"{what} has value {bad}, outside [0, {grammar.p}) (p = {grammar.p})")
        return array.astype(np.int64)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer) or int(array.min()) < 0 or int(array.max()) > 1:
            raise ConfigError(f"{what} must hold bools or 0/1 integers, got dtype {array.dtype}"
                              + (f" with values from {array.min()} to {array.max()}"
                                 if np.issubdtype(array.dtype, np.number) else ""))
        array = array.astype(bool)
    return array


def _environment(grammar: Grammar, inputs: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        raise ConfigError(f"{what} must map input names ({', '.join(grammar.variables)}) to 1-D arrays, "
                          f"got {type(inputs).__name__}")
    names = set(grammar.variables)
    missing, extra = sorted(names - set(inputs)), sorted(set(inputs) - names, key=str)
    if missing or extra:
        raise ConfigError(f"{what} must give exactly the grammar's inputs {', '.join(grammar.variables)}: "
                          + "; ".join(([f"missing {', '.join(map(repr, missing))}"] if missing else [])
                                      + ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])))
    env = {name: _column(grammar, inputs[name], f"{what}[{name!r}]") for name in grammar.variables}
    lengths = {name: len(column) for name, column in env.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{what} columns differ in length: "
                          + ", ".join(f"{name}: {n}" for name, n in lengths.items()))
    return env


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what} = {value!r}; expected a positive integer")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ConfigError(f"{what} = {value!r}; expected a positive integer")
    return int(value)


# ---- the search ---------------------------------------------------------------------------------
def search_programs(grammar: Grammar, inputs: Mapping[str, Any], labels: Any, max_size: int,
                    query_inputs: Mapping[str, Any] | None = None, query_labels: Any = None,
                    max_candidates: int = DEFAULT_MAX_CANDIDATES,
                    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
                    max_consistent: int = DEFAULT_MAX_CONSISTENT,
                    progress: Progress | None = None) -> SearchResult:
    """Search ``grammar``'s programs of size ≤ ``max_size`` for those that map ``inputs`` to
    ``labels``, and report the MAP program under the prior 2^−ℓ, the posterior's top programs and,
    with ``query_inputs`` (and ``query_labels``), held-out predictions and accuracies.

    ``inputs`` maps every input name of the grammar ('a', 'b'; or 'x0', ...) to a 1-D array (ints
    in [0, p), or bools); ``labels`` is one such array of the same length. ``progress(size,
    candidates, kept)`` is called as the enumeration goes. A bound whose estimated cost exceeds
    ``max_candidates`` or ``max_memory_bytes`` is refused with a ConfigError before the expensive
    levels start (``search.enumerate``); bad arguments raise a ConfigError naming the value.
    """
    start = time.perf_counter()
    if not isinstance(grammar, Grammar):
        raise ConfigError(f"grammar must be a Grammar (arithmetic_grammar, boolean_grammar), got "
                          f"{type(grammar).__name__}")
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
        raise ConfigError(f"max_size = {max_size!r}; expected an integer ≥ 1")
    max_size = int(max_size)
    max_candidates = _positive_int(max_candidates, "max_candidates")
    max_memory_bytes = _positive_int(max_memory_bytes, "max_memory_bytes")
    max_consistent = _positive_int(max_consistent, "max_consistent")
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be callable or None, got {type(progress).__name__}")
    env = _environment(grammar, inputs, "inputs")
    n_train = len(next(iter(env.values())))
    target = _column(grammar, labels, "labels")
    if len(target) != n_train:
        raise ConfigError(f"labels has {len(target)} entries but the inputs have {n_train}")
    query_env = query_target = None
    if query_inputs is not None:
        query_env = _environment(grammar, query_inputs, "query_inputs")
    if query_labels is not None:
        if query_env is None:
            raise ConfigError("query_labels were given without query_inputs")
        query_target = _column(grammar, query_labels, "query_labels")
        n_query = len(next(iter(query_env.values())))
        if len(query_target) != n_query:
            raise ConfigError(f"query_labels has {len(query_target)} entries but query_inputs have {n_query}")

    kernel = kernel_for(grammar, env)
    found = enumerate_programs(grammar, kernel, kernel.target_row(target), max_size, max_candidates,
                               max_memory_bytes, max_consistent, progress)
    return _result(grammar, found, max_size, query_env, query_target, start)


def _query_chunks(found: Enumeration, kernel: Any, programs: ProgramRefs) -> Iterator[tuple]:
    step = max(1, _QUERY_ELEMENTS // max(kernel.n, 1))
    for first in range(0, len(programs), step):
        rows = found.table.rows(kernel, programs.take(slice(first, first + step)))
        k1, k2 = row_keys(kernel.words(rows))
        yield first, kernel.values(rows), k1, k2


def _result(grammar: Grammar, found: Enumeration, max_size: int, query_env: dict | None,
            query_target: np.ndarray | None, start: float) -> SearchResult:
    consistent = found.consistent
    n_train = found.n_train
    map_program = map_text = map_bits = map_size = map_mass = None
    top: list[TopProgram] = []
    map_pred = mix_pred = None
    map_acc = mix_acc = None
    n_query = None if query_env is None else len(next(iter(query_env.values())))
    if len(consistent):
        post = posterior(consistent.bits, consistent.size)
        i = post.map_index
        map_program = found.table.expr(int(consistent.sym[i]), int(consistent.left[i]), int(consistent.right[i]))
        map_text, map_bits = render(map_program), float(post.bits[i])
        map_size, map_mass = int(consistent.size[i]), float(post.mass[i])
        if query_env is not None:
            qkernel = kernel_for(grammar, query_env)
            pred = predictive(post, _query_chunks(found, qkernel, consistent), grammar.p or 2)
            top = [_top(found, consistent, post, b.representative, b.mass, b.programs)
                   for b in pred.behaviours[:TOP_PROGRAMS]]
            map_pred, mix_pred = _as_domain(grammar, pred.map_values), _as_domain(grammar, pred.mixture_values)
            if query_target is not None:
                truth = query_target.astype(np.int64)
                map_acc = float(np.mean(pred.map_values == truth))
                mix_acc = float(np.mean(pred.mixture_values == truth))
        else:
            top = [_top(found, consistent, post, int(k), float(post.mass[k]), 1)
                   for k in post.order()[:TOP_PROGRAMS]]
    best = None
    if found.best is not None:
        b = found.best
        expr = found.table.expr(int(b.sym[0]), int(b.left[0]), int(b.right[0]))
        best = BestFit(expr, render(expr), float(b.bits[0]), int(b.size[0]), found.best_correct, n_train)
    kind, text = _verdict(grammar, found, max_size, map_text, map_bits, map_size, best, map_acc)
    return SearchResult(
        grammar=grammar.describe(), max_size=max_size, n_train=n_train, map_program=map_program,
        map_text=map_text, map_bits=map_bits, map_size=map_size, map_mass=map_mass, top_programs=tuple(top),
        n_consistent=len(consistent), consistent_dropped=found.consistent_dropped, n_query=n_query,
        map_predictions=map_pred, mixture_predictions=mix_pred, map_heldout_accuracy=map_acc,
        mixture_heldout_accuracy=mix_acc, sizes=tuple(found.counts), programs_enumerated=found.candidates,
        distinct_behaviours=found.kept, evaluations=found.candidates * n_train,
        estimated_candidates=None if found.estimate is None else float(found.estimate.candidates),
        seconds=time.perf_counter() - start, best_fit=best, stopped_at=found.stopped_at,
        verdict_kind=kind, verdict=text)


def _as_domain(grammar: Grammar, values: np.ndarray) -> np.ndarray:
    return values.astype(bool) if grammar.domain == "bits" else values


def _top(found: Enumeration, consistent: ProgramRefs, post: Posterior, k: int, mass: float,
         programs: int) -> TopProgram:
    expr = found.table.expr(int(consistent.sym[k]), int(consistent.left[k]), int(consistent.right[k]))
    return TopProgram(render(expr), float(post.bits[k]), int(consistent.size[k]), mass, programs)


def _verdict(grammar: Grammar, found: Enumeration, max_size: int, map_text: str | None, map_bits: float | None,
             map_size: int | None, best: BestFit | None, map_acc: float | None) -> tuple[str, str]:
    things = "training pairs" if grammar.domain == "zp" and len(grammar.variables) == 2 else "training examples"
    reached = max_size if found.stopped_at is None else found.stopped_at - 1

    def fitted() -> str:
        held = "" if map_acc is None else f", held-out accuracy {map_acc:.3f}"
        return (f"the MAP program is {map_text} ({map_bits:.1f} bits, size {map_size}), one of "
                f"{len(found.consistent)} recorded programs of size ≤ {reached} consistent with all "
                f"{found.n_train} {things}{held}")

    def unfitted() -> str:
        text = f"no program of size ≤ {reached} fits all {found.n_train} {things}"
        if best is not None:
            text += f"; the best fits {best.correct} of them: {best.text} ({best.bits:.1f} bits)"
        return text

    if found.stopped_at is not None:
        so_far = fitted() if map_text is not None else unfitted()
        return "stopped", f"stopped before size {found.stopped_at}: {found.stop_reason}; up to size {reached}, {so_far}"
    if map_text is not None:
        return "found", fitted()
    return "no-fit", unfitted()
