"""Models for algorithmic tasks, and ``build_model``: a network for a task by name.

Models are ``nn.Module``s, the view analyses read. A module with a ``lens()`` method (the quadratic
MLP and the embedding MLP) trains as that lens, a composite of the core's primitives over the
module's named parameters (``models.mlp``); the others (the transformer) train through
``core.smooth.from_module``. Each has an ``input_kind`` class attribute naming the task encoding
it reads.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from progsynth.errors import ConfigError
from progsynth.models.mlp import EmbeddingMLP, EmbeddingMLPConfig, GromovConfig, GromovMLP
from progsynth.models.transformer import StraightforwardTransformer, Transformer, TransformerConfig

__all__ = ["MODELS", "build_model"]

MODELS = ("transformer", "gromov", "mlp")
"""The model names ``build_model`` knows."""

# Every keyword build_model accepts, and which models use it; the rest of a shared config (for
# example ``runs.config.ModelConfig``) is ignored by models that do not use it.
_USED_BY = {
    "d_model": ("transformer", "mlp"),
    "n_heads": ("transformer",),
    "d_head": ("transformer",),
    "d_mlp": ("transformer", "gromov", "mlp"),
    "init": ("transformer",),
    "mlp_bias": ("transformer",),
    "unembed_equals": ("transformer",),
    "implementation": ("transformer",),
    "hidden": ("mlp",),
    "activation": ("mlp",),
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ConfigError(f"dtype must be 'float32', 'float64' or a floating torch.dtype, got {dtype!r}")


def build_model(
    name: str,
    task: Any,
    *,
    seed: Optional[int] = None,
    dtype: Union[str, torch.dtype] = torch.float32,
    **config: Any,
) -> nn.Module:
    """A freshly initialised network called ``name`` sized for ``task``.

    - ``"transformer"`` (needs a modular task, whose tokens are ``a b =``): ``d_model``, ``n_heads``, ``d_head``, ``d_mlp``,
      ``init`` ('nanda' or 'tl'), ``mlp_bias``, ``unembed_equals`` (p + 1 output logits, the paper's
      code), ``implementation`` ('fast', the default, or 'straightforward'); defaults as
      ``TransformerConfig``.
    - ``"gromov"``: the quadratic MLP on one-hot operands; ``d_mlp`` is its hidden width N
      (default 500).
    - ``"mlp"``: the embedding MLP; ``d_model`` is the embedding width (default 128), ``hidden`` a
      tuple of hidden widths, or ``d_mlp`` for a single hidden layer (default (512,)), and
      ``activation`` 'relu' or 'gelu'.

    ``task`` is any task (``progsynth.tasks``): the MLPs read its ``n_operands``,
    ``operand_vocab`` and ``n_classes``. Weights are drawn from a generator seeded with
    ``seed`` (torch's global generator if None) and cast to ``dtype``. Keywords in the shared
    vocabulary that the chosen model does not use are ignored; any other keyword is a ConfigError.
    ``unembed_equals=True`` is refused for the MLPs (ConfigError): their inputs have no ``=`` token
    to unembed, and ignoring it would train a different model than the one asked for.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    unknown = sorted(set(config) - set(_USED_BY))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown} for {name!r}; expected some of {sorted(_USED_BY)}")
    if config.get("unembed_equals", False) is not False and name != "transformer":
        raise ConfigError(f"unembed_equals (p + 1 output logits, the '=' token's included) applies to the "
                          f"transformer only, not to {name!r}; leave it False")
    used = {key: value for key, value in config.items() if name in _USED_BY[key]}
    for attribute in ("n_operands", "operand_vocab", "n_classes"):
        if not hasattr(task, attribute):
            raise ConfigError(f"build_model needs a task (progsynth.tasks), got {type(task).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an int or None, got {seed!r}")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    dtype = _dtype(dtype)

    if name == "transformer":
        if getattr(task, "family", None) != "modular":
            raise ConfigError(f"the transformer reads the 'a b =' tokens of a modular task, not a "
                              f"{getattr(task, 'family', type(task).__name__)} task; choose the model 'mlp' or "
                              "'gromov' for it")
        implementation = used.pop("implementation", "fast")
        classes = {"fast": Transformer, "straightforward": StraightforwardTransformer}
        if implementation not in classes:
            raise ConfigError(f"transformer implementation must be one of {list(classes)}, got {implementation!r}")
        return classes[implementation](TransformerConfig(p=task.p, **used), generator, dtype)
    if name == "gromov":
        width = used.get("d_mlp", 500)
        return GromovMLP(GromovConfig(task.n_operands * task.operand_vocab, task.n_classes, width), generator, dtype)
    if "hidden" in used and "d_mlp" in used:
        raise ConfigError("give the embedding MLP either hidden (all widths) or d_mlp (one hidden layer), not both")
    hidden = used["hidden"] if "hidden" in used else (used.get("d_mlp", 512),)
    mlp_config = EmbeddingMLPConfig(task.operand_vocab, task.n_operands, task.n_classes,
                                    d_embed=used.get("d_model", 128),
                                    hidden=tuple(hidden) if isinstance(hidden, list) else hidden,
                                    activation=used.get("activation", "relu"))
    return EmbeddingMLP(mlp_config, generator, dtype)
