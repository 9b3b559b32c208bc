"""The program search on a task, or on exactly the training split of a run directory.

``grammar_for`` picks the grammar by the task's domain: residues get ``arithmetic_grammar(p)``
(without ``div`` when p is not prime), bits get ``boolean_grammar(n_bits, gates)``. The default
gates are AND, OR, XOR and NOT, except for sparse parity, whose hypothesis class is the XOR of a
subset of the bits: there the default is XOR alone, so the search enumerates subsets (a k-subset
is a program of size 2k − 1), the search Barak et al. compare SGD with.

``search_task`` searches on the task's training split and predicts its test split (the held-out
accuracy of the MAP program and of the Bayes mixture). ``search_run`` does the same for a run
directory on exactly the labels it was trained with (``runs.experiment.run_data``: its split from
``config.json``, with the run's label noise on the training rows, so a search on a random-label run
fits the same labels SGD fitted), and appends one ``analysis: "search"`` row to ``measures.jsonl``
(the other analyses read only their own rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from progsynth.errors import ConfigError
from progsynth.search.engine import (DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_CONSISTENT, DEFAULT_MAX_MEMORY_BYTES,
                                     SearchResult, search_programs)
from progsynth.search.enumerate import Progress
from progsynth.search.grammar import BOOLEAN_GATES, Grammar, arithmetic_grammar, boolean_grammar
from progsynth.tasks.common import Task, TaskData
from progsynth.tasks.modular import is_prime

__all__ = ["ANALYSIS", "DEFAULT_MAX_SIZE", "TaskSearch", "default_gates", "grammar_for", "parse_gates",
           "search_task", "search_run"]

ANALYSIS = "search"
"""The ``analysis`` value of the search's rows in measures.jsonl."""
DEFAULT_MAX_SIZE = 7
"""Default size bound: every program of up to 7 nodes (a·b + a + b over Z_p; a 4-subset XOR)."""


@dataclass(frozen=True)
class TaskSearch:
    """A search on one task's split: the task, its split sizes and the engine's result."""

    task: Task
    grammar: Grammar
    n_train: int
    n_test: int
    result: SearchResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the per-input predictions left out)."""
        out = self.result.to_dict()
        out.pop("map_predictions")
        out.pop("mixture_predictions")
        return {"task": self.task.name, "family": self.task.family, "n_train": self.n_train,
                "n_test": self.n_test, **out}


def default_gates(task: Task) -> tuple[str, ...]:
    """XOR alone for sparse parity, every gate for other Boolean tasks (module docstring)."""
    return ("xor",) if task.family == "parity" else BOOLEAN_GATES


def parse_gates(text: str) -> tuple[str, ...]:
    """'and,xor' → ('and', 'xor'); ConfigError naming an unknown gate and listing the valid ones."""
    gates = tuple(g.strip().lower() for g in text.split(",") if g.strip())
    valid = f"valid gates: {', '.join(BOOLEAN_GATES)}"
    if not gates:
        raise ConfigError(f"--gates {text!r} names no gate; {valid}")
    unknown = [g for g in gates if g not in BOOLEAN_GATES]
    if unknown:
        raise ConfigError(f"--gates {text!r}: unknown gate {unknown[0]!r}; {valid}")
    return gates


def grammar_for(task: Task, gates: Sequence[str] | None = None) -> Grammar:
    """The search grammar of ``task``'s domain (module docstring); ``gates`` only for bits."""
    if task.domain == "residues":
        if gates is not None:
            raise ConfigError(f"gates apply to Boolean tasks; {task.name} is over residues")
        p = task.operand_vocab
        ops = ("add", "sub", "mul", "div") if is_prime(p) else ("add", "sub", "mul")
        return arithmetic_grammar(p, ops=ops)
    if task.domain == "bits":
        return boolean_grammar(task.n_operands, gates=tuple(gates) if gates is not None else default_gates(task))
    raise ConfigError(f"the program search has no grammar for tasks over {task.domain!r}")


def search_task(task: Task, max_size: int = DEFAULT_MAX_SIZE, gates: Sequence[str] | None = None,
                max_candidates: int = DEFAULT_MAX_CANDIDATES, max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
                max_consistent: int = DEFAULT_MAX_CONSISTENT, progress: Progress | None = None,
                data: TaskData | None = None) -> TaskSearch:
    """Search ``task``'s grammar on its training split; predict its test split.

    ``data``: the examples, labels and split to search (default ``task.dataset()``, the true
    labels); ``search_run`` passes a run's data as trained, whose training labels may be noisy.
    """
    grammar = grammar_for(task, gates)
    if data is None:
        data = task.dataset()
    elif not isinstance(data, TaskData):
        raise ConfigError(f"search_task's data must be a TaskData (a task's dataset), got {type(data).__name__}")
    names = task.operand_names()
    train, test = data.train_idx, data.test_idx
    query = data.named_operands(test, names) if len(test) else None
    query_labels = data.labels[test].numpy() if len(test) else None
    result = search_programs(grammar, data.named_operands(train, names), data.labels[train].numpy(), max_size,
                             query, query_labels, max_candidates=max_candidates,
                             max_memory_bytes=max_memory_bytes, max_consistent=max_consistent, progress=progress)
    return TaskSearch(task, grammar, len(train), len(test), result)


def search_run(run: str | Path, max_size: int = DEFAULT_MAX_SIZE, gates: Sequence[str] | None = None,
               progress: Progress | None = None, **limits: int) -> TaskSearch:
    """``search_task`` on a run directory's task, split and training labels as trained (with its
    label noise, ``runs.experiment.run_data``), recorded as one row of its measures.jsonl."""
    from progsynth.runs.experiment import run_data
    from progsynth.runs.store import RunStore

    store = RunStore.open(run)
    config = store.config()
    found = search_task(config.task, max_size, gates, progress=progress, data=run_data(config), **limits)
    summary = found.to_dict()
    with store.writer():
        store.append_measures({"analysis": ANALYSIS, "recorded": time.time(),
                               **{k: summary[k] for k in _RECORDED}})
    return found


_RECORDED = ("grammar", "max_size", "n_train", "n_test", "map_program", "map_bits", "map_size", "map_mass",
             "map_heldout_accuracy", "mixture_heldout_accuracy", "n_consistent", "programs_enumerated",
             "distinct_behaviours", "evaluations", "seconds", "verdict_kind", "verdict")
"""The fields of a search's measures.jsonl row."""
