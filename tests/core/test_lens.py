"""Composition laws of lenses and parametric lenses, checked on real (smooth) lenses."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from progsynth.core.lens import Bits, FunctionLens, Identity, Lens, Para, Real, lift
from progsynth.core.smooth import from_function, linear, relu, sigmoid, tanh
from progsynth.errors import LensTypeError, ProgsynthError

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _assert_tree_close(a: Any, b: Any) -> None:
    """Equal pytrees of tensors (same structure, allclose leaves)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        torch.testing.assert_close(a, b)
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_tree_close(x, y)
    else:
        assert a == b


# ---------------------------------------------------------------------------------------------
# Identity laws


@pytest.mark.parametrize("lens", [sigmoid(), tanh(3), from_function(torch.sin, dom=Real(3), cod=Real(3))])
def test_identity_laws_for_lenses(lens: Lens) -> None:
    a, db = _rand(4, 3, seed=1), _rand(4, 3, seed=2)
    for composite in (Identity() >> lens, lens >> Identity()):
        torch.testing.assert_close(composite.get(a), lens.get(a))
        torch.testing.assert_close(composite.put(a, db), lens.put(a, db))
    # The identity itself: get = id, put(a, a') = a'.
    assert Identity().get(a) is a and Identity().put(a, db) is db


def test_identity_laws_for_parametric_lenses() -> None:
    f = linear(3, 2, dtype=DT)
    p, a, db = f.init(_gen()), _rand(5, 3, seed=1), _rand(5, 2, seed=2)
    dp_f, da_f = f.put(p, a, db)
    for composite, params in ((Identity() >> f, ((), p)), (f >> Identity(), (p, ()))):
        torch.testing.assert_close(composite.get(params, a), f.get(p, a))
        dp, da = composite.put(params, a, db)
        _assert_tree_close(dp, tuple(dp_f if q is p else () for q in params))
        torch.testing.assert_close(da, da_f)


# ---------------------------------------------------------------------------------------------
# Associativity


def test_associativity_of_lenses() -> None:
    f, g, h = sigmoid(4), from_function(lambda x: x.flip(-1) * 2.0, "flip2"), tanh(4)
    left, right = (f >> g) >> h, f >> (g >> h)
    a, dc = _rand(3, 4, seed=1), _rand(3, 4, seed=2)
    torch.testing.assert_close(left.get(a), right.get(a))
    torch.testing.assert_close(left.put(a, dc), right.put(a, dc))
    # Both agree with the chain rule written out: f.put(a, g.put(f(a), h.put(g(f(a)), c'))).
    fa = f.get(a)
    expected = f.put(a, g.put(fa, h.put(g.get(fa), dc)))
    torch.testing.assert_close(left.put(a, dc), expected)


def test_associativity_of_parametric_lenses() -> None:
    f, g, h = linear(3, 5, dtype=DT), tanh(5), linear(5, 2, dtype=DT)
    left, right = (f >> g) >> h, f >> (g >> h)
    params = (f.init(_gen(1)), (), h.init(_gen(2)))
    a, dc = _rand(6, 3, seed=3), _rand(6, 2, seed=4)
    torch.testing.assert_close(left.get(params, a), right.get(params, a))
    (dp_l, da_l), (dp_r, da_r) = left.put(params, a, dc), right.put(params, a, dc)
    _assert_tree_close(dp_l, dp_r)
    torch.testing.assert_close(da_l, da_r)
    # And they equal the chain rule through the parts by hand.
    y1 = f.get(params[0], a)
    y2 = g.get(y1)
    dp_h, dy2 = h.put(params[2], y2, dc)
    dy1 = g.put(y1, dy2)
    dp_f, da = f.put(params[0], a, dy1)
    _assert_tree_close(dp_l, (dp_f, (), dp_h))
    torch.testing.assert_close(da_l, da)


# ---------------------------------------------------------------------------------------------
# Parallel composition and lift


def test_parallel_composition_acts_componentwise() -> None:
    f, g = sigmoid(), from_function(torch.sin)
    both = f @ g
    a = (_rand(2, 3, seed=1), _rand(4, seed=2))
    db = (_rand(2, 3, seed=3), _rand(4, seed=4))
    b1, b2 = both.get(a)
    torch.testing.assert_close(b1, f.get(a[0]))
    torch.testing.assert_close(b2, g.get(a[1]))
    da1, da2 = both.put(a, db)
    torch.testing.assert_close(da1, f.put(a[0], db[0]))
    torch.testing.assert_close(da2, g.put(a[1], db[1]))


def test_parallel_composition_of_parametric_lenses() -> None:
    f, g = linear(3, 2, dtype=DT), linear(4, 1, bias=False, dtype=DT)
    both = f @ g
    params = both.init(_gen(5))
    assert len(params) == 2 and len(params[0]) == 2 and len(params[1]) == 1
    a = (_rand(5, 3, seed=1), _rand(5, 4, seed=2))
    db = (_rand(5, 2, seed=3), _rand(5, 1, seed=4))
    (dp1, dp2), (da1, da2) = both.put(params, a, db)
    e1, e2 = f.put(params[0], a[0], db[0]), g.put(params[1], a[1], db[1])
    _assert_tree_close((dp1, da1), e1)
    _assert_tree_close((dp2, da2), e2)
    dp, da = both.backward(both.forward(params, a)[1], db, need_input_grad=False)
    assert da is None
    _assert_tree_close(dp, (e1[0], e2[0]))


def test_lift_has_no_parameters_and_forwards_to_the_lens() -> None:
    lens = tanh()
    para = lift(lens)
    a, db = _rand(3, 2, seed=1), _rand(3, 2, seed=2)
    assert isinstance(para, Para) and para.init() == ()
    torch.testing.assert_close(para.get((), a), lens.get(a))
    dp, da = para.put((), a, db)
    assert dp == ()
    torch.testing.assert_close(da, lens.put(a, db))
    assert para.backward(para.forward((), a)[1], db, need_input_grad=False) == ((), None)


# ---------------------------------------------------------------------------------------------
# Reparametrisation


def test_reparam_put_matches_autograd_of_the_reparametrised_function() -> None:
    # Q = R^8 → P = (W (2, 3), b (2,)) by a nonlinear map; f = linear(3, 2).
    def alpha_fn(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(q[:6]).reshape(2, 3), q[6:] ** 2

    f = linear(3, 2, dtype=DT)
    model = f.reparam(from_function(alpha_fn, "alpha"))
    q, x, dy = _rand(8, seed=1), _rand(5, 3, seed=2), _rand(5, 2, seed=3)
    dq, dx = model.put(q, x, dy)

    q_, x_ = q.clone().requires_grad_(), x.clone().requires_grad_()
    w, b = alpha_fn(q_)
    y = torch.nn.functional.linear(x_, w, b)
    torch.testing.assert_close(model.get(q, x), y.detach())
    gq, gx = torch.autograd.grad(y, (q_, x_), dy)
    torch.testing.assert_close(dq, gq)
    torch.testing.assert_close(dx, gx)
    assert model.name == "linear(3, 2)[alpha]"


def test_reparam_of_a_composite_maps_every_parameter_back() -> None:
    # A shared scale s reparametrises both layers: P = ((s W1, b1), (), (s W2, b2)).
    model0 = linear(3, 4, dtype=DT) >> tanh() >> linear(4, 2, dtype=DT)
    base = model0.init(_gen(7))

    def alpha_fwd(s: torch.Tensor) -> tuple[Any, Any]:
        (w1, b1), _, (w2, b2) = base
        return ((s * w1, b1), (), (s * w2, b2)), None

    def alpha_bwd(_: Any, dp: Any) -> torch.Tensor:
        (dw1, _), _, (dw2, _) = dp
        (w1, _), _, (w2, _) = base
        return (dw1 * w1).sum() + (dw2 * w2).sum()

    model = model0.reparam(FunctionLens(alpha_fwd, alpha_bwd, "scale"))
    s, x, dy = torch.tensor(0.7, dtype=DT), _rand(5, 3, seed=1), _rand(5, 2, seed=2)
    ds, _ = model.put(s, x, dy)

    s_ = s.clone().requires_grad_()
    (w1, b1), _, (w2, b2) = base
    y = torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(x, s_ * w1, b1)), s_ * w2, b2)
    (gs,) = torch.autograd.grad(y, s_, dy)
    torch.testing.assert_close(ds, gs)


# ---------------------------------------------------------------------------------------------
# Each forward runs exactly once per put, however deep the composite


class _CountingLens(Lens):
    """Wraps a lens and counts its forward and backward calls."""

    def __init__(self, inner: Lens, counts: dict[str, int], key: str):
        self.inner, self.counts, self.key = inner, counts, key
        self.name, self.dom, self.cod = key, inner.dom, inner.cod

    def forward(self, a: Any) -> tuple[Any, Any]:
        self.counts["fwd:" + self.key] = self.counts.get("fwd:" + self.key, 0) + 1
        return self.inner.forward(a)

    def backward(self, residual: Any, db: Any) -> Any:
        self.counts["bwd:" + self.key] = self.counts.get("bwd:" + self.key, 0) + 1
        return self.inner.backward(residual, db)


class _CountingPara(Para):
    """Wraps a parametric lens and counts its forward and backward calls."""

    def __init__(self, inner: Para, counts: dict[str, int], key: str):
        self.inner, self.counts, self.key = inner, counts, key
        self.name, self.dom, self.cod = key, inner.dom, inner.cod

    def init(self, generator: Any = None) -> Any:
        return self.inner.init(generator)

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        self.counts["fwd:" + self.key] = self.counts.get("fwd:" + self.key, 0) + 1
        return self.inner.forward(params, a)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        self.counts["bwd:" + self.key] = self.counts.get("bwd:" + self.key, 0) + 1
        return self.inner.backward(residual, db, need_input_grad)


def test_deep_lens_composite_runs_each_forward_once_per_put() -> None:
    counts: dict[str, int] = {}
    parts = [_CountingLens(tanh(), counts, f"t{i}") for i in range(12)]
    # Nest the composition unevenly: ((t0 >> t1) >> (t2 >> (t3 >> ...))) ...
    deep = parts[0] >> parts[1]
    tail = parts[-1]
    for p in reversed(parts[2:-1]):
        tail = p >> tail
    deep = deep >> tail
    deep.put(_rand(2, 3), _rand(2, 3, seed=1))
    assert counts == {f"{kind}:t{i}": 1 for i in range(12) for kind in ("fwd", "bwd")}


def test_deep_parametric_composite_runs_each_forward_once_per_put() -> None:
    counts: dict[str, int] = {}
    layers = [_CountingPara(linear(4, 4, dtype=DT), counts, f"l{i}") for i in range(6)]
    acts = [_CountingLens(tanh(4), counts, f"a{i}") for i in range(5)]
    model: Para = layers[0]
    for act, layer in zip(acts, layers[1:]):
        model = model >> (act >> layer)
    params = model.init(_gen())
    dp, dx = model.put(params, _rand(3, 4), _rand(3, 4, seed=1))
    assert len(dp) == 11 and dx is not None
    expected = {f"{kind}:{k}": 1 for k in [f"l{i}" for i in range(6)] + [f"a{i}" for i in range(5)] for kind in ("fwd", "bwd")}
    assert counts == expected


# ---------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    "make, first, second",
    [
        (lambda: linear(4, 20) >> linear(10, 3), "linear(4, 20)", "linear(10, 3)"),
        (lambda: linear(4, 20) >> relu(10), "linear(4, 20)", "relu"),
        (lambda: sigmoid(3) >> tanh(4), "sigmoid", "tanh"),
        (lambda: (linear(2, 3) >> relu(3)) >> linear(5, 1), "linear(2, 3) >> relu", "linear(5, 1)"),
    ],
)
def test_type_mismatch_names_both_lenses(make: Any, first: str, second: str) -> None:
    with pytest.raises(LensTypeError) as info:
        make()
    message = str(info.value)
    assert f"{first} outputs " in message and f"but {second} expects " in message
    assert isinstance(info.value, ProgsynthError)


def test_real_and_bits_do_not_compose() -> None:
    boolean = FunctionLens(lambda a: (a, None), lambda r, d: d, "wires", Bits(8), Bits(8))
    with pytest.raises(LensTypeError, match=r"sigmoid outputs R\^8 but wires expects Z2\^8"):
        sigmoid(8) >> boolean


def test_shape_polymorphic_lenses_compose_with_any_width() -> None:
    model = linear(4, 20) >> relu() >> linear(20, 3)
    assert model.dom == Real(4) and model.cod == Real(3)
