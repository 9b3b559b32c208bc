"""interp/relabel.py: named relabellings, primitive roots, the cyclic isotope of an answer table."""

from __future__ import annotations

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.interp.relabel import (RelabelError, candidate_relabellings, cyclic_isotope, group_grid,
                                      primitive_root)
from progsynth.tasks.modular import ModularTask, modular_dataset

OPS = {"identity": "add", "negate b": "sub", "discrete log": "mul", "discrete log, negate b": "div"}


def table_of(op, p: int) -> torch.Tensor:
    """(p, p) answers of ``op`` (−1 where the pair is not in the data)."""
    data = modular_dataset(ModularTask(p=p, op=op))
    table = torch.full((p, p), -1, dtype=torch.int64)
    table[data.a, data.b] = data.labels
    return table


def assert_is_group_operation(relabelling, table: torch.Tensor) -> None:
    """h(a ∘ b) = f(a) + g(b) mod n on every pair of the group, and the group pairs are n × n."""
    f, g, h, n = relabelling.f, relabelling.g, relabelling.h, relabelling.n
    a, b = torch.meshgrid(torch.arange(table.shape[0]), torch.arange(table.shape[0]), indexing="ij")
    inside = (f[a] >= 0) & (g[b] >= 0)
    assert int(inside.sum()) == n * n
    assert torch.equal(h[table[inside]], (f[a[inside]] + g[b[inside]]) % n)


@pytest.mark.parametrize("p", [7, 23])
def test_each_named_relabelling_turns_its_operation_into_addition(p):
    relabellings = candidate_relabellings(p)
    assert [r.name for r in relabellings] == list(OPS)
    for r in relabellings:
        assert_is_group_operation(r, table_of(OPS[r.name], p))
        assert r.bits == 2
        assert torch.equal(r.h[r.classes()], torch.arange(r.n))


def test_primitive_root():
    assert primitive_root(23) == 5 and primitive_root(7) == 3 and primitive_root(31) == 3
    powers = {pow(5, i, 23) for i in range(22)}
    assert powers == set(range(1, 23))
    with pytest.raises(ConfigError, match="prime p here; got p = 8"):
        primitive_root(8)
    assert [r.name for r in candidate_relabellings(9)] == ["identity", "negate b"]  # no logs for composite p


@pytest.mark.parametrize("op,n", [("add", 11), ("sub", 11), ("mul", 10), ("div", 10)])
def test_cyclic_isotope_of_the_named_operations(op, n):
    table = table_of(op, 11)
    found = cyclic_isotope(table)
    assert found is not None and found.name == "cyclic isotope" and found.n == n
    assert_is_group_operation(found, table)


def test_cyclic_isotope_finds_relabellings_no_list_has():
    table = table_of(lambda a, b, p: (2 * a + 3 * b) % p, 13)
    found = cyclic_isotope(table)
    assert found is not None and found.n == 13
    assert_is_group_operation(found, table)
    assert not any(found.same_maps(r) for r in candidate_relabellings(13))


@pytest.mark.parametrize("op", ["x2+y2", "x2+xy+y2", "x3+xy"])
def test_no_isotope_where_the_table_is_no_group(op):
    assert cyclic_isotope(table_of(op, 11)) is None


def test_group_grid_locates_the_group_and_says_what_is_missing():
    p = 7
    log = candidate_relabellings(p)[2]
    data = modular_dataset(ModularTask(p=p, op="mul"))
    grid = group_grid(log, data.operands)
    assert grid.rows.shape == (6, 6) and grid.exceptional.numel() == 2 * p - 1  # a = 0 or b = 0
    x, y = grid.x[grid.rows], grid.y[grid.rows]
    assert torch.equal(x, torch.arange(6).unsqueeze(1).expand(6, 6)) and torch.equal(y, torch.arange(6).expand(6, 6))
    division = modular_dataset(ModularTask(p=p, op="div"))  # no b = 0
    with pytest.raises(RelabelError, match=r"'identity' relabelling needs every pair of its group, but the data lack "
                                           r"\(a, b\) = \(0, 0\)"):
        group_grid(candidate_relabellings(p)[0], division.operands)
    with pytest.raises(ConfigError, match="square"):
        cyclic_isotope(torch.zeros(3, 4))
    with pytest.raises(ConfigError, match=r"shape \(N, 2\)"):
        group_grid(log, torch.zeros(5, 3, dtype=torch.int64))
