"""Two MLPs for algorithmic tasks: Gromov's quadratic MLP and a general embedding MLP.

- ``GromovMLP`` (Gromov 2023, REFERENCE §3): one_hot(a) ⊕ one_hot(b) (2p) → N hidden units with
  activation x² → p outputs, no biases, every weight drawn from N(0, σ²) with σ = 0.5/(2N)^{1/3}.
  The setup that groks fastest (MSE on one-hot targets, AdamW lr 1e-2, betas (0.9, 0.98)).
- ``EmbeddingMLP``: learned embeddings of the operands, concatenated (so a ∘ b and b ∘ a differ,
  as non-commutative operations need), then hidden layers of configurable widths with ReLU or
  GELU, then an unembedding to the classes.

Both are ``nn.Module``s whose ``input_kind`` class attribute names the task encoding they read
(``TaskData.inputs(kind)``): ``"onehot"`` for Gromov's, ``"tokens"`` for the embedding MLP.

Two views of one model. ``lens()`` is the model as trained: a parametric lens composed from the
core's primitives (``linear >> square >> linear``; ``embedding >> linear >> act >> … >> linear``),
each with its hand-written reverse derivative, reparametrised by ``core.lens.regroup`` so that its
parameters are exactly the module's named parameters (same names, shapes and order), and so
checkpoints are the same files whichever view wrote them. The module is the view analyses read:
it loads a checkpoint's dict by name, and ``preactivations``, ``components`` and
``unit_permutations`` name its parts. Both compute the same function with the same tensor
operations (``tests/models/test_compose.py`` checks values and reverse derivatives against
autograd through the module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from progsynth.core.lens import Para, regroup
from progsynth.core.smooth import ACTIVATIONS as ACTIVATION_LENSES
from progsynth.core.smooth import embedding, linear, square
from progsynth.errors import ConfigError, LensTypeError
from progsynth.tasks.common import check_int

__all__ = ["GromovConfig", "GromovMLP", "EmbeddingMLPConfig", "EmbeddingMLP", "ACTIVATIONS"]

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu}
"""Hidden activations of the embedding MLP by name (GELU is the exact erf form)."""


def _copies(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of a module's parameters by name: fresh parameters for its ``lens()``."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _normal(shape: tuple[int, ...], std: float, generator: Optional[torch.Generator],
            dtype: torch.dtype) -> nn.Parameter:
    """A parameter drawn from N(0, std²) in float32 (same values for every dtype), cast to ``dtype``."""
    return nn.Parameter((torch.randn(shape, generator=generator, dtype=torch.float32) * std).to(dtype))


@dataclass(frozen=True)
class GromovConfig:
    """Sizes of Gromov's quadratic MLP."""

    n_in: int
    """Input width: 2p for one-hot pairs (k·V for k operands from a vocabulary of V)."""
    n_out: int
    """Output classes: p."""
    width: int = 500
    """Hidden units N (Gromov: 500 for p = 97)."""

    def __post_init__(self) -> None:
        for name in ("n_in", "n_out", "width"):
            check_int(f"gromov {name}", getattr(self, name), 1)

    @property
    def init_std(self) -> float:
        """σ = 0.5/(2N)^{1/3}, the std of every weight at initialisation."""
        return 0.5 / (2 * self.width) ** (1 / 3)


class GromovMLP(nn.Module):
    """f(x) = (x W_in)² W_out: one-hot pair (N, n_in) → logits (N, n_out). No biases."""

    input_kind = "onehot"
    """Reads the one-hot encoding one_hot(a) ⊕ one_hot(b)."""

    def __init__(self, config: GromovConfig, generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.float32):
        """Draw W_in (n_in, width) and W_out (width, n_out) from N(0, ``config.init_std``²)."""
        super().__init__()
        if not isinstance(config, GromovConfig):
            raise ConfigError(f"GromovMLP expects a GromovConfig, got {type(config).__name__}")
        self.config = config
        self.W_in = _normal((config.n_in, config.width), config.init_std, generator, dtype)
        self.W_out = _normal((config.width, config.n_out), config.init_std, generator, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_out) for float inputs (N, n_in)."""
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() != 2 \
                or x.shape[1] != self.config.n_in:
            what = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise LensTypeError(f"GromovMLP expects float one-hot inputs (N, {self.config.n_in}), got {what}")
        (hidden,) = self.preactivations(x)
        return (hidden * hidden) @ self.W_out

    def lens(self) -> Para:
        """The model as a parametric lens, ``linear >> square >> linear`` over the parameters
        ``{"W_in", "W_out"}`` (module docstring); ``init()`` gives copies of this module's."""
        c, dtype = self.config, self.W_in.dtype
        body = (linear(c.n_in, c.width, bias=False, dtype=dtype, layout="in_out") >> square(c.width)
                >> linear(c.width, c.n_out, bias=False, dtype=dtype, layout="in_out"))
        return body.reparam(regroup((("W_in",), (), ("W_out",))), name="gromov",
                            init=lambda generator=None: _copies(self))

    def unit_permutations(self) -> dict[str, tuple[Optional[str], ...]]:
        """The permutation group acting on each axis of each parameter (None: unpermuted).

        One group, ``"hidden"``: the N hidden units, on W_in axis 1 and W_out axis 0. The
        activation x² acts unit by unit, so permuting a unit's input column and output row together
        leaves f unchanged exactly. Used by ``geometry.align`` to match units between two networks.
        """
        return {"W_in": (None, "hidden"), "W_out": ("hidden", None)}

    def components(self) -> dict[str, dict[str, Optional[int]]]:
        """Named components for the refined LLC (``slt.restrict``): ``input`` (W_in) and ``output``
        (W_out), each a whole tensor (None)."""
        return {"input": {"W_in": None}, "output": {"W_out": None}}

    def preactivations(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The hidden layer's pre-activations x W_in, (N, width), as a one-tuple (the activation
        squares them). What analyses (``slt.compress``) read instead of recomputing the forward pass."""
        return (x @ self.W_in,)


@dataclass(frozen=True)
class EmbeddingMLPConfig:
    """Sizes of the embedding MLP."""

    vocab: int
    """Values an operand can take (p for modular tasks, 2 for parity)."""
    n_operands: int
    """Token positions read: the first n_operands columns of the token tensor (2: a and b; the
    modular task's trailing ``=`` carries no information and is not read)."""
    n_classes: int
    """Output classes."""
    d_embed: int = 128
    """Embedding width per operand."""
    hidden: tuple[int, ...] = (512,)
    """Hidden layer widths, input side first; () gives a linear read-out of the embeddings."""
    activation: str = "relu"
    """'relu' or 'gelu'."""

    def __post_init__(self) -> None:
        for name in ("vocab", "n_operands", "n_classes", "d_embed"):
            check_int(f"mlp {name}", getattr(self, name), 1)
        if not isinstance(self.hidden, tuple):
            raise ConfigError(f"mlp hidden must be a tuple of layer widths, got {self.hidden!r}")
        for width in self.hidden:
            check_int("mlp hidden width", width, 1)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"mlp activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")


class EmbeddingMLP(nn.Module):
    """Embed each operand (W_E), concatenate, hidden layers W_i, b_i with the activation, unembed (W_U).

    Initialisation: W_E from N(0, 1) (``nn.Embedding``'s default), each W_i and W_U from
    N(0, 1/fan_in) (LeCun normal, which keeps activations O(1)), biases b_i zero. There is no
    output bias, as in the transformer's unembedding.
    """

    input_kind = "tokens"
    """Reads token ids, (N, ≥ n_operands)."""

    def __init__(self, config: EmbeddingMLPConfig, generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(config, EmbeddingMLPConfig):
            raise ConfigError(f"EmbeddingMLP expects an EmbeddingMLPConfig, got {type(config).__name__}")
        self.config = c = config
        self.W_E = _normal((c.vocab, c.d_embed), 1.0, generator, dtype)
        widths = (c.n_operands * c.d_embed, *c.hidden)
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            setattr(self, f"W_{i}", _normal((fan_in, fan_out), 1 / math.sqrt(fan_in), generator, dtype))
            setattr(self, f"b_{i}", nn.Parameter(torch.zeros(fan_out, dtype=dtype)))
        self.W_U = _normal((widths[-1], c.n_classes), 1 / math.sqrt(widths[-1]), generator, dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) for token ids (N, ≥ n_operands); columns past n_operands are ignored."""
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < c.n_operands \
                or tokens.dtype.is_floating_point:
            what = (f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor)
                    else type(tokens).__name__)
            raise LensTypeError(f"EmbeddingMLP expects integer tokens (N, ≥ {c.n_operands}), got {what}")
        pres = self.preactivations(tokens)
        return (ACTIVATIONS[c.activation](pres[-1]) if pres else self._embed(tokens)) @ self.W_U

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The operands' embeddings, concatenated: (N, n_operands · d_embed)."""
        c = self.config
        operands = tokens[:, : c.n_operands].reshape(-1)
        return self.W_E.index_select(0, operands).view(tokens.shape[0], c.n_operands * c.d_embed)

    def lens(self) -> Para:
        """The model as a parametric lens, ``embedding >> linear >> act >> … >> linear`` over the
        module's parameters by name (module docstring); ``init()`` gives copies of this module's."""
        c, dtype = self.config, self.W_E.dtype
        body: Para = embedding(c.vocab, c.d_embed, c.n_operands, dtype)
        structure: list[tuple] = [("W_E",)]
        widths = (c.n_operands * c.d_embed, *c.hidden)
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            body = body >> linear(fan_in, fan_out, dtype=dtype, layout="in_out") \
                >> ACTIVATION_LENSES[c.activation](fan_out)
            structure += [(f"W_{i}", f"b_{i}"), ()]
        body = body >> linear(widths[-1], c.n_classes, bias=False, dtype=dtype, layout="in_out")
        structure.append(("W_U",))
        return body.reparam(regroup(tuple(structure)), name="mlp", init=lambda generator=None: _copies(self))

    def components(self) -> dict[str, dict[str, Optional[int]]]:
        """Named components for the refined LLC (``slt.restrict``): ``embedding`` (W_E), ``layer{i}``
        (W_i and b_i) for each hidden layer, ``unembedding`` (W_U); whole tensors (None)."""
        parts: dict[str, dict[str, Optional[int]]] = {"embedding": {"W_E": None}}
        for i in range(len(self.config.hidden)):
            parts[f"layer{i}"] = {f"W_{i}": None, f"b_{i}": None}
        parts["unembedding"] = {"W_U": None}
        return parts

    def unit_permutations(self) -> dict[str, tuple[Optional[str], ...]]:
        """The permutation group acting on each axis of each parameter (None: unpermuted).

        One group ``"hidden_i"`` per hidden layer i, its units: W_i axis 1, b_i axis 0 and the
        next layer's input axis (W_{i+1} axis 0, or W_U axis 0 after the last hidden layer). The
        activation acts unit by unit, so permuting a unit's column, bias and outgoing row together
        leaves f unchanged exactly.

        The embedding dimensions stay unpermuted (None): a permutation of the d_embed dims acts on
        W_E axis 1 and on W_0's rows within every one of the n_operands blocks of the concatenated
        input, which no single axis of W_0 expresses. Used by ``geometry.align``.
        """
        n_hidden = len(self.config.hidden)
        groups: dict[str, tuple[Optional[str], ...]] = {"W_E": (None, None)}
        for i in range(n_hidden):
            groups[f"W_{i}"] = (f"hidden_{i - 1}" if i > 0 else None, f"hidden_{i}")
            groups[f"b_{i}"] = (f"hidden_{i}",)
        groups["W_U"] = (f"hidden_{n_hidden - 1}" if n_hidden else None, None)
        return groups

    def preactivations(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each hidden layer's pre-activations x_i W_i + b_i, (N, hidden[i]), input side first, as
        ``forward`` computes them. What analyses (``slt.compress``) read instead of recomputing it."""
        c = self.config
        x = self._embed(tokens)
        act, pres = ACTIVATIONS[c.activation], []
        for i in range(len(c.hidden)):
            pres.append(torch.addmm(getattr(self, f"b_{i}"), x, getattr(self, f"W_{i}")))
            x = act(pres[-1])
        return tuple(pres)
