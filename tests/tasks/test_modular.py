"""Modular-arithmetic tasks: labels, aliases, user functions, split, encodings and errors."""

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.tasks.modular import (
    OPERATIONS,
    ModularTask,
    is_prime,
    modular_dataset,
    one_hot_pairs,
    resolve_operation,
)

DIRECT = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * pow(b, -1, p)) % p,
    "x2+y2": lambda a, b, p: (a**2 + b**2) % p,
    "x2+xy+y2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x3+xy": lambda a, b, p: (a**3 + a * b) % p,
}


def test_every_operation_has_a_direct_check():
    assert set(DIRECT) == set(OPERATIONS)


@pytest.mark.parametrize("op", sorted(DIRECT))
@pytest.mark.parametrize("p", [7, 13])
def test_labels_match_direct_computation(op, p):
    data = modular_dataset(ModularTask(p=p, op=op))
    pairs = [(a, b) for a in range(p) for b in range(p) if not (op == "div" and b == 0)]
    assert data.operands.tolist() == [list(pair) for pair in pairs]
    assert data.labels.tolist() == [DIRECT[op](a, b, p) for a, b in pairs]
    assert data.labels.dtype == torch.int64


def test_division_leaves_out_b_zero():
    data = modular_dataset(ModularTask(p=11, op="div", train_fraction=1.0))
    assert len(data) == 11 * 10 and bool((data.b != 0).all())
    # b · (a / b) = a
    assert torch.equal(data.b * data.labels % 11, data.a)


@pytest.mark.parametrize(
    "alias, canonical",
    [("+", "add"), ("a+b", "add"), ("x + y", "add"), ("plus", "add"), ("ADD", "add"),
     ("-", "sub"), ("a-b", "sub"), ("subtract", "sub"), ("*", "mul"), ("a*b", "mul"), ("xy", "mul"),
     ("/", "div"), ("a/b", "div"), ("x^2+y^2", "x2+y2"), ("b**2 + a**2", "x2+y2"), ("a²+b²", "x2+y2"),
     ("x^2+x*y+y^2", "x2+xy+y2"), ("x2xyy2", "x2+xy+y2"), ("x^3+xy", "x3+xy"), ("a³+ab", "x3+xy")],
)
def test_aliases(alias, canonical):
    assert resolve_operation(alias) == canonical
    assert ModularTask(p=7, op=alias) == ModularTask(p=7, op=canonical)


def test_unknown_operation_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        ModularTask(p=7, op="pow")
    message = str(info.value)
    assert "'pow'" in message
    for name in OPERATIONS:
        assert name in message


def test_user_function():
    def affine(a, b, p):
        return (2 * a + 3 * b + 1) % p

    task = ModularTask(p=5, op=affine, train_fraction=1.0)
    data = modular_dataset(task)
    assert task.op_name == "affine"
    assert data.labels.tolist() == [(2 * a + 3 * b + 1) % 5 for a in range(5) for b in range(5)]


@pytest.mark.parametrize(
    "fn, expected",
    [(lambda a, b, p: a + b, ["(a, b) = (1, 4)", "returned 5", "[0, 5)"]),  # first pair with a + b ≥ 5
     (lambda a, b, p: -1 if (a, b) == (2, 3) else 0, ["(a, b) = (2, 3)", "returned -1"]),
     (lambda a, b, p: (a + b) % p / 1, ["(a, b) = (0, 0)", "0.0", "float"]),
     (lambda a, b, p: None, ["(a, b) = (0, 0)", "None"]),
     (lambda a, b, p: 0 // (a - 3), ["(a, b) = (3, 0)", "ZeroDivisionError"])],
)
def test_user_function_errors_name_the_pair_and_value(fn, expected):
    with pytest.raises(ConfigError) as info:
        modular_dataset(ModularTask(p=5, op=fn))
    for part in expected:
        assert part in str(info.value)


@pytest.mark.parametrize("p", [1, 0, -3, 2.0, True, "7"])
def test_p_must_be_an_integer_at_least_two(p):
    with pytest.raises(ConfigError, match="p must be an integer from 2 to 2048"):
        ModularTask(p=p)


@pytest.mark.parametrize("p", [4, 9, 15, 113 * 2])
def test_division_needs_prime_p(p):
    with pytest.raises(ConfigError) as info:
        ModularTask(p=p, op="div")
    assert f"p = {p}" in str(info.value) and "prime" in str(info.value)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "x2+y2", "x2+xy+y2", "x3+xy"])
def test_ring_operations_accept_composite_p(op):
    data = modular_dataset(ModularTask(p=12, op=op))
    assert len(data) == 144 and data.labels.tolist() == [DIRECT[op](a, b, 12) for a in range(12) for b in range(12)]


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.0001, 2, True, "0.3", float("nan")])
def test_train_fraction_outside_unit_interval(fraction):
    with pytest.raises(ConfigError, match=r"train_fraction must be a number in \(0, 1\]"):
        ModularTask(p=7, train_fraction=fraction)


def test_train_fraction_too_small_for_one_example():
    with pytest.raises(ConfigError, match="no training example"):
        modular_dataset(ModularTask(p=7, train_fraction=0.01))


def test_nanda_split_sizes_and_disjointness():
    data = modular_dataset(ModularTask(p=113, train_fraction=0.3, split_seed=0))
    train, test = data.train_idx, data.test_idx
    assert (len(train), len(test)) == (3830, 8939)
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(113 * 113))
    assert bool((train[1:] > train[:-1]).all()) and bool((test[1:] > test[:-1]).all())


def test_split_is_deterministic_and_depends_on_the_seed():
    first = modular_dataset(ModularTask(p=31, split_seed=5))
    again = modular_dataset(ModularTask(p=31, split_seed=5))
    other = modular_dataset(ModularTask(p=31, split_seed=6))
    assert torch.equal(first.train_idx, again.train_idx) and torch.equal(first.test_idx, again.test_idx)
    assert not torch.equal(first.train_idx, other.train_idx)


def test_full_train_fraction_leaves_an_empty_test_set():
    data = modular_dataset(ModularTask(p=7, train_fraction=1.0))
    assert len(data.train_idx) == 49 and len(data.test_idx) == 0


def test_token_encoding():
    data = modular_dataset(ModularTask(p=11, op="sub"))
    tokens = data.inputs("tokens")
    assert tokens.shape == (121, 3) and tokens.dtype == torch.int64
    assert torch.equal(tokens[:, 0], data.a) and torch.equal(tokens[:, 1], data.b)
    assert bool((tokens[:, 2] == 11).all())  # '=' is token p


def test_one_hot_encoding():
    data = modular_dataset(ModularTask(p=11))
    x = data.inputs("onehot", torch.float64)
    assert x.shape == (121, 22) and x.dtype == torch.float64
    assert torch.equal(x.sum(dim=1), torch.full((121,), 2.0, dtype=torch.float64))
    assert torch.equal(x[:, :11].argmax(dim=1), data.a) and torch.equal(x[:, 11:].argmax(dim=1), data.b)
    assert torch.equal(one_hot_pairs(data.a, data.b, 11), x.float())


def test_unknown_input_kind():
    with pytest.raises(ConfigError, match="unknown input kind 'pixels'"):
        modular_dataset(ModularTask(p=7)).inputs("pixels")


EXPRESSIONS = {
    "a*b + a + b": lambda a, b, p: (a * b + a + b) % p,
    "(a+b)^2 - b": lambda a, b, p: ((a + b) ** 2 - b) % p,
    "a^3 + a*b + 1": lambda a, b, p: (a**3 + a * b + 1) % p,
    "-a + 2*b": lambda a, b, p: (-a + 2 * b) % p,
}


@pytest.mark.parametrize("text", sorted(EXPRESSIONS))
def test_expression_operations(text):
    task = ModularTask(p=11, op=text, train_fraction=1.0)
    data = modular_dataset(task)
    assert data.labels.tolist() == [EXPRESSIONS[text](a, b, 11) for a in range(11) for b in range(11)]
    assert ModularTask(p=11, op=task.op, train_fraction=1.0) == task  # the printed form reads back to the same task


@pytest.mark.parametrize("text, builtin", [("b^2 + a^2", "x2+y2"), ("(a + b)", "add"), ("b*a", "mul"),
                                           ("a*b + b^2 + a^2", "x2+xy+y2"), ("a/b", "div")])
def test_an_expression_equal_to_a_builtin_is_that_builtin(text, builtin):
    assert ModularTask(p=7, op=text).op == builtin


def test_an_expression_that_divides_leaves_out_zero_divisors_and_needs_a_prime():
    data = modular_dataset(ModularTask(p=7, op="b / (a - 1)", train_fraction=1.0))
    assert len(data) == 7 * 6 and bool((data.a != 1).all())
    assert torch.equal((data.a - 1) * data.labels % 7, data.b % 7)
    with pytest.raises(ConfigError, match="divides, which needs a field, so p must be prime; got p = 8"):
        ModularTask(p=8, op="a / (b + 1)")


def test_user_function_by_import_path():
    task = ModularTask(p=5, op="user_functions:affine", train_fraction=1.0)
    assert task.op == "user_functions:affine"
    assert modular_dataset(task).labels.tolist() == [(2 * a + 3 * b + 1) % 5 for a in range(5) for b in range(5)]
    with pytest.raises(ConfigError, match="cannot import module 'nowhere'"):
        ModularTask(p=5, op="nowhere:f")


def test_a_formula_alias_is_not_confused_with_an_expression():
    # '(a^2+b)^2' drops to the same characters as the alias 'x2+y2' but is another function
    task = ModularTask(p=7, op="(a^2+b)^2")
    assert task.op == "(a^2 + b)^2"


# --------------------------------------------------------------------------- the paper's split


def _papers_split(p: int, fraction: float, seed: int) -> tuple[list, list]:
    """The paper's code, literally: all (i, j, p) with i outer and j inner, random.seed then
    random.shuffle with the global generator (its state restored afterwards), first int(fraction · p²)."""
    import random

    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    saved = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(pairs)
    finally:
        random.setstate(saved)
    div = int(fraction * len(pairs))
    return pairs[:div], pairs[div:]


@pytest.mark.parametrize("p, fraction, seed", [(113, 0.3, 0), (7, 0.5, 0), (7, 0.3, 5), (11, 0.6, 123)])
def test_paper_split_holds_out_the_papers_pairs(p, fraction, seed):
    data = modular_dataset(ModularTask(p=p, train_fraction=fraction, split_seed=seed, split="paper"))
    train, test = _papers_split(p, fraction, seed)
    as_pairs = lambda rows: sorted(map(tuple, data.operands[rows].tolist()))  # noqa: E731
    assert as_pairs(data.train_idx) == sorted((i, j) for i, j, _ in train)
    assert as_pairs(data.test_idx) == sorted((i, j) for i, j, _ in test)
    assert bool((data.train_idx[1:] > data.train_idx[:-1]).all())  # sorted, as every split
    if p == 113:
        assert (len(data.train_idx), len(data.test_idx)) == (3830, 8939)


def test_paper_split_differs_from_the_random_split_and_is_recorded():
    paper = ModularTask(p=31, split="paper")
    assert ModularTask(p=31).split == "random"
    assert not torch.equal(modular_dataset(paper).train_idx, modular_dataset(ModularTask(p=31)).train_idx)
    assert paper != ModularTask(p=31)
    assert torch.equal(modular_dataset(paper).train_idx, modular_dataset(ModularTask(p=31, split="paper")).train_idx)


def test_paper_split_of_division_shuffles_the_valid_pairs():
    data = modular_dataset(ModularTask(p=7, op="div", train_fraction=0.5, split="paper"))
    assert len(data.train_idx) == 21 and len(data.test_idx) == 21


@pytest.mark.parametrize("bad", ["shuffle", "Paper", 1, None])
def test_unknown_split_names_the_choices(bad):
    with pytest.raises(ConfigError, match=r"split must be one of 'random', 'paper', got"):
        ModularTask(p=7, split=bad)
