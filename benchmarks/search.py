"""Speed of the explicit program search (``progsynth.search``), with a naive reference measured in
the same run.

- ``evals_per_second``: program-input evaluations per second of the vectorised enumeration
  (``SearchResult.evaluations`` / seconds of ``search_programs``) on ``arithmetic_grammar(113)``
  (a, b, 1, 2, x², x³, + − × ÷), 20 random training pairs with random labels (so nothing fits
  and every level up to the bound runs in full; a target that fits costs the same, as the
  enumeration does not stop at the first fit), max_size 10: about 7.7 million candidate programs,
  large enough that per-call overhead is negligible. Best of 3. The time counts everything a
  caller waits for: evaluation, hashing and pruning, the consistency check and the best fit.
- ``naive_evals_per_second``: the reference, every expression tree of the same grammar up to size
  5 (no pruning) run one tree at a time with ``expression.evaluate`` on the same 20 pairs.
- ``seconds_by_target``: seconds of one ``search_programs`` call that finds each target over
  Z_113 from 20 random training pairs, with max_size the target's own size, the smallest bound
  that contains it (a + b, a − b, a · b: 3; a² + b²: 5). Best of 3; each call is checked to
  return the target's size as the MAP.

Threads: numpy's elementwise operations, which do all of the search's work, run on one thread
whatever the thread-pool settings (those govern BLAS, which the search does not call). Both 1 and
2 threads (``threadpoolctl``) are measured and printed to show this; the headline is 1 thread.

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import json
import time
from itertools import product

import numpy as np
from threadpoolctl import threadpool_limits

from progsynth.search import arithmetic_grammar, search_programs
from progsynth.search.grammar import Grammar
from progsynth.tasks.expression import Expr, Op, Pow, evaluate, parse_arithmetic, size

P = 113
N_TRAIN = 20
EVAL_MAX_SIZE = 10
ROUNDS = 3
HEADLINE_THREADS = 1
"""Thread-pool limit of the headline ``evals_per_second`` (module docstring)."""
TARGETS = {"add": "a + b", "sub": "a - b", "mul": "a * b", "x2+y2": "a^2 + b^2"}


def _pairs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, P, n), "b": rng.integers(0, P, n)}


def bench_enumeration(threads: int) -> dict:
    """Best-of-``ROUNDS`` evaluations per second of a full enumeration to ``EVAL_MAX_SIZE``."""
    grammar, train = arithmetic_grammar(P), _pairs(N_TRAIN, seed=0)
    labels = np.random.default_rng(1).integers(0, P, N_TRAIN)
    best = None
    with threadpool_limits(limits=threads):
        for _ in range(ROUNDS):
            start = time.perf_counter()
            result = search_programs(grammar, train, labels, EVAL_MAX_SIZE)
            seconds = time.perf_counter() - start
            if best is None or seconds < best[0]:
                best = (seconds, result)
    seconds, result = best
    return {"seconds": seconds, "candidates": result.programs_enumerated, "evaluations": result.evaluations,
            "kept": result.distinct_behaviours, "evals_per_second": result.evaluations / seconds,
            "verdict_kind": result.verdict_kind}


def _all_trees(grammar: Grammar, max_size: int) -> list[Expr]:
    trees: list[list[Expr]] = [list(grammar.terminals)]
    for n in range(2, max_size + 1):
        level: list[Expr] = [Pow(c, int(u[3:])) for u in grammar.unary for c in trees[n - 2]]
        for name in grammar.binary:
            for i in range(1, n - 1):
                level += [Op(name, (x, y)) for x, y in product(trees[i - 1], trees[n - 2 - i])]
        trees.append(level)
    return [t for level in trees for t in level]


def bench_naive(max_size: int = 5) -> dict:
    """Every tree of the grammar up to ``max_size``, one ``evaluate`` call each, on the same pairs."""
    grammar, train = arithmetic_grammar(P), _pairs(N_TRAIN, seed=0)
    trees = _all_trees(grammar, max_size)
    best = None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for tree in trees:
            evaluate(tree, train, P)
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    return {"seconds": best, "trees": len(trees), "evals_per_second": len(trees) * N_TRAIN / best}


def bench_targets() -> dict[str, float]:
    """Best-of-``ROUNDS`` seconds for ``search_programs`` to find each of ``TARGETS``."""
    grammar, train = arithmetic_grammar(P), _pairs(N_TRAIN, seed=2)
    out = {}
    for name, text in TARGETS.items():
        tree = parse_arithmetic(text)
        labels = evaluate(tree, train, P)[0]
        best = None
        for _ in range(ROUNDS):
            start = time.perf_counter()
            result = search_programs(grammar, train, labels, size(tree))
            seconds = time.perf_counter() - start
            if result.verdict_kind != "found" or result.map_size != size(tree):
                raise AssertionError(f"the search did not find {text!r} at size {size(tree)}: {result.verdict}")
            best = seconds if best is None else min(best, seconds)
        out[name] = best
    return out


def main() -> None:
    by_threads = {threads: bench_enumeration(threads) for threads in (1, 2)}
    naive, targets = bench_naive(), bench_targets()
    head = by_threads[HEADLINE_THREADS]
    print(f"program search over Z_{P}, {N_TRAIN} training pairs, best of {ROUNDS}")
    print(f"{'benchmark':<58}{'seconds':>10}{'evals/s':>12}")
    for threads, row in by_threads.items():
        label = f"enumerate to size {EVAL_MAX_SIZE}, {row['candidates']:,} programs, {threads} thread(s)"
        print(f"{label:<58}{row['seconds']:>10.3f}{row['evals_per_second']:>12.3g}")
    label = f"naive: {naive['trees']:,} trees to size 5, one evaluate each"
    print(f"{label:<58}{naive['seconds']:>10.3f}{naive['evals_per_second']:>12.3g}")
    print(f"speed-up over naive: {head['evals_per_second'] / naive['evals_per_second']:.0f}×")
    for name, seconds in targets.items():
        label = f"find {TARGETS[name]} (max_size {size(parse_arithmetic(TARGETS[name]))})"
        print(f"{label:<58}{seconds:>10.4f}")
    print(json.dumps({
        "evals_per_second": head["evals_per_second"],
        "threads": HEADLINE_THREADS,
        "enumeration": {"max_size": EVAL_MAX_SIZE, "n_train": N_TRAIN, "candidates": head["candidates"],
                        "kept": head["kept"], "seconds": head["seconds"]},
        "evals_per_second_by_threads": {str(t): r["evals_per_second"] for t, r in by_threads.items()},
        "naive_evals_per_second": naive["evals_per_second"],
        "speedup_over_naive": head["evals_per_second"] / naive["evals_per_second"],
        "seconds_by_target": targets,
        "target_max_size": "the target's own size",
    }))


if __name__ == "__main__":
    main()
