"""Lenses and parametric lenses, with sequential (``>>``) and parallel (``@``) composition.

A lens A → B is a pair (get: A → B, put: A × B' → A'). Composing lenses textbook-style makes
``put`` of a composite call ``get`` of its first part again, so a depth-n chain recomputes forward
passes O(n²) times (numeric-optics-python's cost). Here every lens splits its work as

    forward(a)          -> (b, residual)     # get, keeping what put will need
    backward(residual, b') -> a'             # put, from the residual, no recomputation

and ``get``/``put`` are derived from the pair. Sequential composition keeps the residuals of every
part, so the chain rule ``(f;g).put(a, c') = f.put(a, g.put(f.get(a), c'))`` runs each forward
pass exactly once.

A parametric lens (``Para``) is a lens P × A → B whose put returns (P', A'). Composing (P, f) then
(Q, g) gives parameters ``(p, q)`` (a tuple in composition order; longer chains flatten to one
tuple ``(p1, p2, p3, ...)``). Parameters are pytrees of tensors (tuples, lists, dicts), which is
what the optimizer lenses in ``optim.py`` update.

Parameter names: a composite's parameters are nested tuples in composition order, while a model's
checkpoints name each tensor. ``regroup`` is the lens between the two (a dict name → tensor, or a
flat tuple, on one side; the composite's nested tuples on the other), so ``composite.reparam(
regroup(...))`` is the same composite over named parameters: a model built by composition keeps
the parameter names (and so the checkpoints) of the module it replaces.

Boundaries carry a ``Space`` (a field and an example shape) so that composing lenses whose types do
not match fails at composition time with a message naming both lenses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from progsynth.errors import ConfigError, LensTypeError

__all__ = ["Space", "ANY", "Real", "Bits", "Lens", "Para", "Identity", "FunctionLens", "lift", "regroup"]


@dataclass(frozen=True)
class Space:
    """The type of a lens boundary: a field (``"R"`` or ``"Z2"``) and the shape of one example.

    ``None`` in either place means "any"; two spaces are compatible when every part both specify
    agrees.
    """

    field: str | None = None
    shape: tuple[int, ...] | None = None

    def compatible(self, other: Space) -> bool:
        """Whether data of this space may flow into a lens expecting ``other``."""
        if self.field is not None and other.field is not None and self.field != other.field:
            return False
        if self.shape is not None and other.shape is not None and self.shape != other.shape:
            return False
        return True

    def __str__(self) -> str:
        field = self.field or "?"
        if self.shape is None:
            return f"{field}^*"
        return f"{field}^{'x'.join(str(s) for s in self.shape) or '1'}"


ANY = Space()


def Real(*shape: int) -> Space:
    """The space of real vectors (torch tensors) with the given per-example shape."""
    return Space("R", tuple(shape) if shape else None)


def Bits(*shape: int) -> Space:
    """The space of Boolean vectors over Z2 (bit-packed words) with the given number of wires."""
    return Space("Z2", tuple(shape) if shape else None)


def _check_composable(first: Lens | Para, second: Lens | Para) -> None:
    if not first.cod.compatible(second.dom):
        raise LensTypeError(
            f"cannot compose {first.name} >> {second.name}: {first.name} outputs {first.cod} "
            f"but {second.name} expects {second.dom}"
        )


class Lens:
    """A lens A → B given by ``forward(a) -> (b, residual)`` and ``backward(residual, b') -> a'``."""

    name: str = "lens"
    dom: Space = ANY
    cod: Space = ANY

    def forward(self, a: Any) -> tuple[Any, Any]:
        """Compute get(a) and the residual that ``backward`` needs."""
        raise NotImplementedError

    def backward(self, residual: Any, db: Any) -> Any:
        """Compute put from a residual of ``forward`` and a change b' of the output."""
        raise NotImplementedError

    def get(self, a: Any) -> Any:
        """The forward map A → B."""
        return self.forward(a)[0]

    def put(self, a: Any, db: Any) -> Any:
        """The reverse map A × B' → A' (one forward pass, then the backward pass)."""
        return self.backward(self.forward(a)[1], db)

    def __rshift__(self, other: Lens | Para) -> Lens | Para:
        if isinstance(other, Para):
            return lift(self) >> other
        _check_composable(self, other)
        return _SequentialLens(_flatten(self, _SequentialLens) + _flatten(other, _SequentialLens))

    def __matmul__(self, other: Lens | Para) -> Lens | Para:
        if isinstance(other, Para):
            return lift(self) @ other
        return _ParallelLens(self, other)

    def __repr__(self) -> str:
        return f"{self.name}: {self.dom} -> {self.cod}"


class Identity(Lens):
    """The identity lens: get = id, put(a, a') = a'."""

    def __init__(self, space: Space = ANY):
        self.name, self.dom, self.cod = "id", space, space

    def forward(self, a: Any) -> tuple[Any, Any]:
        return a, None

    def backward(self, residual: Any, db: Any) -> Any:
        return db


class FunctionLens(Lens):
    """A lens from a forward function returning (b, residual) and a backward function."""

    def __init__(
        self,
        forward: Callable[[Any], tuple[Any, Any]],
        backward: Callable[[Any, Any], Any],
        name: str = "fn",
        dom: Space = ANY,
        cod: Space = ANY,
    ):
        self._forward, self._backward = forward, backward
        self.name, self.dom, self.cod = name, dom, cod

    def forward(self, a: Any) -> tuple[Any, Any]:
        return self._forward(a)

    def backward(self, residual: Any, db: Any) -> Any:
        return self._backward(residual, db)


def _flatten(lens: Any, kind: type) -> list:
    return list(lens.parts) if isinstance(lens, kind) else [lens]


class _SequentialLens(Lens):
    def __init__(self, parts: list[Lens]):
        self.parts = tuple(parts)
        self.name = " >> ".join(p.name for p in parts)
        self.dom, self.cod = parts[0].dom, parts[-1].cod

    def forward(self, a: Any) -> tuple[Any, Any]:
        residuals = []
        for part in self.parts:
            a, r = part.forward(a)
            residuals.append(r)
        return a, residuals

    def backward(self, residual: Any, db: Any) -> Any:
        for part, r in zip(reversed(self.parts), reversed(residual)):
            db = part.backward(r, db)
        return db


class _ParallelLens(Lens):
    def __init__(self, left: Lens, right: Lens):
        self.left, self.right = left, right
        self.name = f"({left.name} @ {right.name})"

    def forward(self, a: Any) -> tuple[Any, Any]:
        (b1, r1), (b2, r2) = self.left.forward(a[0]), self.right.forward(a[1])
        return (b1, b2), (r1, r2)

    def backward(self, residual: Any, db: Any) -> Any:
        return self.left.backward(residual[0], db[0]), self.right.backward(residual[1], db[1])


class Para:
    """A parametric lens (P, f): ``forward(p, a) -> (b, residual)`` and
    ``backward(residual, b', need_input_grad=True) -> (p', a')``.

    ``need_input_grad=False`` lets the first layer of a model skip the input's reverse derivative
    (the data needs none), which a training step never uses.
    """

    name: str = "para"
    dom: Space = ANY
    cod: Space = ANY

    def init(self, generator: Any = None) -> Any:
        """Fresh parameters (a pytree of tensors); parameter-free lenses return ``()``."""
        return ()

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        raise NotImplementedError

    def get(self, params: Any, a: Any) -> Any:
        """The forward map P × A → B."""
        return self.forward(params, a)[0]

    def put(self, params: Any, a: Any, db: Any) -> tuple[Any, Any]:
        """The reverse map P × A × B' → P' × A'."""
        return self.backward(self.forward(params, a)[1], db)

    def __rshift__(self, other: Lens | Para) -> Para:
        other = lift(other) if isinstance(other, Lens) else other
        _check_composable(self, other)
        return _SequentialPara(_flatten(self, _SequentialPara) + _flatten(other, _SequentialPara))

    def __matmul__(self, other: Lens | Para) -> Para:
        other = lift(other) if isinstance(other, Lens) else other
        return _ParallelPara(self, other)

    def reparam(self, alpha: Lens, name: str | None = None, init: Callable[..., Any] | None = None) -> Para:
        """Reparametrise by a lens α: Q → P, giving (Q, f ∘ (α.get × id)); put maps p' back by α.put.

        α need not be invertible, so the result cannot derive fresh parameters in Q from the inner
        ``init``: ``init(generator)``, when given, is what its ``init`` returns (else ``()``)."""
        return _Reparametrised(self, alpha, name, init)

    def __repr__(self) -> str:
        return f"{self.name}: {self.dom} -> {self.cod}"


def lift(lens: Lens) -> Para:
    """View a lens as a parametric lens with no parameters (P = 1, parameters ``()``)."""
    return _Lifted(lens)


class _Lifted(Para):
    def __init__(self, lens: Lens):
        self.lens = lens
        self.name, self.dom, self.cod = lens.name, lens.dom, lens.cod

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        return self.lens.forward(a)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        return (), (self.lens.backward(residual, db) if need_input_grad else None)


class _SequentialPara(Para):
    def __init__(self, parts: list[Para]):
        self.parts = tuple(parts)
        self.name = " >> ".join(p.name for p in parts)
        self.dom, self.cod = parts[0].dom, parts[-1].cod

    def init(self, generator: Any = None) -> tuple:
        return tuple(part.init(generator) for part in self.parts)

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        residuals = []
        for part, p in zip(self.parts, params):
            a, r = part.forward(p, a)
            residuals.append(r)
        return a, residuals

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        grads = [None] * len(self.parts)
        for i in range(len(self.parts) - 1, -1, -1):
            grads[i], db = self.parts[i].backward(residual[i], db, need_input_grad or i > 0)
        return tuple(grads), db


class _ParallelPara(Para):
    def __init__(self, left: Para, right: Para):
        self.left, self.right = left, right
        self.name = f"({left.name} @ {right.name})"

    def init(self, generator: Any = None) -> tuple:
        return self.left.init(generator), self.right.init(generator)

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        (b1, r1), (b2, r2) = self.left.forward(params[0], a[0]), self.right.forward(params[1], a[1])
        return (b1, b2), (r1, r2)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        p1, a1 = self.left.backward(residual[0], db[0], need_input_grad)
        p2, a2 = self.right.backward(residual[1], db[1], need_input_grad)
        return (p1, p2), ((a1, a2) if need_input_grad else None)


class _Reparametrised(Para):
    def __init__(self, inner: Para, alpha: Lens, name: str | None, init: Callable[..., Any] | None = None):
        self.inner, self.alpha, self._init = inner, alpha, init
        self.name = name or f"{inner.name}[{alpha.name}]"
        self.dom, self.cod = inner.dom, inner.cod

    def init(self, generator: Any = None) -> Any:
        return () if self._init is None else self._init(generator)

    def forward(self, params: Any, a: Any) -> tuple[Any, Any]:
        p, r_alpha = self.alpha.forward(params)
        b, r_inner = self.inner.forward(p, a)
        return b, (r_alpha, r_inner)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        dp, da = self.inner.backward(residual[1], db, need_input_grad)
        return self.alpha.backward(residual[0], dp), da


def _keys(structure: Any) -> list:
    """The leaves (keys) of a nested tuple, depth first."""
    if isinstance(structure, tuple):
        return [key for part in structure for key in _keys(part)]
    return [structure]


def _fill(structure: Any, params: Any) -> Any:
    if isinstance(structure, tuple):
        return tuple(_fill(part, params) for part in structure)
    return params[structure]


def _leaves(structure: Any, tree: Any, out: list) -> list:
    if isinstance(structure, tuple):
        for part, sub in zip(structure, tree):
            _leaves(part, sub, out)
    else:
        out.append(tree)
    return out


class _Regroup(Lens):
    def __init__(self, structure: tuple):
        keys = _keys(structure)
        if not isinstance(structure, tuple) or len(set(keys)) != len(keys) or \
                not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in keys):
            raise ConfigError(f"regroup expects a nested tuple of distinct names (str) or positions (int), "
                                f"got {structure!r}")
        self.structure, self.keys = structure, tuple(keys)
        self.positional = all(isinstance(k, int) for k in keys)
        if self.positional and sorted(keys) != list(range(len(keys))):
            raise ConfigError(f"regroup positions must be 0 ... {len(keys) - 1}, each once, got {structure!r}")
        self._key_set = frozenset(keys)
        self.name = f"regroup{structure!r}"

    def forward(self, a: Any) -> tuple[Any, Any]:
        if self.positional:
            if not isinstance(a, (tuple, list)) or len(a) != len(self.keys):
                got = f"{len(a)} entries" if isinstance(a, (tuple, list)) else type(a).__name__
                raise LensTypeError(f"{self.name} expects a tuple of {len(self.keys)} parameters, got {got}")
            return _fill(self.structure, a), None
        if not isinstance(a, dict) or a.keys() != self._key_set:
            got = sorted(a) if isinstance(a, dict) else type(a).__name__
            raise LensTypeError(f"{self.name} expects parameters as a dict with names {sorted(self.keys)}, got {got}")
        return _fill(self.structure, a), tuple(a)

    def backward(self, residual: Any, db: Any) -> Any:
        by_key = dict(zip(self.keys, _leaves(self.structure, db, [])))
        if residual is None:
            return tuple(by_key[i] for i in range(len(self.keys)))
        return {key: by_key[key] for key in residual}


def regroup(structure: tuple) -> Lens:
    """The lens from flat parameters to a composite's nested ones, for ``Para.reparam``.

    ``structure`` is the composite's parameter pytree (nested tuples) with each tensor replaced by
    its key in the flat container: a name, for a dict name → tensor, or a position, for a tuple.
    get fills the structure from the container; put sends the composite's p' (shaped like
    ``structure``) back to a container with the same keys in the same order, so optimizers see
    parameters and p' with one tree structure. For example the quadratic MLP
    ``linear >> square >> linear`` over ``{"W_in": ..., "W_out": ...}`` is reparametrised by
    ``regroup((("W_in",), (), ("W_out",)))``. No tensor is copied either way.
    """
    return _Regroup(structure)
