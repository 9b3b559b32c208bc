"""Explicit program search with a simplicity prior: the Bayesian baseline for what SGD learns.

- ``grammar``: the typed DSL (``arithmetic_grammar`` over Z_p, ``boolean_grammar`` over bits) and
  its prefix-free code, so the prior 2^−ℓ is proper;
- ``enumerate``: bottom-up enumeration by size, vectorised over all training inputs and whole
  blocks of programs, pruned by observational equivalence (``hashing``, ``kernels``), with a cost
  estimate that refuses bounds too large before they start (``estimate``);
- ``posterior``: the posterior over the consistent programs, the MAP program and the
  posterior-predictive mixture on held-out inputs;
- ``engine``: ``search_programs``, the one entry point, and its ``SearchResult``.

Found programs are ``progsynth.tasks.expression`` trees: they print with ``render`` and run with
``evaluate``.
"""

from progsynth.search.engine import (DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_CONSISTENT, DEFAULT_MAX_MEMORY_BYTES,
                                     BestFit, SearchResult, TopProgram, search_programs)
from progsynth.search.enumerate import SizeCount
from progsynth.search.grammar import Grammar, arithmetic_grammar, boolean_grammar

__all__ = ["search_programs", "SearchResult", "TopProgram", "BestFit", "SizeCount", "Grammar",
           "arithmetic_grammar", "boolean_grammar", "DEFAULT_MAX_CANDIDATES", "DEFAULT_MAX_MEMORY_BYTES",
           "DEFAULT_MAX_CONSISTENT"]
