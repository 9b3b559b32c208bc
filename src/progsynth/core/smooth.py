"""The reverse-derivative category of smooth maps on torch tensors (REFERENCE §1).

Over the reals the reverse derivative of f is R[f](x, v) = J_f(x)ᵀ v, a vector-Jacobian product, so
every smooth map is a lens whose put is a vjp. Two ways in:

- **Any function or module.** ``from_function(fn)`` and ``from_module(module)`` run the forward
  pass under ``torch.func.vjp`` and keep its closure as the residual; ``backward`` calls it. This
  is how models built from arbitrary torch code (attention, embeddings, ...) enter the core.
- **Primitives with hand-written reverse derivatives** (no autograd inside): ``linear``, ``bias``,
  ``embedding`` (token ids → rows of a table, concatenated) and the activations ``relu``,
  ``sigmoid``, ``tanh``, ``gelu`` (exact erf form) and ``square`` (x², for the quadratic MLP).
  Each keeps only the tensors its backward needs, and ``linear`` skips the input's derivative
  when ``need_input_grad`` is False, so a composite such as ``mlp([784, 256, 10])`` costs the same
  as torch autograd and is readable in one sitting. The activations' backwards call the one fused
  derivative kernel torch's autograd would (``threshold_backward``, ``gelu_backward``, ...): the
  formula is written out in each docstring, and one kernel reads and writes memory once where the
  formula spelled as tensor expressions makes several passes (the gap that made the composite
  models slower than autograd). The models of ``progsynth.models`` (the quadratic MLP, the embedding
  MLP, deep linear networks) are composites of these primitives.

Types: ``linear(n_in, n_out)`` goes ``Real(n_in) → Real(n_out)``, so ``linear(4, 20) >>
linear(10, 3)`` fails at composition time naming both lenses. Activations are shape-polymorphic
(``Real()``) unless given a width (``relu(20)``); ``mlp`` gives them one so its whole chain is
checked. Feeding anything but a floating-point tensor to a smooth lens raises ``LensTypeError``
naming the lens and what it expected.

Parameters are pytrees of tensors: ``linear`` has ``(W, b)`` with W of shape (out, in) like
``nn.Linear`` (or ``(W,)`` without bias; ``layout="in_out"`` stores W as (in, out), x ↦ x W + b,
the convention of the models here), ``bias`` has ``(b,)``, ``embedding`` has ``(W,)`` of shape
(vocab, width), activations have none, and ``from_module`` has a dict name → tensor.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp

from progsynth.core.lens import ANY, Lens, Para, Real, Space
from progsynth.errors import ConfigError, LensTypeError

__all__ = [
    "from_function",
    "from_module",
    "linear",
    "bias",
    "embedding",
    "LAYOUTS",
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "square",
    "mlp",
    "ACTIVATIONS",
]


def _require_float_tensor(lens_name: str, x: Any) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor, else raise naming the lens and what it got."""
    if not isinstance(x, torch.Tensor):
        raise LensTypeError(
            f"{lens_name} expects a floating-point torch.Tensor, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if hasattr(x, "dtype") else "")
        )
    if not x.dtype.is_floating_point:
        raise LensTypeError(f"{lens_name} expects a floating-point torch.Tensor, got dtype {x.dtype}")
    return x


def _require_positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")
    return value


def _require_float_dtype(what: str, dtype: Any) -> torch.dtype:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ConfigError(f"{what} must be a floating torch.dtype, got {dtype!r}")
    return dtype


# ---------------------------------------------------------------------------------------------
# Any function or module: the residual is the vjp closure.


class _FunctionVJP(Lens):
    """A tensor function as a lens; forward keeps ``torch.func.vjp``'s closure as the residual."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str, dom: Space, cod: Space):
        self.fn = fn
        self.name, self.dom, self.cod = name, dom, cod

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        return vjp(self.fn, _require_float_tensor(self.name, a))

    def backward(self, residual: Any, db: torch.Tensor) -> torch.Tensor:
        return residual(db)[0]


def from_function(
    fn: Callable[[torch.Tensor], torch.Tensor],
    name: str | None = None,
    dom: Space = Real(),
    cod: Space = Real(),
) -> Lens:
    """Any differentiable tensor function A → B as a lens whose put is its vjp.

    ``fn`` must be a pure function of one floating-point tensor (``torch.func`` transforms it).
    ``dom``/``cod`` type its boundaries for composition checks; the name defaults to the
    function's ``__name__``.
    """
    if not callable(fn):
        raise ConfigError(f"from_function expects a callable, got {type(fn).__name__}")
    return _FunctionVJP(fn, name or getattr(fn, "__name__", "fn"), dom, cod)


class _ModuleVJP(Para):
    """An ``nn.Module`` as a parametric lens over its parameters (a dict name → tensor)."""

    def __init__(self, module: nn.Module, name: str, dom: Space, cod: Space):
        self.module = module
        self.name, self.dom, self.cod = name, dom, cod

    def init(self, generator: Any = None) -> dict[str, torch.Tensor]:
        """Detached copies of the module's current parameters. ``generator`` is ignored: the
        module's own initialisation already ran when it was built."""
        return {k: v.detach().clone() for k, v in self.module.named_parameters()}

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        if not isinstance(params, dict):
            raise LensTypeError(
                f"{self.name} expects its parameters as a dict name -> tensor, got {type(params).__name__}"
            )
        if not isinstance(a, torch.Tensor):
            raise LensTypeError(f"{self.name} expects a torch.Tensor input, got {type(a).__name__}")
        buffers = dict(self.module.named_buffers())
        if a.dtype.is_floating_point:
            return vjp(lambda p, x: functional_call(self.module, (p, buffers), (x,)), params, a)
        # Integer inputs (token indices) have no reverse derivative: differentiate the parameters only.
        out, pullback = vjp(lambda p: functional_call(self.module, (p, buffers), (a,)), params)
        return out, lambda db: (*pullback(db), None)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        dparams, da = residual(db)
        return dparams, (da if need_input_grad else None)


def from_module(module: nn.Module, name: str | None = None, dom: Space = ANY, cod: Space = ANY) -> Para:
    """Any ``nn.Module`` as a parametric lens P × A → B whose put is a vjp over (P, A).

    Parameters are a dict name → tensor (``init()`` returns detached copies of the module's
    current ones); buffers are read from the module as they are at each call. The module itself
    is never modified: forward runs ``torch.func.functional_call`` with the given parameters.
    Integer inputs (token indices) are allowed and get no reverse derivative (``None``).
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"from_module expects a torch.nn.Module, got {type(module).__name__}")
    return _ModuleVJP(module, name or type(module).__name__, dom, cod)


# ---------------------------------------------------------------------------------------------
# Primitives with hand-written reverse derivatives.


LAYOUTS = ("out_in", "in_out")
"""How ``linear`` stores W: ``"out_in"`` (out, in) as ``nn.Linear``, y = x Wᵀ + b; ``"in_out"``
(in, out), y = x W + b, as the models of ``progsynth.models`` (and TransformerLens) store it."""


class Linear(Para):
    """x ↦ x Wᵀ + b on the last axis; parameters ``(W, b)`` (or ``(W,)``) with W of shape (out, in).

    R[linear]((W, b), x, dy) = ((dyᵀ x, Σ dy), dy W), summing over every leading (batch) axis.
    With ``layout="in_out"`` W is stored transposed, (in, out), and x ↦ x W + b: the same map and
    R = ((xᵀ dy, Σ dy), dy Wᵀ), each product computed in the layout it is stored in (no copy).
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True, dtype: torch.dtype = torch.float32,
                 layout: str = "out_in"):
        self.n_in = _require_positive_int("linear n_in", n_in)
        self.n_out = _require_positive_int("linear n_out", n_out)
        self.has_bias, self.dtype = bool(bias), _require_float_dtype("linear dtype", dtype)
        if layout not in LAYOUTS:
            raise ConfigError(f"linear layout must be one of {list(LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.transposed = layout == "in_out"
        self.weight_shape = (n_in, n_out) if self.transposed else (n_out, n_in)
        self.name = f"linear({n_in}, {n_out})"
        self.dom, self.cod = Real(n_in), Real(n_out)

    def init(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Uniform(±1/√n_in) weights and bias, nn.Linear's default, drawn from ``generator``."""
        bound = 1.0 / math.sqrt(self.n_in)
        weight = torch.empty(self.weight_shape, dtype=self.dtype).uniform_(-bound, bound, generator=generator)
        if not self.has_bias:
            return (weight,)
        return weight, torch.empty(self.n_out, dtype=self.dtype).uniform_(-bound, bound, generator=generator)

    def forward(self, params: Any, a: Any) -> tuple[torch.Tensor, Any]:
        x = _require_float_tensor(self.name, a)
        if x.dim() == 0 or x.shape[-1] != self.n_in:
            raise LensTypeError(f"{self.name} expects inputs of shape (..., {self.n_in}), got {tuple(x.shape)}")
        weight = params[0]
        if weight.shape != self.weight_shape or len(params) != 1 + self.has_bias:
            raise LensTypeError(
                f"{self.name} expects parameters (W{', b' if self.has_bias else ''}) with W of shape "
                f"{self.weight_shape}, got {len(params)} tensor(s) with W of shape {tuple(weight.shape)}"
            )
        if not self.transposed:
            y = F.linear(x, weight, params[1] if self.has_bias else None)
        elif self.has_bias:
            y = torch.addmm(params[1], x, weight) if x.dim() == 2 else x.matmul(weight) + params[1]
        else:
            y = x.matmul(weight)
        return y, (x, weight)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        x, weight = residual
        dy = db.reshape(-1, self.n_out)
        if self.transposed:
            dweight = x.reshape(-1, self.n_in).t().mm(dy)
            dx = db.matmul(weight.t()) if need_input_grad else None
        else:
            dweight = dy.t().mm(x.reshape(-1, self.n_in))
            dx = db.matmul(weight) if need_input_grad else None
        return ((dweight, dy.sum(0)) if self.has_bias else (dweight,)), dx


class Bias(Para):
    """x ↦ x + b on the last axis; parameters ``(b,)``, initialised to zero."""

    def __init__(self, n: int, dtype: torch.dtype = torch.float32):
        self.n = _require_positive_int("bias n", n)
        self.dtype = _require_float_dtype("bias dtype", dtype)
        self.name = f"bias({n})"
        self.dom = self.cod = Real(n)

    def init(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor]:
        return (torch.zeros(self.n, dtype=self.dtype),)

    def forward(self, params: Any, a: Any) -> tuple[torch.Tensor, Any]:
        x = _require_float_tensor(self.name, a)
        if x.dim() == 0 or x.shape[-1] != self.n:
            raise LensTypeError(f"{self.name} expects inputs of shape (..., {self.n}), got {tuple(x.shape)}")
        return x + params[0], None

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        return (db.reshape(-1, self.n).sum(0),), (db if need_input_grad else None)


class Embedding(Para):
    """Integer token ids (N, ≥ k) ↦ the rows of a table W (vocab, width) for the first k columns,
    concatenated: (N, k · width). Parameters ``(W,)``, initialised N(0, 1) as ``nn.Embedding``.

    The map is linear in W with a one-hot matrix, so R[embedding](W, t, dy) adds each example's
    slice of dy into the row it read (a scatter-add, ``index_add``); token ids have no derivative
    (the input's is ``None``). Columns past k are not read, so the modular task's ``=`` can stay in
    the token tensor.
    """

    def __init__(self, vocab: int, width: int, n_positions: int = 1, dtype: torch.dtype = torch.float32):
        self.vocab = _require_positive_int("embedding vocab", vocab)
        self.width = _require_positive_int("embedding width", width)
        self.n_positions = _require_positive_int("embedding n_positions", n_positions)
        self.dtype = _require_float_dtype("embedding dtype", dtype)
        self.name = f"embedding({vocab}, {width}, positions={n_positions})"
        self.dom, self.cod = ANY, Real(n_positions * width)

    def init(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor]:
        return (torch.randn(self.vocab, self.width, generator=generator, dtype=self.dtype),)

    def forward(self, params: Any, a: Any) -> tuple[torch.Tensor, Any]:
        if not isinstance(a, torch.Tensor) or a.dtype.is_floating_point or a.dtype == torch.bool \
                or a.dim() != 2 or a.shape[1] < self.n_positions:
            got = f"{tuple(a.shape)} {a.dtype}" if isinstance(a, torch.Tensor) else type(a).__name__
            raise LensTypeError(f"{self.name} expects integer token ids (N, >= {self.n_positions}), got {got}")
        weight = params[0]
        if len(params) != 1 or weight.shape != (self.vocab, self.width):
            raise LensTypeError(f"{self.name} expects parameters (W,) with W of shape ({self.vocab}, {self.width}), "
                                f"got {len(params)} tensor(s) with W of shape {tuple(weight.shape)}")
        index = (a if a.shape[1] == self.n_positions else a[:, : self.n_positions]).reshape(-1)
        y = weight.index_select(0, index).view(a.shape[0], self.n_positions * self.width)
        return y, index

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        dweight = db.new_zeros(self.vocab, self.width).index_add_(0, residual, db.reshape(-1, self.width))
        return (dweight,), None


class _Elementwise(Lens):
    """An elementwise activation. Shape-polymorphic (``Real()``) unless given a per-example shape."""

    kind = "elementwise"

    def __init__(self, *shape: int):
        self.name = self.kind
        self.dom = self.cod = Real(*shape)


class ReLU(_Elementwise):
    """max(x, 0); R = dy where the output is positive, else 0 (0 at x = 0, as torch): one pass of
    ``threshold_backward`` over the kept output."""

    kind = "relu"

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        y = torch.relu(_require_float_tensor(self.name, a))
        return y, y

    def backward(self, residual: Any, db: Any) -> torch.Tensor:
        return torch.ops.aten.threshold_backward(db, residual, 0)


class Sigmoid(_Elementwise):
    """σ(x) = 1/(1 + e^−x); R = dy σ(1 − σ)."""

    kind = "sigmoid"

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        y = torch.sigmoid(_require_float_tensor(self.name, a))
        return y, y

    def backward(self, residual: Any, db: Any) -> torch.Tensor:
        return torch.ops.aten.sigmoid_backward(db, residual)


class Tanh(_Elementwise):
    """tanh(x); R = dy (1 − tanh²)."""

    kind = "tanh"

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        y = torch.tanh(_require_float_tensor(self.name, a))
        return y, y

    def backward(self, residual: Any, db: Any) -> torch.Tensor:
        return torch.ops.aten.tanh_backward(db, residual)


class GELU(_Elementwise):
    """Exact GELU x Φ(x) with Φ the standard normal CDF; R = dy (Φ(x) + x φ(x)), in one pass of
    ``gelu_backward``."""

    kind = "gelu"

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        x = _require_float_tensor(self.name, a)
        return F.gelu(x), x

    def backward(self, residual: Any, db: Any) -> torch.Tensor:
        return torch.ops.aten.gelu_backward(db, residual)


class Square(_Elementwise):
    """x²; R = 2 x dy (the product first, then doubled in place: two passes, not three). The
    activation of Gromov's quadratic MLP."""

    kind = "square"

    def forward(self, a: Any) -> tuple[torch.Tensor, Any]:
        x = _require_float_tensor(self.name, a)
        return x * x, x

    def backward(self, residual: Any, db: Any) -> torch.Tensor:
        return (residual * db).mul_(2.0)


def linear(n_in: int, n_out: int, bias: bool = True, dtype: torch.dtype = torch.float32,
           layout: str = "out_in") -> Linear:
    """The affine map R^n_in → R^n_out as a parametric lens with hand-written reverse derivative;
    ``layout`` says how W is stored (``LAYOUTS``: (out, in) as nn.Linear, or (in, out))."""
    return Linear(n_in, n_out, bias, dtype, layout)


def bias(n: int, dtype: torch.dtype = torch.float32) -> Bias:
    """Adding a learned vector b ∈ R^n (initialised to zero) as a parametric lens."""
    return Bias(n, dtype)


def embedding(vocab: int, width: int, n_positions: int = 1, dtype: torch.dtype = torch.float32) -> Embedding:
    """A learned table of ``vocab`` rows of ``width`` as a parametric lens: the first
    ``n_positions`` token ids of each example ↦ their rows, concatenated (``Embedding``)."""
    return Embedding(vocab, width, n_positions, dtype)


def relu(*shape: int) -> ReLU:
    """The ReLU lens; ``relu(20)`` types it ``Real(20) → Real(20)``, ``relu()`` any shape."""
    return ReLU(*shape)


def sigmoid(*shape: int) -> Sigmoid:
    """The logistic sigmoid lens; optional per-example shape as for ``relu``."""
    return Sigmoid(*shape)


def tanh(*shape: int) -> Tanh:
    """The tanh lens; optional per-example shape as for ``relu``."""
    return Tanh(*shape)


def gelu(*shape: int) -> GELU:
    """The exact (erf) GELU lens, matching ``torch.nn.GELU()``; optional shape as for ``relu``."""
    return GELU(*shape)


def square(*shape: int) -> Square:
    """The elementwise square lens x ↦ x²; optional shape as for ``relu``."""
    return Square(*shape)


ACTIVATIONS: dict[str, Callable[..., Lens]] = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "square": square,
}
"""The activations ``mlp`` accepts, by name."""


def mlp(
    widths: list[int] | tuple[int, ...],
    activation: str = "relu",
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Para:
    """A multilayer perceptron ``linear >> act >> linear >> ... >> linear`` (no activation on the
    output), e.g. ``mlp([4, 20, 3], "sigmoid")``. Parameters are a tuple with one entry per part:
    ``(W, b)`` for each linear layer and ``()`` for each activation.
    """
    if not isinstance(widths, (list, tuple)) or len(widths) < 2:
        raise ConfigError(f"mlp widths must be a list of at least two layer widths, got {widths!r}")
    for w in widths:
        _require_positive_int("mlp width", w)
    if activation not in ACTIVATIONS:
        raise ConfigError(f"mlp activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    model: Para = linear(widths[0], widths[1], bias, dtype)
    for n_in, n_out in zip(widths[1:-1], widths[2:]):
        model = model >> ACTIVATIONS[activation](n_in) >> linear(n_in, n_out, bias, dtype)
    model.name = f"mlp({'-'.join(str(w) for w in widths)}, {activation})"
    return model
