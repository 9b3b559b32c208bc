"""Minimal equivalent network: remove every hidden unit a known degeneracy makes redundant on the data.

``compress(model, x)`` returns a smaller model of the same family (the same class with a smaller
config, or an ``nn.Sequential`` with resized ``nn.Linear`` layers) that computes the same outputs on
the rows of ``x``, and the list of reductions that made each unit removable. The reducible networks
are those of Farrugia-Roberts (REFERENCE §7); for ReLU the data also kill units, and a set of
opposite-sign pairs may compute a linear map of lower rank than their number.

Supported (``SUPPORTED``): ``GromovMLP`` (x², no biases), ``EmbeddingMLP`` (ReLU or GELU, any number
of hidden layers), ``Transformer`` (its MLP layer, read at ``=``: W_in, b_in, W_out, b_out; the MLP
output reaches the logits through W_U), and ``nn.Sequential`` of ``nn.Linear`` layers alternating
with ``nn.ReLU``, ``nn.Tanh`` or ``nn.GELU``, Linear first and last. Anything else is refused with
``UnsupportedOptionError``. Pre-activations on the data come from the models' ``preactivations``
method (for ``nn.Sequential``, from running its children in order), never from a re-implemented
forward pass.

Notation for one hidden layer: unit j has incoming weights w_j and bias b_j (u_j = (w_j, b_j), or
u_j = w_j without biases), pre-activation z_j = w_j·x + b_j, outgoing weights a_j (its row of the
next layer's weight, or of the read-out), and *effective* outgoing weights a_j P, where P is the
fixed linear map from the read-out to the model's output (W_U for the transformer; the identity
elsewhere). "The next bias" is the next layer's bias (b_out for the transformer).

Reductions, applied layer by layer and repeated until a whole round changes nothing (a merge can
create a zero-outgoing unit, a removal in layer i+1 can zero a unit's outgoing weights in layer i):

- ``dead`` (ReLU only): max over the data of z_j ≤ 0, so the unit outputs 0 on every row. Removed.
- ``zero-out``: max|a_j P| ≤ tolerance · max_m max|a_m P|. Removed.
- ``constant``: max|w_j| ≤ tolerance · max_m max|w_m| (zero incoming weights): the unit outputs the
  constant σ(b_j) (σ(0) = 0 for every supported activation, so without biases it outputs 0). Its
  contribution σ(b_j) a_j is added to the next bias and the unit removed; when there is no next bias
  (the embedding MLP's read-out, a bias-free Linear) only units whose contribution is exactly 0 go.
- ``duplicate``: u_j = c u_i for a scale c the activation commutes with, tested as
  max|u_j/‖u_j‖ − s u_i/‖u_i‖| ≤ tolerance (s = ±1) and, where c must be ±1, |‖u_j‖/‖u_i‖ − 1| ≤
  tolerance. Unit j is merged into i: a_i += f a_j with f = c for ReLU (c > 0: positively
  homogeneous), c² for x² (any c ≠ 0), ±1 for tanh (c = ±1: odd; Farrugia-Roberts' algorithm),
  1 for GELU (c = 1 only).
- ``linear-pairs`` (ReLU only): units i, j with u_j = −c u_i (c > 0, same test as duplicates) and
  max|a_i + c a_j| ≤ tolerance · max(max|a_i|, c max|a_j|) sum to the linear function
  a (w_i·x + b_i), a = (a_i − c a_j)/2, since relu(z) − relu(−z) = z. The k such pairs of a layer
  compute M x + β with M = Σ a_p w_pᵀ, β = Σ a_p b_p. When rank M = r < k (singular values
  > tolerance · Σ_p ‖a_p‖‖w_p‖ count), they are rebuilt from the SVD M = Σ_l s_l u_l v_lᵀ as r
  pairs (incoming ±(√s_l v_l, β_l), outgoing ±√s_l u_l) in the slots of the first r pairs, and
  β − Σ_l √s_l u_l β_l goes to the next bias. Any β_l gives the same function everywhere; β_l is
  minus the median of √s_l v_l·x on the data, so both units of a rebuilt pair fire there and
  neither is dead by accident of the choice. With no next bias, M is taken over (w, b) and the
  pairs keep the biases the SVD gives. A pair alone is not removable in a ReLU network without a
  linear path, and an opposite-sign pair whose outgoing weights do not cancel (a unit plus a linear
  term) is left alone; only removals are reported, so pairs already of full rank do not appear.
  Not reduced: units active on every row of the data, which are linear there only (a reduction
  that holds on the data alone and changes the function everywhere else, beyond what dead units
  do).
- ``negligible``, once the exact reductions above reach their fixed point: a unit is removed when
  the largest change its removal causes in any output on the data is at most
  tolerance · max|f(x)| (the original model's largest output on the data), and the total change
  from the original model also stays within that bound (removals are tried in order of their own
  change, smallest first). Each is reported with the change it caused. For the last hidden layer the
  change is exactly max_n |h_j(x_n)| · max|a_j P|; for earlier layers it is measured by running the
  model without the unit. Then the exact reductions run again.

Units are reported by their index in the original model (a rebuilt linear pair keeps its slots'
indices). A layer left with no unit keeps one inert unit (zero weights and bias, zero outgoing),
since the configs require a width ≥ 1.

Tolerance: one number, ``tolerance`` (default 1e-6), relative in every test as stated above. The
parameter tests (zero, parallel, rank) can remove a unit whose weights are not exactly degenerate,
so the result always carries ``max_output_diff``, max |f_compressed(x) − f(x)| on the data,
recomputed by running both models in the model's own dtype (in float32 that is ~1e-6 relative
from rounding alone). Every decision is taken in float64, on a float64 copy of the parameters.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from progsynth.errors import ConfigError, LensTypeError, UnsupportedOptionError
from progsynth.models.mlp import ACTIVATIONS, EmbeddingMLP, GromovMLP
from progsynth.models.transformer import Transformer

__all__ = ["Reduction", "Compressed", "compress", "KINDS", "SUPPORTED"]

KINDS = ("dead", "zero-out", "constant", "duplicate", "linear-pairs", "negligible")
"""The reductions, in the order they are tried within a layer (module docstring)."""

SUPPORTED = ("EmbeddingMLP, GromovMLP, Transformer (its MLP layer), nn.Sequential of nn.Linear "
             "alternating with nn.ReLU, nn.Tanh or nn.GELU (Linear first and last)")
"""What ``compress`` knows, as its refusal names it."""

_F64 = torch.float64


@dataclass(frozen=True)
class Reduction:
    """One step of the compression: which units of which layer went, and why."""

    layer: str
    """The hidden layer: 'mlp' (transformer), 'hidden' (Gromov), 'hidden_i' (embedding MLP), or the
    name of the Linear child whose outputs are the layer's pre-activations (nn.Sequential)."""
    kind: str
    """One of ``KINDS``."""
    units: tuple[int, ...]
    """Indices, in the original model, of the units removed."""
    into: Optional[int] = None
    """For ``duplicate``: the unit that absorbed them."""
    detail: str = ""
    """The scale of a duplicate, the rank of linear pairs, the constant folded."""
    change: Optional[float] = None
    """For ``negligible``: max |Δf| over the data that this removal caused."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "units": list(self.units)}


@dataclass(frozen=True, eq=False)
class Compressed:
    """The minimal equivalent network found by ``compress`` and how it was reached."""

    model: nn.Module
    """The compressed model: same class (smaller config) or a resized nn.Sequential, same dtype."""
    params_before: int
    """Trainable parameters of the original model."""
    params_after: int
    """Trainable parameters of the compressed model."""
    layers: tuple[str, ...]
    """The hidden layers' names (``Reduction.layer``), input side first."""
    widths_before: tuple[int, ...]
    widths_after: tuple[int, ...]
    max_output_diff: float
    """max |f_compressed(x) − f(x)| over the data, both models run in the model's dtype."""
    output_scale: float
    """max |f(x)| over the data (float64): the scale the negligible removals are measured against."""
    tolerance: float
    reductions: tuple[Reduction, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Units removed per kind (every kind in ``KINDS``, 0 when none)."""
        counts = {kind: 0 for kind in KINDS}
        for reduction in self.reductions:
            counts[reduction.kind] += len(reduction.units)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the model appears as its class name."""
        return {
            "model": type(self.model).__name__,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "layers": list(self.layers),
            "widths_before": list(self.widths_before),
            "widths_after": list(self.widths_after),
            "max_output_diff": self.max_output_diff,
            "output_scale": self.output_scale,
            "tolerance": self.tolerance,
            "counts": self.counts,
            "reductions": [r.to_dict() for r in self.reductions],
        }


# ----------------------------------------------------------------------------- the network as matrices


@dataclass
class _Layer:
    """One hidden layer in float64: incoming W (n_in, k), bias b (k,) or None, activation."""

    name: str
    kind: str
    """'relu', 'tanh', 'gelu' or 'square'."""
    fn: Callable[[torch.Tensor], torch.Tensor]
    W: torch.Tensor
    b: Optional[torch.Tensor]
    ids: list[int]
    """Original index of each current unit."""


@dataclass
class _Net:
    """The hidden layers and the read-out W_out (k_last, n_out), b_out; ``post`` maps the read-out
    linearly to the model's output (W_U for the transformer)."""

    layers: list[_Layer]
    W_out: torch.Tensor
    b_out: Optional[torch.Tensor]
    post: Optional[torch.Tensor] = None

    def outgoing(self, i: int) -> torch.Tensor:
        return self.layers[i + 1].W if i + 1 < len(self.layers) else self.W_out

    def set_outgoing(self, i: int, value: torch.Tensor) -> None:
        if i + 1 < len(self.layers):
            self.layers[i + 1].W = value
        else:
            self.W_out = value

    def effective_outgoing(self, i: int) -> torch.Tensor:
        out = self.outgoing(i)
        return out @ self.post if i + 1 == len(self.layers) and self.post is not None else out

    def next_bias(self, i: int) -> Optional[torch.Tensor]:
        return self.layers[i + 1].b if i + 1 < len(self.layers) else self.b_out

    def add_to_next_bias(self, i: int, value: torch.Tensor) -> None:
        if i + 1 < len(self.layers):
            self.layers[i + 1].b = self.layers[i + 1].b + value
        else:
            self.b_out = self.b_out + value

    def widths(self) -> tuple[int, ...]:
        return tuple(layer.W.shape[1] for layer in self.layers)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(_F64).clone()


def _square(t: torch.Tensor) -> torch.Tensor:
    return t * t


# ----------------------------------------------------------------------------- adapters per model family


class _Adapter:
    """How one model family maps to a ``_Net`` and back, and where its pre-activations come from."""

    def extract(self, model: nn.Module) -> _Net:
        raise NotImplementedError

    def build(self, model: nn.Module, net: _Net, dtype: torch.dtype) -> nn.Module:
        raise NotImplementedError

    def preactivations(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return model.preactivations(x)


def _rebuild(model: nn.Module, config: Any, overrides: dict[str, Optional[torch.Tensor]],
             dtype: torch.dtype) -> nn.Module:
    """``type(model)(config)`` with the original's parameters, ``overrides`` replacing some, the
    original's requires_grad flags and training mode. A local generator draws the throw-away
    initial weights, so the global RNG is untouched."""
    device = next(model.parameters()).device
    new = type(model)(config, generator=torch.Generator().manual_seed(0), dtype=dtype)
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    state.update({k: v.to(dtype) for k, v in overrides.items() if v is not None})
    new.load_state_dict(state)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in new.named_parameters():
        p.requires_grad_(flags.get(name, True))
    return new.to(device).train(model.training)


class _Gromov(_Adapter):
    def extract(self, model: nn.Module) -> _Net:
        layer = _Layer("hidden", "square", _square, _f64(model.W_in), None, list(range(model.config.width)))
        return _Net([layer], _f64(model.W_out), None)

    def build(self, model: nn.Module, net: _Net, dtype: torch.dtype) -> nn.Module:
        (layer,) = net.layers
        config = replace(model.config, width=layer.W.shape[1])
        return _rebuild(model, config, {"W_in": layer.W, "W_out": net.W_out}, dtype)


class _EmbeddingMLP(_Adapter):
    def extract(self, model: nn.Module) -> _Net:
        c = model.config
        if not c.hidden:
            raise UnsupportedOptionError("compress needs a hidden layer; this EmbeddingMLP has hidden=()")
        fn = ACTIVATIONS[c.activation]
        layers = [_Layer(f"hidden_{i}", c.activation, fn, _f64(getattr(model, f"W_{i}")),
                         _f64(getattr(model, f"b_{i}")), list(range(width))) for i, width in enumerate(c.hidden)]
        return _Net(layers, _f64(model.W_U), None)

    def build(self, model: nn.Module, net: _Net, dtype: torch.dtype) -> nn.Module:
        config = replace(model.config, hidden=net.widths())
        overrides: dict[str, Optional[torch.Tensor]] = {"W_U": net.W_out}
        for i, layer in enumerate(net.layers):
            overrides[f"W_{i}"], overrides[f"b_{i}"] = layer.W, layer.b
        return _rebuild(model, config, overrides, dtype)


class _Transformer(_Adapter):
    def extract(self, model: nn.Module) -> _Net:
        b_in = _f64(model.b_in) if model.b_in is not None else None
        b_out = _f64(model.b_out) if model.b_out is not None else None
        layer = _Layer("mlp", "relu", torch.relu, _f64(model.W_in), b_in, list(range(model.config.d_mlp)))
        return _Net([layer], _f64(model.W_out), b_out, post=_f64(model.W_U))

    def build(self, model: nn.Module, net: _Net, dtype: torch.dtype) -> nn.Module:
        (layer,) = net.layers
        config = replace(model.config, d_mlp=layer.W.shape[1])
        overrides = {"W_in": layer.W, "b_in": layer.b, "W_out": net.W_out, "b_out": net.b_out}
        return _rebuild(model, config, overrides, dtype)


_SEQUENTIAL_ACTIVATIONS: dict[type, str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu"}


class _Sequential(_Adapter):
    def __init__(self, model: nn.Sequential):
        children = list(model.named_children())
        for position, (_, child) in enumerate(children):
            wanted = (nn.Linear,) if position % 2 == 0 else tuple(_SEQUENTIAL_ACTIVATIONS)
            if type(child) not in wanted:
                raise UnsupportedOptionError(f"compress supports {SUPPORTED}; got nn.Sequential with "
                                             f"{type(child).__name__} at position {position}")
        if len(children) < 3 or len(children) % 2 == 0:
            raise UnsupportedOptionError(
                f"compress supports {SUPPORTED}; got nn.Sequential of {len(children)} children")
        self.children = children

    @staticmethod
    def _fn(act: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if isinstance(act, nn.GELU):
            return lambda t: F.gelu(t, approximate=act.approximate)
        return torch.relu if isinstance(act, nn.ReLU) else torch.tanh

    def extract(self, model: nn.Module) -> _Net:
        layers = []
        for position in range(0, len(self.children) - 1, 2):
            (name, linear), (_, act) = self.children[position], self.children[position + 1]
            b = _f64(linear.bias) if linear.bias is not None else None
            layers.append(_Layer(name, _SEQUENTIAL_ACTIVATIONS[type(act)], self._fn(act), _f64(linear.weight.T), b,
                                 list(range(linear.out_features))))
        last = self.children[-1][1]
        return _Net(layers, _f64(last.weight.T), _f64(last.bias) if last.bias is not None else None)

    def build(self, model: nn.Module, net: _Net, dtype: torch.dtype) -> nn.Module:
        weights = [(layer.W, layer.b) for layer in net.layers] + [(net.W_out, net.b_out)]
        modules: dict[str, nn.Module] = {}
        for position, (name, child) in enumerate(self.children):
            if position % 2:
                modules[name] = copy.deepcopy(child)
                continue
            W, b = weights[position // 2]
            linear = nn.utils.skip_init(nn.Linear, W.shape[0], W.shape[1], bias=b is not None,
                                        device=child.weight.device, dtype=dtype)
            linear.weight = nn.Parameter(W.T.to(dtype).contiguous(), requires_grad=child.weight.requires_grad)
            if b is not None:
                linear.bias = nn.Parameter(b.to(dtype), requires_grad=child.bias.requires_grad)
            modules[name] = linear
        return nn.Sequential(OrderedDict(modules)).train(model.training)

    def preactivations(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the children in order (the Sequential's own forward), keeping the hidden Linears' outputs."""
        pres = []
        children = list(model.children())
        for position, child in enumerate(children):
            x = child(x)
            if position % 2 == 0 and position < len(children) - 1:
                pres.append(x)
        return tuple(pres)


def _adapter(model: Any) -> _Adapter:
    if isinstance(model, nn.Sequential):
        return _Sequential(model)
    if isinstance(model, Transformer):
        return _Transformer()
    if isinstance(model, GromovMLP):
        return _Gromov()
    if isinstance(model, EmbeddingMLP):
        return _EmbeddingMLP()
    raise UnsupportedOptionError(f"compress supports {SUPPORTED}; got {type(model).__name__}")


# ----------------------------------------------------------------------------- the reductions


class _Log:
    """The reductions found so far."""

    def __init__(self) -> None:
        self.items: list[Reduction] = []

    def add(self, layer: _Layer, kind: str, units: list[int], **extra: Any) -> None:
        self.items.append(Reduction(layer.name, kind, tuple(layer.ids[j] for j in units), **extra))


def _inert(net: _Net, i: int) -> bool:
    """Whether layer i is the single inert placeholder unit (nothing left to reduce)."""
    layer = net.layers[i]
    return (layer.W.shape[1] == 1 and not layer.W.any() and (layer.b is None or not layer.b.any())
            and not net.outgoing(i).any())


def _remove(net: _Net, i: int, units: list[int]) -> torch.Tensor:
    """Remove ``units`` from layer i (incoming column, bias, outgoing row); returns the kept
    positions. A layer that would be left empty keeps its first unit, made inert."""
    layer = net.layers[i]
    gone = set(units)
    keep = [j for j in range(layer.W.shape[1]) if j not in gone]
    if not keep:
        keep = [units[0]]
        layer.W[:, keep[0]] = 0
        if layer.b is not None:
            layer.b[keep[0]] = 0
        net.outgoing(i)[keep[0]] = 0
    index = torch.tensor(keep, dtype=torch.int64, device=layer.W.device)
    layer.W = layer.W.index_select(1, index)
    layer.b = layer.b.index_select(0, index) if layer.b is not None else None
    net.set_outgoing(i, net.outgoing(i).index_select(0, index))
    layer.ids = [layer.ids[j] for j in keep]
    return index


def _incoming(layer: _Layer) -> torch.Tensor:
    """u_j = (w_j, b_j) as columns, (n_in (+1), k)."""
    return torch.cat([layer.W, layer.b.unsqueeze(0)]) if layer.b is not None else layer.W


def _parallel(layer: _Layer, tol: float, sign: int) -> list[tuple[int, int, float]]:
    """Pairs (i < j, c) with u_j = c u_i, sign(c) = ``sign``, by the normalised test (module docstring)."""
    U = _incoming(layer)
    norms = U.norm(dim=0)
    live = norms > 0
    V = U / torch.where(live, norms, torch.ones_like(norms))
    G = V.T @ V
    threshold = 1 - (U.shape[0] * tol * tol + 1e-12)
    close = (sign * G >= threshold) & torch.ones_like(G, dtype=torch.bool).triu(1) & live & live.unsqueeze(1)
    pairs = []
    for i, j in torch.nonzero(close).tolist():
        if float((V[:, j] - sign * V[:, i]).abs().max()) <= tol:
            pairs.append((i, j, sign * float(norms[j] / norms[i])))
    return pairs


def _duplicates(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> list[int]:
    """Merge each unit whose incoming weights are a scale of another's that the activation commutes
    with into that unit (module docstring); returns the merged-away units."""
    layer, A = net.layers[i], net.outgoing(i)
    signs = (1, -1) if layer.kind in ("tanh", "square") else (1,)
    gone: set[int] = set()
    for sign in signs:
        for a, b, c in _parallel(layer, tol, sign):
            if a in gone or b in gone:
                continue
            if layer.kind in ("tanh", "gelu") and abs(abs(c) - 1) > tol:
                continue
            factor = {"relu": c, "square": c * c, "tanh": float(sign), "gelu": 1.0}[layer.kind]
            A[a] += factor * A[b]
            gone.add(b)
            log.add(layer, "duplicate", [b], into=layer.ids[a], detail=f"incoming = {c:.6g} × unit {layer.ids[a]}")
    return sorted(gone)


def _linear_pairs(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> list[int]:
    """Rebuild a layer's linear pairs at the rank of the linear map they compute (module docstring);
    Z holds the layer's pre-activations on the data, to centre the rebuilt pairs there. ReLU only."""
    layer, A = net.layers[i], net.outgoing(i)
    if layer.kind != "relu":
        return []
    pairs, used = [], set()
    for a, b, c in _parallel(layer, tol, -1):
        if a in used or b in used:
            continue
        c = -c
        if float((A[a] + c * A[b]).abs().max()) <= tol * max(float(A[a].abs().max()), c * float(A[b].abs().max())):
            pairs.append((a, b))
            used.update((a, b))
    if not pairs:
        return []
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    norms_b = _incoming(layer)[:, second].norm(dim=0) / _incoming(layer)[:, first].norm(dim=0)
    out = (A[first] - norms_b.unsqueeze(1) * A[second]) / 2  # (k, n_out): a_p
    fold = net.next_bias(i) is not None or layer.b is None
    inputs = (layer.W if fold else _incoming(layer))[:, first].T  # (k, n_in (+1))
    M = out.T @ inputs
    scale = float((out.norm(dim=1) * inputs.norm(dim=1)).sum())
    left, s, right = torch.linalg.svd(M, full_matrices=False)
    rank = int((s > tol * scale).sum())
    if rank >= len(pairs):
        return []
    n_in = layer.W.shape[0]
    if fold and layer.b is not None:
        # β, less what the rebuilt pairs' biases add; each rebuilt pair is centred on the data
        # (bias −median of u·x there, u·x = Σ γ_p w_p·x with u = Σ γ_p w_p) so that neither of
        # its units is dead there by accident of the bias.
        constant = out.T @ layer.b[first]
        linear = Z[:, first] - layer.b[first]  # w_p·x on the data
        roots = s[:rank].sqrt()
        gamma = torch.linalg.pinv(layer.W[:, first]) @ (roots.unsqueeze(1) * right[:rank]).T  # w_p may be parallel
        biases = -(linear @ gamma).median(dim=0).values
        constant = constant - (roots.unsqueeze(1) * left[:, :rank].T * biases.unsqueeze(1)).sum(0)
    for l, (a, b) in enumerate(pairs[:rank]):
        root = math.sqrt(float(s[l]))
        u, v = root * right[l], root * left[:, l]
        for unit, sign in ((a, 1.0), (b, -1.0)):
            layer.W[:, unit] = sign * u[:n_in]
            if layer.b is not None:
                layer.b[unit] = sign * (biases[l] if fold else u[n_in])
            A[unit] = sign * v
    if fold and layer.b is not None:
        net.add_to_next_bias(i, constant)
    gone = sorted(j for pair in pairs[rank:] for j in pair)
    kept = [layer.ids[j] for pair in pairs[:rank] for j in pair]
    log.add(layer, "linear-pairs", gone,
            detail=f"{len(pairs)} opposite-sign pairs sum to a linear map of rank {rank}; rebuilt as {rank} pairs"
                   + (f" in units {kept}" if kept else ""))
    return gone


def _dead(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> list[int]:
    """ReLU units whose pre-activation is ≤ 0 on every row (logged; the caller removes them)."""
    layer = net.layers[i]
    dead = torch.nonzero(Z.amax(0) <= 0).flatten().tolist() if layer.kind == "relu" else []
    if dead:
        log.add(layer, "dead", dead)
    return dead


def _zero_out(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> list[int]:
    """Units whose effective outgoing weights are zero (within tolerance)."""
    size = net.effective_outgoing(i).abs().amax(1)
    zero = torch.nonzero(size <= tol * size.max()).flatten().tolist()
    if zero:
        log.add(net.layers[i], "zero-out", zero)
    return zero


def _constant(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> list[int]:
    """Units with zero incoming weights: their constant output is folded into the next bias (or,
    without one, only units contributing exactly 0 go)."""
    layer = net.layers[i]
    size = layer.W.abs().amax(0)
    constant = torch.nonzero(size <= tol * size.max()).flatten().tolist()
    if not constant:
        return []
    values = layer.fn(layer.b[constant]) if layer.b is not None else torch.zeros(len(constant), dtype=_F64,
                                                                               device=layer.W.device)
    contribution = values.unsqueeze(1) * net.outgoing(i)[constant]
    can_fold = net.next_bias(i) is not None
    go = [j for n, j in enumerate(constant) if can_fold or not contribution[n].any()]
    if go:
        if can_fold:
            net.add_to_next_bias(i, contribution.sum(0))
        shown = ", ".join(f"{float(v):.6g}" for v in values[:8]) + (", …" if len(constant) > 8 else "")
        log.add(layer, "constant", go, detail=f"outputs σ(b) = {shown}; folded into the next bias")
    return go


_EXACT = (_dead, _zero_out, _constant, _duplicates, _linear_pairs)
"""The exact reductions of one layer, in ``KINDS`` order; each logs and returns the units to remove."""


def _reduce_layer(net: _Net, i: int, Z: torch.Tensor, tol: float, log: _Log) -> bool:
    """One round of the exact reductions on layer i, with Z its pre-activations on the data."""
    changed = False
    for reduction in _EXACT:
        if _inert(net, i):
            break
        gone = reduction(net, i, Z, tol, log)
        if gone:
            Z = Z[:, _remove(net, i, gone)]
            changed = True
    return changed


# ----------------------------------------------------------------------------- the driver


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.reshape(out.shape[0], -1).to(_F64)


class _Compressor:
    """The state of one ``compress`` call: the float64 network, the data and the reference outputs."""

    def __init__(self, adapter: _Adapter, model: nn.Module, x: torch.Tensor, tol: float):
        self.adapter, self.model, self.tol = adapter, model, tol
        self.net = adapter.extract(model)
        self.x = x.to(_F64) if x.is_floating_point() else x
        self.reference = _outputs(self.build(), self.x)
        self.scale = float(self.reference.abs().max())
        self.budget = tol * self.scale
        self.log = _Log()

    def build(self, net: Optional[_Net] = None, dtype: torch.dtype = _F64) -> nn.Module:
        return self.adapter.build(self.model, self.net if net is None else net, dtype)

    def exact(self) -> None:
        """The exact reductions, round after round, until a round changes nothing."""
        while True:
            zs = self.adapter.preactivations(self.build(), self.x)
            changed = False
            for i in range(len(self.net.layers)):
                changed |= _reduce_layer(self.net, i, zs[i].reshape(-1, zs[i].shape[-1]), self.tol, self.log)
            if not changed:
                return

    def negligible(self) -> bool:
        """Remove units whose removal changes no output by more than the budget; whether any went."""
        model = self.build()
        zs = self.adapter.preactivations(model, self.x)
        drift = _outputs(model, self.x) - self.reference
        last = len(self.net.layers) - 1
        changed = False
        A = self.net.effective_outgoing(last)
        if drift.shape[1] == A.shape[1] and not _inert(self.net, last):
            layer = self.net.layers[last]
            H = layer.fn(zs[last].reshape(-1, zs[last].shape[-1]))
            own = H.abs().amax(0) * A.abs().amax(1)
            gone = []
            for j in torch.argsort(own).tolist():
                if float(own[j]) > self.budget or len(gone) == layer.W.shape[1] - 1:
                    break
                trial = drift - H[:, j : j + 1] * A[j]
                if float(trial.abs().max()) <= self.budget:
                    drift, changed = trial, True
                    gone.append(j)
                    self.log.add(layer, "negligible", [j], change=float(own[j]),
                                 detail=f"max |Δf| = {float(own[j]):.3g} ≤ {self.tol:g} × {self.scale:.6g}")
            if gone:
                _remove(self.net, last, gone)
        for i in range(last):
            changed |= self._negligible_by_trial(i)
        return changed

    def _negligible_by_trial(self, i: int) -> bool:
        """Negligible removals in a layer before the last, each checked by running the model."""
        zs = self.adapter.preactivations(self.build(), self.x)
        layer = self.net.layers[i]
        H = layer.fn(zs[i].reshape(-1, zs[i].shape[-1]))
        own = H.abs().amax(0) * self.net.outgoing(i).abs().amax(1)
        order = [j for j in torch.argsort(own).tolist() if float(own[j]) <= self.budget]
        ids = list(layer.ids)
        before = _outputs(self.build(), self.x)
        changed = False
        for unit in [ids[j] for j in order]:
            if self.net.layers[i].W.shape[1] == 1:
                break
            trial = copy.deepcopy(self.net)
            _remove(trial, i, [trial.layers[i].ids.index(unit)])
            out = _outputs(self.build(trial), self.x)
            if float((out - self.reference).abs().max()) <= self.budget:
                change = float((out - before).abs().max())
                position = self.net.layers[i].ids.index(unit)
                self.log.add(self.net.layers[i], "negligible", [position], change=change,
                             detail=f"max |Δf| = {change:.3g} ≤ {self.tol:g} × {self.scale:.6g}")
                self.net, before, changed = trial, out, True
        return changed


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance <= 0:
        raise ConfigError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return float(tolerance)


def compress(model: nn.Module, x: torch.Tensor, tolerance: float = 1e-6) -> Compressed:
    """The smallest network of ``model``'s family found to compute its outputs on the rows of ``x``.

    ``x`` is what the model reads (token ids for the transformer and the embedding MLP, float
    inputs otherwise), all rows at once. ``tolerance`` (finite, > 0) is the one relative tolerance
    of every test (module docstring). The original model is not modified. Raises
    ``UnsupportedOptionError`` for a model outside ``SUPPORTED`` and ``ConfigError`` for a bad
    tolerance or empty data.
    """
    tol = _check_tolerance(tolerance)
    adapter = _adapter(model)
    if not isinstance(x, torch.Tensor):
        raise LensTypeError(f"x must be a torch.Tensor of the model's inputs, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ConfigError(f"x must hold at least one row of inputs, got shape {tuple(x.shape)}")
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    with torch.no_grad():
        original = _outputs(model, x)
        work = _Compressor(adapter, model, x, tol)
        widths_before = work.net.widths()
        work.exact()
        while work.negligible():
            work.exact()
        compressed = work.build(dtype=dtype)
        diff = (_outputs(compressed, x) - original).abs()
    return Compressed(
        model=compressed,
        params_before=_count(model),
        params_after=_count(compressed),
        layers=tuple(layer.name for layer in work.net.layers),
        widths_before=widths_before,
        widths_after=work.net.widths(),
        max_output_diff=float(diff.max()) if diff.numel() else 0.0,
        output_scale=work.scale,
        tolerance=tol,
        reductions=tuple(work.log.items),
    )
