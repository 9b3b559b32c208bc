"""The one-layer transformer of Nanda et al. (2023) for ``a b =`` → c (REFERENCE §3).

Architecture (one block, no LayerNorm): token embedding W_E plus learned positional embedding
W_pos; causal multi-head attention (W_Q, W_K, W_V, W_O, no biases, scores scaled by 1/√d_head);
ReLU MLP (W_in, b_in, W_out, b_out), both added to the residual stream; a separate unembedding
W_U. Logits are read at the last position (``=``). Defaults are the paper's: d_model 128, 4 heads
× 32, d_mlp 512, vocabulary p + 1 (residues 0..p−1 and ``=`` = p).

Output classes (``TransformerConfig.unembed_equals``): by default the model returns the p logits of
the residues only, shape (N, p): ``=`` is never a label, so W_U is (d_model, p), as in the
TransformerLens demo (``d_vocab_out = p``). The paper's code unembeds to all p + 1 tokens and trains
cross-entropy over p + 1 classes, the never-correct ``=`` logit included, and its analyses drop the
``=`` column; with ``unembed_equals=True`` W_U is (d_model, p + 1) and the model returns (N, p + 1),
the last column the ``=`` logit. Dropping that column is the caller's job
(``runs.experiment.Experiment.logits``).

Parameters (names and shapes shared by both implementations, TransformerLens orientation, x @ W):
W_E (p+1, d_model), W_pos (3, d_model), W_Q/W_K/W_V (n_heads, d_model, d_head),
W_O (n_heads, d_head, d_model), W_in (d_model, d_mlp), b_in (d_mlp,), W_out (d_mlp, d_model),
b_out (d_model,), W_U (d_model, p) (p + 1 with ``unembed_equals``). With ``mlp_bias=False`` there
is no b_in/b_out.

Initialisations (``TransformerConfig.init``), every weight drawn from a normal with mean 0:

- ``"nanda"`` (the paper's code, mechanistic-interpretability-grokking/progress-measures-paper):
  W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, W_out with std 1/√d_model; W_U with std 1/√(p + 1)
  (1/√d_vocab, whether W_U has p or p + 1 columns); b_in, b_out zero. W_U is drawn last, so
  ``unembed_equals`` changes no other weight of a seed.
- ``"tl"`` (TransformerLens ``HookedTransformer``'s default "gpt2" init, used by its grokking
  demo): every W_* with std 0.8/√d_model (``initializer_range``), biases zero. The demo's model
  also carries attention and unembedding biases and freezes every bias at zero
  (``requires_grad = False`` for each ``b_*``); this model has no attention or unembedding biases,
  so with ``mlp_bias=False`` it is the demo's model exactly.

Two implementations of the same function, with the same parameters:

- ``StraightforwardTransformer``: all three positions through attention, MLP and unembedding, then
  the last position is read, as the paper's code does. The reference for tests and benchmarks.
- ``Transformer`` (the fast path, the default). Only the residual stream at ``=`` reaches the MLP
  and the unembedding, since nothing reads the other positions' outputs in a one-layer model.
  Before the MLP, every position's stream is an embedding row plus a positional row, so queries,
  keys and values are per-(position, token) tables, (3, V) rows each, computed once per call
  instead of once per example, and the attention scores are one (3, V query, V key, heads) table;
  each example only gathers its 3 scores per head and its 3 value rows. The query at ``=`` is the
  same for every input of the task (token p at position 2), but the tables cover every query
  token, so the fast path equals the straightforward one on *any* (N, 3) input. Nothing nonlinear
  stands between the attention output z W_O and its two readers (the MLP input and the
  unembedding), nor between the MLP output and the unembedding, so W_O is folded into W_in and
  W_U and W_out into W_U (small products computed once per call), and the query stream's own
  contributions to the MLP input and to the logits are tables per token. One step further, each
  head's value at (position, token) through W_O W_in (and W_O W_U) is a row of a per-(position,
  token, head) table, so an example's MLP input and direct logits are sums of 3·H + 1 table rows
  weighted by its attention pattern (``models.rowsum``, a compiled kernel with a hand-written
  backward), and the only matrix product per example left is relu(·) (W_out W_U). The row sums
  serve where they pay (``ROW_SUMS_FROM``, the paper's size) and where the kernel sees plain memory;
  under ``vmap`` or ``jvp``, at smaller sizes, or without a C compiler, the same function is
  computed with the products z (W_O W_in) and z (W_O W_U), z the heads' attention-weighted values
  (``benchmarks/train_step.py`` counts the work of both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from progsynth.errors import ConfigError, LensTypeError
from progsynth.models import rowsum
from progsynth.tasks.common import check_int

__all__ = ["TransformerConfig", "Transformer", "StraightforwardTransformer", "INITS", "N_CTX", "ROW_SUMS_FROM"]

N_CTX = 3
"""Positions per input: ``a b =``."""

ROW_SUMS_FROM = 8
"""The row sums (``models.rowsum``) replace the per-example products z (W_O W_in) and z (W_O W_U)
only when those products are at least this many times wider: n_heads·d_head ≥ ROW_SUMS_FROM ·
(3·n_heads + 1). The kernel is memory-bound and the products run at matmul speed, so the row sums
win at the paper's size (128 against 13) and lose at the ``quick`` preset's (64 against 13); README
→ Results has the measurements."""

INITS = ("nanda", "tl")
"""The initialisations a TransformerConfig accepts (module docstring)."""


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and initialisation of the one-layer transformer."""

    p: int
    """Number of residues: outputs p logits (p + 1 with ``unembed_equals``); the vocabulary is p + 1
    (token p is ``=``)."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads."""
    d_head: int = 32
    """Width of each head's queries, keys and values."""
    d_mlp: int = 512
    """MLP hidden width."""
    init: str = "nanda"
    """'nanda' (the paper's code) or 'tl' (TransformerLens demo); see the module docstring."""
    mlp_bias: bool = True
    """Whether the MLP has biases b_in, b_out (the paper: yes; the TL demo freezes them at zero)."""
    unembed_equals: bool = False
    """Whether W_U also unembeds the ``=`` token, giving p + 1 logits (the paper's code) instead of
    the p residue logits (the TransformerLens demo); see the module docstring."""

    def __post_init__(self) -> None:
        check_int("transformer p", self.p, 2)
        for name in ("d_model", "n_heads", "d_head", "d_mlp"):
            check_int(f"transformer {name}", getattr(self, name), 1)
        if self.init not in INITS:
            raise ConfigError(f"transformer init must be one of {list(INITS)}, got {self.init!r}")
        if not isinstance(self.mlp_bias, bool):
            raise ConfigError(f"transformer mlp_bias must be True or False, got {self.mlp_bias!r}")
        if not isinstance(self.unembed_equals, bool):
            raise ConfigError(f"transformer unembed_equals must be True or False, got {self.unembed_equals!r}")

    @property
    def d_vocab(self) -> int:
        """Input vocabulary: residues 0..p−1 and ``=``."""
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        """Output logits: the p residues, and ``=`` too with ``unembed_equals``."""
        return self.p + 1 if self.unembed_equals else self.p


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D table, as an embedding lookup: the same values as ``index_select``,
    but under ``torch.func.vmap`` over seeds (a batched table, shared indices) it stays one lookup
    into the stacked tables, where ``index_select`` becomes a ``gather`` reading one index per
    element."""
    return torch.nn.functional.embedding(index, table)


class Transformer(nn.Module):
    """The one-layer transformer, fast path (module docstring). Input: tokens (N, 3); output:
    logits (N, p) at ``=`` ((N, p + 1) with ``unembed_equals``)."""

    input_kind = "tokens"
    """Reads the ``a b =`` token encoding of a modular task."""

    def __init__(
        self,
        config: TransformerConfig,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
    ):
        """Build and initialise. Weights are drawn in float32 from ``generator`` (torch's global
        generator if None) and then cast to ``dtype``, so one seed gives the same weights in any
        dtype up to rounding."""
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise ConfigError(f"Transformer expects a TransformerConfig, got {type(config).__name__}")
        self.config = c = config
        shapes = {
            "W_E": (c.d_vocab, c.d_model),
            "W_pos": (N_CTX, c.d_model),
            "W_Q": (c.n_heads, c.d_model, c.d_head),
            "W_K": (c.n_heads, c.d_model, c.d_head),
            "W_V": (c.n_heads, c.d_model, c.d_head),
            "W_O": (c.n_heads, c.d_head, c.d_model),
            "W_in": (c.d_model, c.d_mlp),
            "W_out": (c.d_mlp, c.d_model),
            "W_U": (c.d_model, c.d_vocab_out),
        }
        for name, shape in shapes.items():
            std = self._init_std(name)
            weight = torch.randn(shape, generator=generator, dtype=torch.float32) * std
            setattr(self, name, nn.Parameter(weight.to(dtype)))
        if c.mlp_bias:
            self.b_in = nn.Parameter(torch.zeros(c.d_mlp, dtype=dtype))
            self.b_out = nn.Parameter(torch.zeros(c.d_model, dtype=dtype))
        else:
            self.b_in = self.b_out = None

    def _init_std(self, name: str) -> float:
        c = self.config
        if c.init == "tl":
            return 0.8 / math.sqrt(c.d_model)
        return 1.0 / math.sqrt(c.d_vocab if name == "W_U" else c.d_model)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] != N_CTX:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise LensTypeError(f"{type(self).__name__} expects tokens of shape (N, 3) ('a b ='), got {shape}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise LensTypeError(f"{type(self).__name__} expects integer token ids, got dtype {tokens.dtype}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (N, p) at ``=`` for tokens (N, 3), via per-(position, token) tables ((N, p + 1) with
        ``unembed_equals``)."""
        pre, direct = self._mlp_input(tokens)
        return torch.addmm(direct, torch.relu(pre), self.W_out @ self.W_U)

    def preactivations(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The MLP's pre-activations at ``=`` (the residual stream there times W_in, plus b_in),
        (N, d_mlp), as a one-tuple (one hidden layer): what analyses (``slt.compress``) read instead
        of recomputing the forward pass."""
        return (self._mlp_input(tokens)[0],)

    def _mlp_input(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP input at ``=`` (N, d_mlp) and the logits that bypass the MLP (N, p or p + 1): the
        forward pass up to the MLP's ReLU."""
        self._check_tokens(tokens)
        c = self.config
        n, vocab, heads = tokens.shape[0], c.d_vocab, c.n_heads
        position = torch.arange(N_CTX, device=tokens.device)
        query_token = tokens[:, N_CTX - 1]
        # Stream of token v at position j before the MLP: x[j, v] = W_E[v] + W_pos[j].
        x = self.W_E.unsqueeze(0) + self.W_pos.unsqueeze(1)  # (3, V, d_model)
        x_query = x[N_CTX - 1]  # (V, d_model): the stream at '=' for each token standing there
        q = torch.einsum("vd,hde->hve", x_query, self.W_Q)
        k = torch.einsum("jvd,hde->jhve", x, self.W_K)
        scores = torch.einsum("hqe,jhke->jqkh", q, k) / math.sqrt(c.d_head)  # (3, V query, V key, H)
        # Example n attends from '=' to (j, t_j) with score scores[j, t_2, t_j]; causal: all 3 keys.
        score_rows = ((position * vocab + query_token.unsqueeze(1)) * vocab + tokens).reshape(-1)
        attn = torch.softmax(_rows(scores.reshape(-1, heads), score_rows).view(n, N_CTX, heads), dim=1)
        v = torch.einsum("jvd,hde->jvhe", x, self.W_V)  # (3, V, H, d_head)
        if self._row_sums_pay() and rowsum.usable(v, attn):
            return self._row_sums(tokens, x_query, v, attn)
        values = _rows(v.reshape(N_CTX * vocab, heads * c.d_head),
                       (position * vocab + tokens).reshape(-1)).view(n, N_CTX, heads, c.d_head)
        z = (attn.unsqueeze(-1) * values).sum(dim=1).reshape(n, heads * c.d_head)
        # Nothing nonlinear stands between z W_O and its two readers (MLP input, unembedding), nor
        # between the MLP output and the unembedding: fold W_O and W_out into them, and tabulate the
        # query stream's own contributions per token.
        w_o = self.W_O.reshape(heads * c.d_head, c.d_model)
        pre_table, direct_table = self._query_tables(x_query)
        pre = torch.addmm(_rows(pre_table, query_token), z, w_o @ self.W_in)
        return pre, torch.addmm(_rows(direct_table, query_token), z, w_o @ self.W_U)

    def _row_sums_pay(self) -> bool:
        """Whether the row sums beat the dense products at this model's size (``ROW_SUMS_FROM``)."""
        c = self.config
        return c.n_heads * c.d_head >= ROW_SUMS_FROM * (N_CTX * c.n_heads + 1)

    def _query_tables(self, x_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query stream's own contributions, per token standing at ``=``: to the MLP input
        (V, d_mlp) and, through the residual stream, to the logits (V, p or p + 1)."""
        pre_table = x_query @ self.W_in
        direct_table = x_query @ self.W_U
        if self.b_in is not None:
            pre_table = pre_table + self.b_in
            direct_table = direct_table + self.b_out @ self.W_U
        return pre_table, direct_table

    def _row_sums(self, tokens: torch.Tensor, x_query: torch.Tensor, v: torch.Tensor,
                  attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP input and direct logits as weighted sums of table rows (``models.rowsum``).

        Head h's value at (position j, token t), through W_O and on into W_in (or W_U), is one row
        of a (3, V, H) table, computed per head from its d_head-wide value; an example's MLP input
        (or direct logits) is then the sum of its 3·H rows weighted by its attention pattern, plus
        its query token's row (weight 1). Per example that is 3·H + 1 rows of d_mlp (and p) numbers
        instead of a matrix product with (H·d_head) × (d_mlp + p) weights."""
        c = self.config
        n, vocab, heads = tokens.shape[0], c.d_vocab, c.n_heads
        position = torch.arange(N_CTX, device=tokens.device)
        head = torch.arange(heads, device=tokens.device)
        rows = torch.cat([((position * vocab + tokens).unsqueeze(-1) * heads + head).reshape(n, N_CTX * heads),
                          N_CTX * vocab * heads + tokens[:, N_CTX - 1:]], dim=1)
        weights = torch.cat([attn.reshape(n, N_CTX * heads), attn.new_ones(n, 1)], dim=1)
        sums = []
        for reader, query_table in zip((self.W_in, self.W_U), self._query_tables(x_query)):
            head_rows = torch.einsum("jvhe,hew->jvhw", v, torch.einsum("hed,dw->hew", self.W_O, reader))
            table = torch.cat([head_rows.reshape(N_CTX * vocab * heads, -1), query_table])
            sums.append(rowsum.row_sum(table, rows, weights))
        pre, direct = sums
        return pre, direct

    def components(self) -> dict[str, dict[str, Optional[int]]]:
        """The model's named components for the refined LLC (``slt.restrict``): component → {parameter
        name: index along the parameter's axis 0, or None for the whole tensor}. ``embedding`` (W_E,
        W_pos), ``head0`` … (each head's slice of W_Q, W_K, W_V, W_O), ``mlp`` (W_in, W_out and the
        biases) and ``unembedding`` (W_U), as Wang et al. (2024) split a transformer."""
        parts: dict[str, dict[str, Optional[int]]] = {"embedding": {"W_E": None, "W_pos": None}}
        for h in range(self.config.n_heads):
            parts[f"head{h}"] = {name: h for name in ("W_Q", "W_K", "W_V", "W_O")}
        parts["mlp"] = {name: None for name in ("W_in", "b_in", "W_out", "b_out") if getattr(self, name) is not None}
        parts["unembedding"] = {"W_U": None}
        return parts

    def unit_permutations(self) -> dict[str, tuple[Optional[str], ...]]:
        """The permutation group acting on each axis of each parameter (None: unpermuted).

        Three groups, each leaving f unchanged exactly when all its axes are permuted together:

        - ``"mlp"``, the d_mlp hidden units (ReLU acts unit by unit): W_in axis 1, b_in axis 0,
          W_out axis 0.
        - ``"heads"``, the attention heads (their outputs are summed): axis 0 of W_Q, W_K, W_V, W_O.
        - ``"resid"``, the d_model coordinates of the residual stream: W_E, W_pos axis 1; W_Q, W_K,
          W_V axis 1; W_O axis 2; W_in axis 0; W_out axis 1; b_out axis 0; W_U axis 0. With no
          LayerNorm every operation on the stream is a sum or a linear read, so the stream is
          permutation-equivariant.

        Not expressed: the d_head coordinates within heads (a permutation of them is shared by
        W_Q and W_K, or by W_V and W_O, but may differ between heads). Without ``mlp_bias`` there
        is no b_in or b_out. Used by ``geometry.align``.
        """
        groups: dict[str, tuple[Optional[str], ...]] = {
            "W_E": (None, "resid"),
            "W_pos": (None, "resid"),
            "W_Q": ("heads", "resid", None),
            "W_K": ("heads", "resid", None),
            "W_V": ("heads", "resid", None),
            "W_O": ("heads", None, "resid"),
            "W_in": ("resid", "mlp"),
            "W_out": ("mlp", "resid"),
            "W_U": ("resid", None),
        }
        if self.b_in is not None:
            groups["b_in"] = ("mlp",)
            groups["b_out"] = ("resid",)
        return groups


class StraightforwardTransformer(Transformer):
    """The same model computed as the paper's code does: every position through attention, MLP and
    unembedding, then the logits at ``=``. The reference the fast path is tested against."""

    def _mlp_and_unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Residual stream (..., d_model) → logits (..., p or p + 1): MLP added to the stream, then W_U."""
        pre = resid @ self.W_in
        if self.b_in is not None:
            pre = pre + self.b_in
        resid = resid + torch.relu(pre) @ self.W_out
        if self.b_out is not None:
            resid = resid + self.b_out
        return resid @ self.W_U

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (N, p) at ``=`` for tokens (N, 3) ((N, p + 1) with ``unembed_equals``)."""
        self._check_tokens(tokens)
        c = self.config
        x = self.W_E[tokens] + self.W_pos  # (N, 3, d_model)
        q = torch.einsum("npd,hde->nhpe", x, self.W_Q)
        k = torch.einsum("npd,hde->nhpe", x, self.W_K)
        v = torch.einsum("npd,hde->nhpe", x, self.W_V)
        scores = torch.einsum("nhqe,nhke->nhqk", q, k) / math.sqrt(c.d_head)
        causal = torch.ones(N_CTX, N_CTX, dtype=torch.bool, device=tokens.device).tril()
        attn = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        z = torch.einsum("nhqk,nhke->nhqe", attn, v)
        x = x + torch.einsum("nhqe,hed->nqd", z, self.W_O)
        return self._mlp_and_unembed(x)[:, -1]
