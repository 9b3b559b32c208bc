"""Smooth lenses: every hand-written reverse derivative against torch.autograd in float64."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from progsynth.core.lens import Lens, Para, Real
from progsynth.core.smooth import (
    bias,
    embedding,
    from_function,
    from_module,
    gelu,
    linear,
    mlp,
    relu,
    sigmoid,
    square,
    tanh,
)
from progsynth.errors import ConfigError, LensTypeError

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _lens_as_autograd(lens: Lens) -> Callable[[torch.Tensor], torch.Tensor]:
    """The lens as a torch function whose backward IS the lens's put, so that gradcheck compares
    the hand-written reverse derivative with finite differences."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            y, ctx.residual = lens.forward(x)
            return y

        @staticmethod
        def backward(ctx: Any, dy: torch.Tensor) -> torch.Tensor:
            return lens.backward(ctx.residual, dy)

    return Fn.apply


def _para_as_autograd(para: Para) -> Callable[..., torch.Tensor]:
    """``f(x, *params)`` whose backward is the parametric lens's put (params a tuple of tensors)."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
            y, ctx.residual = para.forward(params, x)
            return y

        @staticmethod
        def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
            dparams, dx = para.backward(ctx.residual, dy)
            return (dx, *dparams)

    return Fn.apply


# ---------------------------------------------------------------------------------------------
# Activations

ACTIVATIONS = [
    (relu, torch.relu),
    (sigmoid, torch.sigmoid),
    (tanh, torch.tanh),
    (gelu, lambda x: F.gelu(x, approximate="none")),
    (square, lambda x: x * x),
]


@pytest.mark.parametrize("make, reference", ACTIVATIONS, ids=[m.__name__ for m, _ in ACTIVATIONS])
def test_activation_matches_autograd(make: Callable[..., Lens], reference: Callable) -> None:
    lens = make()
    x = _rand(6, 5, seed=1) * 2.0
    x[0, 0] = 0.0  # relu's kink: torch's convention is derivative 0 there
    dy = _rand(6, 5, seed=2)
    torch.testing.assert_close(lens.get(x), reference(x))
    x_ = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(reference(x_), x_, dy)
    torch.testing.assert_close(lens.put(x, dy), expected)


@pytest.mark.parametrize("make, reference", ACTIVATIONS, ids=[m.__name__ for m, _ in ACTIVATIONS])
def test_activation_passes_gradcheck(make: Callable[..., Lens], reference: Callable) -> None:
    x = _rand(4, 3, seed=3)
    x = x + 0.1 * x.sign()  # keep relu's inputs away from its kink, where finite differences lie
    assert torch.autograd.gradcheck(_lens_as_autograd(make()), (x.requires_grad_(),))


def test_activation_shapes_type_the_lens() -> None:
    assert relu(20).dom == Real(20) and relu(20).cod == Real(20)
    assert gelu().dom == Real()


def test_reverse_derivatives_batch_under_vmap() -> None:
    """vmap over basis cotangents gives the whole Jacobian (what Jacobian-rank analyses do), so the
    hand-written backwards must be vmap-safe, including an unbatched residual with a batched dy."""
    x = _rand(3, 4, seed=1)
    basis = torch.eye(12, dtype=DT).reshape(12, 3, 4)
    for make, reference in ACTIVATIONS:
        lens = make()
        _, residual = lens.forward(x)
        rows = torch.func.vmap(lambda v: lens.backward(residual, v))(basis)
        jacobian = torch.autograd.functional.jacobian(reference, x)
        torch.testing.assert_close(rows.reshape(12, 12), jacobian.reshape(12, 12))
    layer = linear(4, 2, dtype=DT)
    params = layer.init(_gen(2))
    _, residual = layer.forward(params, x)
    (dw, db), dx = torch.func.vmap(lambda v: layer.backward(residual, v))(torch.eye(6, dtype=DT).reshape(6, 3, 2))
    jw, jb, jx = torch.autograd.functional.jacobian(lambda w, b, a: F.linear(a, w, b), (*params, x))
    torch.testing.assert_close(dw, jw.reshape(6, 2, 4))
    torch.testing.assert_close(db, jb.reshape(6, 2))
    torch.testing.assert_close(dx, jx.reshape(6, 3, 4))


# ---------------------------------------------------------------------------------------------
# linear and bias


@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_matches_nn_linear_autograd(has_bias: bool) -> None:
    lens = linear(5, 3, bias=has_bias, dtype=DT)
    params = lens.init(_gen(1))
    assert len(params) == (2 if has_bias else 1) and params[0].shape == (3, 5)
    module = nn.Linear(5, 3, bias=has_bias, dtype=DT)
    with torch.no_grad():
        for p, q in zip(module.parameters(), params):
            p.copy_(q)
    x, dy = _rand(2, 7, 5, seed=2), _rand(2, 7, 3, seed=3)  # two leading batch axes
    x_ = x.clone().requires_grad_()
    y = module(x_)
    torch.testing.assert_close(lens.get(params, x), y.detach())
    expected = torch.autograd.grad(y, (*module.parameters(), x_), dy)
    dparams, dx = lens.put(params, x, dy)
    for got, want in zip((*dparams, dx), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_passes_gradcheck(has_bias: bool) -> None:
    lens = linear(4, 3, bias=has_bias, dtype=DT)
    params = tuple(p.requires_grad_() for p in lens.init(_gen(1)))
    assert torch.autograd.gradcheck(_para_as_autograd(lens), (_rand(5, 4).requires_grad_(), *params))


def test_linear_skips_the_input_derivative_when_not_needed() -> None:
    lens = linear(4, 3, dtype=DT)
    params = lens.init(_gen())
    y, residual = lens.forward(params, _rand(5, 4))
    dparams, dx = lens.backward(residual, torch.ones_like(y), need_input_grad=False)
    assert dx is None and len(dparams) == 2


def test_linear_init_matches_nn_linear_default() -> None:
    torch.manual_seed(123)
    module = nn.Linear(7, 4)
    w, b = linear(7, 4).init(_gen(123))
    assert w.dtype == torch.float32 and b.dtype == torch.float32
    torch.testing.assert_close(w, module.weight.detach())
    torch.testing.assert_close(b, module.bias.detach())
    assert float(w.abs().max()) <= 1 / 7**0.5
    w64, b64 = linear(7, 4, dtype=DT).init(_gen(5))
    assert w64.dtype == DT and b64.dtype == DT
    # The same generator state gives the same parameters; a different seed gives different ones.
    torch.testing.assert_close(linear(7, 4).init(_gen(9))[0], linear(7, 4).init(_gen(9))[0])
    assert not torch.equal(linear(7, 4).init(_gen(9))[0], linear(7, 4).init(_gen(10))[0])


def test_bias_matches_autograd_and_passes_gradcheck() -> None:
    lens = bias(3, dtype=DT)
    (b,) = lens.init()
    assert torch.equal(b, torch.zeros(3, dtype=DT))
    b = _rand(3, seed=1)
    x, dy = _rand(4, 3, seed=2), _rand(4, 3, seed=3)
    b_, x_ = b.clone().requires_grad_(), x.clone().requires_grad_()
    gb, gx = torch.autograd.grad(x_ + b_, (b_, x_), dy)
    (db,), dx = lens.put((b,), x, dy)
    torch.testing.assert_close(db, gb)
    torch.testing.assert_close(dx, gx)
    assert torch.autograd.gradcheck(_para_as_autograd(lens), (x.requires_grad_(), b.requires_grad_()))


@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_in_out_layout_matches_autograd_without_copies(has_bias: bool) -> None:
    """layout="in_out" stores W as (in, out) and computes x W + b; its reverse derivative matches
    autograd through that expression, and p' has W's (in, out) layout, contiguous."""
    lens = linear(5, 3, bias=has_bias, dtype=DT, layout="in_out")
    params = lens.init(_gen(1))
    assert params[0].shape == (5, 3)
    for x, dy in ((_rand(7, 5, seed=2), _rand(7, 3, seed=3)), (_rand(2, 7, 5, seed=4), _rand(2, 7, 3, seed=5))):
        leaves = [p.clone().requires_grad_() for p in params]
        x_ = x.clone().requires_grad_()
        y = x_ @ leaves[0] + (leaves[1] if has_bias else 0.0)
        torch.testing.assert_close(lens.get(params, x), y.detach())
        expected = torch.autograd.grad(y, (*leaves, x_), dy)
        dparams, dx = lens.put(params, x, dy)
        assert dparams[0].is_contiguous()
        for got, want in zip((*dparams, dx), expected):
            torch.testing.assert_close(got, want)
    with pytest.raises(ConfigError, match=r"linear layout must be one of \['out_in', 'in_out'\], got 'rows'"):
        linear(5, 3, layout="rows")


def test_embedding_matches_autograd_under_vmap_too() -> None:
    """Rows of W for the first k token columns, concatenated; R scatter-adds dy into the rows read
    (a repeated token gets the sum), the tokens get None. Batched over parameter copies by vmap,
    as the multi-seed trainer does."""
    lens = embedding(5, 3, n_positions=2, dtype=DT)
    assert lens.cod == Real(6)
    (w,) = lens.init(_gen(1))
    tokens = torch.tensor([[0, 4, 9], [2, 2, 9], [4, 0, 9]])  # the third column is not read
    dy = _rand(3, 6, seed=2)
    w_ = w.clone().requires_grad_()
    y = F.embedding(tokens[:, :2], w_).reshape(3, 6)
    torch.testing.assert_close(lens.get((w,), tokens), y.detach(), atol=0, rtol=0)
    (expected,) = torch.autograd.grad(y, w_, dy)
    (dw,), dx = lens.put((w,), tokens, dy)
    assert dx is None
    torch.testing.assert_close(dw, expected)
    assert torch.equal(dw[1], torch.zeros(3, dtype=DT)) and torch.equal(dw[3], torch.zeros(3, dtype=DT))

    def step(weight: torch.Tensor) -> torch.Tensor:
        out, residual = lens.forward((weight,), tokens)
        return lens.backward(residual, out * dy)[0][0]

    stacked = torch.stack([w, 2 * w])
    torch.testing.assert_close(torch.func.vmap(step)(stacked), torch.stack([step(w), step(2 * w)]))


def test_embedding_rejects_real_inputs_and_short_rows() -> None:
    lens = embedding(5, 3, n_positions=2)
    params = lens.init()
    with pytest.raises(LensTypeError, match=r"embedding\(5, 3, positions=2\) expects integer token ids \(N, >= 2\), "
                                            r"got \(4, 2\) torch\.float32"):
        lens.get(params, torch.zeros(4, 2))
    with pytest.raises(LensTypeError, match=r"got \(4, 1\) torch\.int64"):
        lens.get(params, torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(LensTypeError, match=r"W of shape \(5, 3\), got 1 tensor\(s\) with W of shape \(3, 5\)"):
        lens.get((torch.zeros(3, 5),), torch.zeros(4, 2, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# from_function and from_module


def test_from_function_matches_autograd_and_passes_gradcheck() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * x.sum(dim=-1, keepdim=True) + x.logsumexp(dim=-1, keepdim=True)

    lens = from_function(fn, dom=Real(4), cod=Real(4))
    assert lens.name == "fn" and lens.dom == Real(4)
    x, dy = _rand(3, 4, seed=1), _rand(3, 4, seed=2)
    x_ = x.clone().requires_grad_()
    y = fn(x_)
    (expected,) = torch.autograd.grad(y, x_, dy)
    torch.testing.assert_close(lens.get(x), y.detach())
    torch.testing.assert_close(lens.put(x, dy), expected)
    assert torch.autograd.gradcheck(_lens_as_autograd(lens), (x.requires_grad_(),))


class _Scaled(nn.Module):
    """A module with a buffer, to check buffers are used as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 6, dtype=DT), nn.Tanh(), nn.Linear(6, 2, dtype=DT))
        self.register_buffer("scale", torch.tensor([2.0, -3.0], dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def test_from_module_matches_autograd() -> None:
    torch.manual_seed(0)
    module = _Scaled()
    lens = from_module(module)
    params = lens.init()
    assert set(params) == {"inner.0.weight", "inner.0.bias", "inner.2.weight", "inner.2.bias"}
    assert all(not p.requires_grad for p in params.values())
    x, dy = _rand(5, 4, seed=1), _rand(5, 2, seed=2)
    x_ = x.clone().requires_grad_()
    y = module(x_)
    names = [k for k, _ in module.named_parameters()]
    expected = torch.autograd.grad(y, (*module.parameters(), x_), dy)
    torch.testing.assert_close(lens.get(params, x), y.detach())
    dparams, dx = lens.put(params, x, dy)
    for name, want in zip(names, expected):
        torch.testing.assert_close(dparams[name], want)
    torch.testing.assert_close(dx, expected[-1])
    dparams2, dx2 = lens.backward(lens.forward(params, x)[1], dy, need_input_grad=False)
    assert dx2 is None and set(dparams2) == set(names)


def test_from_module_uses_the_given_parameters_and_leaves_the_module_alone() -> None:
    torch.manual_seed(0)
    module = _Scaled()
    lens = from_module(module, name="scaled")
    params = lens.init()
    params["inner.0.weight"].add_(1.0)  # init returned copies: the module is unchanged
    assert not torch.equal(params["inner.0.weight"], module.inner[0].weight.detach())
    x = _rand(5, 4)
    with torch.no_grad():
        module.inner[0].weight.add_(1.0)
    torch.testing.assert_close(lens.get(params, x), module(x).detach())
    module.scale.mul_(-1.0)  # buffers are read at call time
    torch.testing.assert_close(lens.get(params, x), module(x).detach())
    assert lens.name == "scaled"


def test_from_module_accepts_integer_inputs_without_input_derivative() -> None:
    torch.manual_seed(0)
    module = nn.Embedding(5, 3, dtype=DT)
    lens = from_module(module)
    tokens, dy = torch.tensor([0, 2, 2, 4]), _rand(4, 3, seed=1)
    dparams, dx = lens.put(lens.init(), tokens, dy)
    assert dx is None
    expected = torch.zeros(5, 3, dtype=DT).index_add_(0, tokens, dy)
    torch.testing.assert_close(dparams["weight"], expected)


# ---------------------------------------------------------------------------------------------
# mlp against nn.Sequential


class _Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "square": _Square}


@pytest.mark.parametrize("activation", sorted(MODULES))
def test_mlp_gradients_match_nn_sequential(activation: str) -> None:
    widths = [5, 7, 6, 3]
    model = mlp(widths, activation, dtype=DT)
    params = model.init(_gen(4))
    assert len(params) == 5 and params[1] == () and params[3] == ()
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        if i:
            layers.append(MODULES[activation]())
        layers.append(nn.Linear(n_in, n_out, dtype=DT))
    seq = nn.Sequential(*layers)
    with torch.no_grad():
        for p, q in zip(seq.parameters(), [t for part in params for t in part]):
            p.copy_(q)

    x, dy = _rand(8, 5, seed=1), _rand(8, 3, seed=2)
    x_ = x.clone().requires_grad_()
    y = seq(x_)
    expected = torch.autograd.grad(y, (*seq.parameters(), x_), dy)
    torch.testing.assert_close(model.get(params, x), y.detach())
    dparams, dx = model.put(params, x, dy)
    got = [t for part in dparams for t in part]
    assert len(got) == len(expected) - 1
    for g, e in zip((*got, dx), expected):
        torch.testing.assert_close(g, e)


def test_mlp_is_typed_end_to_end() -> None:
    model = mlp([4, 20, 3], "sigmoid")
    assert model.dom == Real(4) and model.cod == Real(3)
    assert model.name == "mlp(4-20-3, sigmoid)"
    with pytest.raises(LensTypeError, match=r"mlp\(4-20-3, sigmoid\) outputs R\^3 but linear\(4, 2\) expects R\^4"):
        model >> linear(4, 2)


# ---------------------------------------------------------------------------------------------
# Bad input


SMOOTH_LENSES = [
    ("linear(4, 3)", lambda x: linear(4, 3).get(linear(4, 3).init(), x)),
    ("bias(4)", lambda x: bias(4).get(bias(4).init(), x)),
    ("relu", relu().get),
    ("sigmoid", sigmoid().get),
    ("tanh", tanh().get),
    ("gelu", gelu().get),
    ("square", square().get),
    ("mlp(4-3-2, relu)", lambda x: mlp([4, 3, 2]).get(mlp([4, 3, 2]).init(), x)),
    ("sin", from_function(torch.sin).get),
]


@pytest.mark.parametrize("name, call", SMOOTH_LENSES, ids=[n for n, _ in SMOOTH_LENSES])
def test_non_tensor_input_names_the_lens(name: str, call: Callable) -> None:
    words = np.zeros((2, 4), dtype=np.uint64)
    expected_name = "linear(4, 3)" if name.startswith("mlp") else name  # mlp's first part sees the data
    with pytest.raises(LensTypeError, match=r"expects a floating-point torch\.Tensor, got ndarray of dtype uint64") as info:
        call(words)
    assert str(info.value).startswith(expected_name)
    with pytest.raises(LensTypeError, match="got dtype torch.int64"):
        call(torch.zeros(2, 4, dtype=torch.int64))


def test_from_module_rejects_non_tensors_and_bad_parameters() -> None:
    lens = from_module(nn.Linear(4, 2), name="head")
    with pytest.raises(LensTypeError, match="head expects a torch.Tensor input, got ndarray"):
        lens.get(lens.init(), np.zeros((2, 4), dtype=np.uint64))
    with pytest.raises(LensTypeError, match="head expects its parameters as a dict"):
        lens.get((torch.zeros(2, 4),), torch.zeros(1, 4))


def test_wrong_widths_are_reported_at_run_time() -> None:
    # An untyped activation lets linear(4, 20) >> relu() >> linear(10, 3) compose; the data is
    # still checked when it arrives.
    model = linear(4, 20) >> relu() >> linear(10, 3)
    with pytest.raises(LensTypeError, match=r"linear\(10, 3\) expects inputs of shape \(\.\.\., 10\), got \(5, 20\)"):
        model.get(model.init(), torch.zeros(5, 4))
    with pytest.raises(LensTypeError, match=r"linear\(4, 3\) expects parameters \(W, b\) with W of shape \(3, 4\)"):
        linear(4, 3).get((torch.zeros(4, 3), torch.zeros(3)), torch.zeros(1, 4))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: linear(0, 3), "linear n_in must be a positive int, got 0"),
        (lambda: linear(3, 2.5), "linear n_out must be a positive int, got 2.5"),
        (lambda: linear(3, 2, dtype=torch.int32), "linear dtype must be a floating torch.dtype"),
        (lambda: bias(3, dtype="float32"), "bias dtype must be a floating torch.dtype, got 'float32'"),
        (lambda: embedding(5, 0), "embedding width must be a positive int, got 0"),
        (lambda: mlp([4]), "mlp widths must be a list of at least two"),
        (lambda: mlp([4, 8, 2], "swish"), "mlp activation must be one of"),
        (lambda: from_function(3), "from_function expects a callable, got int"),
        (lambda: from_module(lambda x: x), "from_module expects a torch.nn.Module, got function"),
    ],
)
def test_bad_construction_raises_config_error(make: Callable, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        make()
