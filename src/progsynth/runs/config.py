"""Run configuration: frozen, validated dataclasses that the CLI and config files map onto one to one.

Every default is documented once, at its field: here, and for the task at the fields of its
family's class (``progsynth.tasks``; ``config.json`` stores it as ``{"family": ..., **fields}``). A config file is the JSON written by
``RunConfig.to_dict`` (the ``config.json`` of every run directory), so any run can be repeated with
``progsynth train --config RUN/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from progsynth.core.optim import OPTIMIZER_NAMES
from progsynth.core.transforms import parse_chain
from progsynth.errors import ConfigError, ProgsynthError
from progsynth.tasks import Task, make_task, task_from_dict, task_to_dict
from progsynth.tasks.common import check_int, check_label_noise, check_seed
from progsynth.tasks.registry import DEFAULT_FAMILY, is_task

GENERALISED_ACCURACY = 0.99
"""Held-out accuracy at which a run counts as generalised (``until_generalised``, sweeps)."""

MAX_STEPS = 10**9
"""Most optimizer steps a run may ask for (epochs × steps per epoch)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(what: str, value: Any, low: float, high: float = math.inf, open_low: bool = False,
            open_high: bool = False) -> float:
    """``value`` if it is a finite real number (not a bool) in the interval, else ConfigError naming it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = (("(" if open_low else "[") + f"{low:g}, " + (f"{high:g}" if math.isfinite(high) else "∞")
                    + (")" if open_high or not math.isfinite(high) else "]"))
        raise ConfigError(f"{what} must be a finite number in {interval}, got {_shown(value)}")
    return float(value)


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named (``what``: "config file", "sweep spec"), or a
    one-line ConfigError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {str(path)!r} is a directory; give the file in it") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {error.strerror or error}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and its sizes. Fields a model does not use are ignored by it."""

    name: str = "transformer"
    """'transformer' (Nanda et al.), 'gromov' (quadratic MLP on one-hot pairs) or 'mlp' (embedding MLP)."""
    d_model: int = 128
    """Transformer residual width / embedding-MLP embedding width."""
    n_heads: int = 4
    """Transformer attention heads."""
    d_head: int = 32
    """Transformer width per head."""
    d_mlp: int = 512
    """Transformer MLP width; also the hidden width of the 'gromov' and 'mlp' models."""
    init: str = "nanda"
    """Transformer initialisation: 'nanda' (the paper's code) or 'tl' (TransformerLens demo)."""
    activation: str = "relu"
    """Embedding-MLP activation: 'relu' or 'gelu'."""
    unembed_equals: bool = False
    """Transformer only: unembed to all p + 1 tokens and train the cross-entropy over p + 1 classes,
    the ``=`` token's never-correct logit included, as the paper's code does; False: p residue
    logits (the TransformerLens demo). What analyses see either way is the p residue logits
    (``Experiment.logits``); the metrics' losses are over the outputs as trained, their accuracies
    over the p residues (``Experiment.evaluate``). Refused for 'gromov' and 'mlp'."""

    def validate(self) -> None:
        _check(isinstance(self.name, str) and self.name in ("transformer", "gromov", "mlp"),
               f"model.name must be one of 'transformer', 'gromov', 'mlp', got {_shown(self.name)}")
        for name in ("d_model", "n_heads", "d_head", "d_mlp"):
            check_int(f"model.{name}", getattr(self, name), 1, 1 << 16)
        _check(isinstance(self.unembed_equals, bool),
               f"model.unembed_equals must be true or false, got {_shown(self.unembed_equals)}")
        _check(not self.unembed_equals or self.name == "transformer",
               f"model.unembed_equals (p + 1 output logits, the '=' token's included) applies to the "
               f"transformer only, not to {_shown(self.name)}; set it false")


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer lens and its hyper-parameters (torch.optim conventions)."""

    name: str = "adamw"
    """One of 'gd', 'momentum', 'nesterov', 'adagrad', 'adam', 'adamw'."""
    lr: float = 1e-3
    """Step size."""
    weight_decay: float = 1.0
    """Weight decay (decoupled for adamw, L2 for the others)."""
    beta1: float = 0.9
    """Adam/AdamW first-moment decay (and momentum for 'momentum'/'nesterov')."""
    beta2: float = 0.98
    """Adam/AdamW second-moment decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many optimizer steps: step k (0-based) uses
    lr · min(k / warmup_steps, 1), so the first step has lr 0, as the paper's
    ``LambdaLR(lambda step: min(step / 10, 1))`` with 10 (``core.optim``). 0: none."""
    chain: str = ""
    """An optimizer written as a chain of gradient transformations (``core.transforms``), used
    instead of the named rule above, e.g. ``"clip(1.0) >> adam_moments(0.9, 0.98) >> weight_decay(1.0)
    >> warmup_cosine(10, 25000) >> scale(-1e-3)"``: the names of ``core.transforms.TRANSFORMS`` with
    literal numbers as arguments, joined by ``>>``, transforming the gradient and ending with
    ``scale(-lr)``; read with ``ast``, never evaluated. The fields name, lr, weight_decay, beta1,
    beta2 and warmup_steps must then keep their defaults (the chain holds them). "": none."""
    learned: str = ""
    """A learned optimizer, the folder ``progsynth meta-train`` writes (``runs.meta``), used instead
    of the rule above: the other fields of this section are then ignored. "": none."""
    learned_sha256: str = ""
    """The sha256 of that learned optimizer's files (``progsynth train --optim`` records it; ``progsynth
    meta-train`` prints it), so ``resume`` refuses a file changed since the run began."""

    def validate(self) -> None:
        _check(isinstance(self.name, str) and self.name in OPTIMIZER_NAMES,
               f"optim.name must be one of {', '.join(OPTIMIZER_NAMES)}, got {_shown(self.name)}")
        _number("optim.lr", self.lr, 0, open_low=True)
        _number("optim.weight_decay", self.weight_decay, 0)
        _number("optim.beta1", self.beta1, 0, 1, open_high=True)
        _number("optim.beta2", self.beta2, 0, 1, open_high=True)
        check_int("optim.warmup_steps (0: no warm-up)", self.warmup_steps, 0, MAX_STEPS)
        _check(isinstance(self.learned, str), f"optim.learned must be a path ('' for none), got {_shown(self.learned)}")
        _check(not self.learned or (isinstance(self.learned_sha256, str) and len(self.learned_sha256) == 64
                                    and all(c in "0123456789abcdef" for c in self.learned_sha256)),
               "optim.learned_sha256 must be the sha256 of the learned optimizer (64 hex digits, as `progsynth "
               f"meta-train` prints it; `progsynth train --optim` fills it in), got {_shown(self.learned_sha256)}")
        _check(isinstance(self.chain, str), f"optim.chain must be a chain expression ('' for none), got {_shown(self.chain)}")
        if self.chain:
            _check(not self.learned, "optim.chain and optim.learned are two optimizers; set one of them")
            for f in fields(self):
                if f.name in ("name", "lr", "weight_decay", "beta1", "beta2", "warmup_steps") \
                        and getattr(self, f.name) != f.default:
                    raise ConfigError(f"optim.{f.name} = {_shown(getattr(self, f.name))} is not used with optim.chain "
                                      f"(the chain holds its own rule, step size and schedule); leave it at its "
                                      f"default {f.default!r}")
            try:
                parse_chain(self.chain)
            except ProgsynthError as error:
                raise ConfigError(f"optim.chain: {error}") from None


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run."""

    task: Task = field(default_factory=lambda: make_task(DEFAULT_FAMILY))
    """The task, any registered family (``progsynth.tasks.registry``); default: a + b mod 113, 30 % train."""
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: str = "cross_entropy"
    """'cross_entropy' on logits, or 'mse' on one-hot targets (Gromov)."""
    loss_dtype: str | None = None
    """Compute the cross-entropy in this dtype ('float64': the paper's high-precision loss, see
    ``core.losses.softmax_cross_entropy``); None: the model's dtype."""
    epochs: int = 25_000
    """Full passes over the training set; with full batch, one optimizer step each."""
    batch_size: int | None = None
    """Examples per step; None means full batch."""
    seed: int = 0
    """Model initialisation (and minibatch order) seed."""
    label_noise: float = 0.0
    """Fraction Q in [0, 1] of the training examples whose label is replaced by a uniformly random
    wrong label (Zhang et al. 2017's random labels; ``tasks.common.with_label_noise``): exactly
    round(Q · n_train) training labels differ from the true ones; held-out labels stay true. 0: none."""
    label_noise_seed: int = 0
    """Seed that picks which training examples get a wrong label and which wrong label each gets;
    independent of ``seed`` (the model) and of the task's ``split_seed``."""
    until_generalised: bool = False
    """Stop before ``epochs`` (then a budget) once held-out accuracy has stayed ≥
    ``GENERALISED_ACCURACY`` since step g and a further ``cleanup`` · g steps have passed (the run's
    ``stop.json`` records why it stopped; ``runs.train``). Needs held-out examples."""
    cleanup: float = 0.25
    """With ``until_generalised``: the fraction F of the steps to generalisation g trained on after
    it (cleanup: the memorising circuit fades), so the run stops at step ≥ (1 + F) · g; 0 stops at
    the first evaluation that finds the run generalised."""
    dtype: str = "float32"
    """'float32' or 'float64'."""
    metrics_every: int = 10
    """Evaluate train/test loss and accuracy every this many steps."""
    max_checkpoints: int = 200
    """Upper bound on scheduled checkpoints (dense early, log-spaced later; always step 0 and the last)."""
    resume_every_s: float = 30.0
    """Also save a resume point at least this often (seconds), so a crash loses little work."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        _check(is_task(self.task), f"task must be a task of a registered family, got {type(self.task).__name__}")
        self.model.validate()
        self.optim.validate()
        _check(isinstance(self.loss, str) and self.loss in ("cross_entropy", "mse"),
               f"loss must be 'cross_entropy' or 'mse', got {_shown(self.loss)}")
        check_int("epochs", self.epochs, 1, MAX_STEPS)
        if self.batch_size is not None:
            check_int("batch_size (None: full batch)", self.batch_size, 1, MAX_STEPS)
        _check(isinstance(self.dtype, str) and self.dtype in ("float32", "float64"),
               f"dtype must be 'float32' or 'float64', got {_shown(self.dtype)}")
        _check(self.loss_dtype is None or (isinstance(self.loss_dtype, str) and self.loss_dtype in ("float32", "float64")),
               f"loss_dtype must be None, 'float32' or 'float64', got {_shown(self.loss_dtype)}")
        check_seed("seed", self.seed)
        _check(isinstance(self.until_generalised, bool),
               f"until_generalised must be true or false, got {_shown(self.until_generalised)}")
        _number("cleanup", self.cleanup, 0, 100)
        _check(not self.until_generalised or self.task.train_fraction < 1,
               "until_generalised needs held-out examples to watch; the task trains on all of them "
               f"(train_fraction {_shown(self.task.train_fraction)})")
        check_label_noise(self.label_noise)
        check_seed("label_noise_seed", self.label_noise_seed)
        check_int("metrics_every", self.metrics_every, 1, MAX_STEPS)
        check_int("max_checkpoints", self.max_checkpoints, 2, 100_000)
        _number("resume_every_s", self.resume_every_s, 0, open_low=True)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data (what ``config.json`` holds). A task holding a Python
        function itself (possible in memory) cannot be recorded: ConfigError, asking for its import path."""
        for name, value in task_to_dict(self.task).items():
            _check(value is None or isinstance(value, (str, int, float)),
                   f"task.{name} must be text or a number so that config.json can record it, got "
                   f"{getattr(value, '__name__', type(value).__name__)!r}; name a function by import path, "
                   "'module:function'")
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in data.items()},
                "task": task_to_dict(self.task)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build and validate a config from a dict (unknown keys are an error, naming the key)."""
        _check(isinstance(data, dict), f"a config must be a JSON object (a mapping of keys), got {_shown(data)}")
        nested = {"model": ModelConfig, "optim": OptimConfig}
        known = {f.name for f in fields(cls)}
        for key in data:
            _check(key in known, f"unknown config key {_shown(key)}; expected one of {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "task":
                kwargs[key] = task_from_dict(value)
            elif key in nested:
                sub_known = {f.name for f in fields(nested[key])}
                _check(isinstance(value, dict), f"config key {key!r} must be a mapping, got {_shown(value)}")
                for sub in value:
                    _check(sub in sub_known, f"unknown config key {key}.{_shown(sub)}; expected one of {sorted(sub_known)}")
                kwargs[key] = nested[key](**value)
            else:
                kwargs[key] = value
        config = cls(**kwargs)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a JSON config file."""
        path = Path(path)
        try:
            data = json.loads(read_text(path, "config file"))
        except (json.JSONDecodeError, RecursionError) as error:
            raise ConfigError(f"config file {str(path)!r} is not valid JSON: {error}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"config file {str(path)!r}: {error}") from None

    def _task_with(self, changes: dict[str, Any]) -> Task:
        """The task with ``changes`` to its fields; a ``family`` other than the current one starts a
        task of that family from its defaults."""
        current = task_to_dict(self.task)
        family = changes.pop("family", current["family"])
        if family != current["family"]:
            return make_task(family, **changes)
        return make_task(family, **{**{k: v for k, v in current.items() if k != "family"}, **changes})

    def override(self, **changes: Any) -> RunConfig:
        """A copy with dotted-name overrides, e.g. ``override(**{"task.p": 59, "epochs": 100})``;
        ``task.family`` switches to another task family (the rest of its fields from their defaults
        unless given)."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if value is None:
                continue
            if "." in key:
                head, sub = key.split(".", 1)
                nested.setdefault(head, {})[sub] = value
            else:
                top[key] = value
        task_changes = nested.pop("task", None)
        if task_changes:
            top["task"] = self._task_with(task_changes)
        for head, subs in nested.items():
            _check(head in ("model", "optim"), f"unknown config section {head!r}; expected task, model or optim")
            top[head] = replace(getattr(self, head), **subs)
        config = replace(self, **top)
        config.validate()
        return config


PRESETS: dict[str, RunConfig] = {
    # Nanda et al. 2023: p = 113, 30 % of pairs, AdamW lr 1e-3, wd 1, betas (0.9, 0.98), full batch.
    # The loss in float64 as the paper's code computes it (core.losses.softmax_cross_entropy).
    "nanda": RunConfig(epochs=25_000, metrics_every=50, loss_dtype="float64"),
    # 'nanda' with the three remaining differences from the paper's code switched to the paper's
    # (REFERENCE §6): p + 1 output logits ('=' trained too), a 10-step linear learning-rate warm-up,
    # and the paper's split (Python's random.shuffle of the pairs, seed 0).
    "nanda-paper": RunConfig(
        task=make_task("modular", split="paper"),
        model=ModelConfig(unembed_equals=True),
        optim=OptimConfig(warmup_steps=10),
        epochs=25_000,
        metrics_every=50,
        loss_dtype="float64",
    ),
    # The default: Nanda's transformer at half width on p = 53, 40 % of pairs, lr 3e-3. Memorises
    # by epoch ~150, generalises by ~1,000, cleans up until ~1,300: about a minute on 2 cores.
    "quick": RunConfig(
        task=make_task("modular", p=53, train_fraction=0.4),
        model=ModelConfig(d_model=64, n_heads=4, d_head=16, d_mlp=256),
        optim=OptimConfig(lr=3e-3),
        epochs=1300,
        metrics_every=10,
    ),
    # Gromov 2023: one-hot pairs -> 500 x² units -> p, MSE, AdamW lr 1e-2 wd 5, 50 % train, p = 97.
    "gromov": RunConfig(
        task=make_task("modular", p=97, train_fraction=0.5),
        model=ModelConfig(name="gromov", d_mlp=500),
        optim=OptimConfig(lr=1e-2, weight_decay=5.0),
        loss="mse",
        epochs=200,
        metrics_every=1,
    ),
    # Sparse parity (Barak et al. 2022): 3 relevant bits of 30, 50,000 random strings (80 % train),
    # the embedding MLP (8-wide bit embeddings, 256 ReLU units), plain SGD lr 0.1, batch 32, one
    # epoch: learns it in a few hundred steps after a plateau.
    "parity": RunConfig(
        task=make_task("parity", n_bits=30, k=3, n_samples=50_000, train_fraction=0.8),
        model=ModelConfig(name="mlp", d_model=8, d_mlp=256),
        optim=OptimConfig(name="gd", lr=0.1, weight_decay=0.0),
        epochs=1,
        batch_size=32,
        metrics_every=10,
    ),
    # A Boolean function: the comparator of two 6-bit numbers (all 4,096 strings, 50 % train), the
    # embedding MLP, full-batch AdamW: generalises within a hundred epochs.
    "boolean": RunConfig(
        task=make_task("boolean", n_bits=12, function="comparator", train_fraction=0.5),
        model=ModelConfig(name="mlp", d_model=8, d_mlp=256),
        optim=OptimConfig(lr=1e-3, weight_decay=0.1),
        epochs=500,
        metrics_every=10,
    ),
}


FAMILY_PRESETS = {"modular": "quick", "parity": "parity", "boolean": "boolean"}
"""The preset ``progsynth train --task FAMILY`` starts from when no ``--preset`` is given."""


def family_preset(family: str | None) -> str:
    """The name of the preset for a task family (``FAMILY_PRESETS``; None: the modular one)."""
    family = family or DEFAULT_FAMILY
    if family not in FAMILY_PRESETS:
        raise ConfigError(f"unknown task family {family!r}; expected one of {', '.join(FAMILY_PRESETS)}")
    return FAMILY_PRESETS[family]


OTHER_OPERATIONS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 6000, "until_generalised": True, "cleanup": 0.3},
}
"""How a preset tuned on a + b changes when its task asks for another operation: the other
operations take longer to generalise (README → Presets), so the run trains until generalised
within a larger budget. ``quick`` with a + b is left exactly as it is."""


def for_operation(name: str, config: RunConfig) -> RunConfig:
    """``config`` (preset ``name`` with the user's task changes) adjusted by ``OTHER_OPERATIONS``
    when its operation is not the preset's own."""
    own = PRESETS[name].task
    if name not in OTHER_OPERATIONS or getattr(config.task, "op", None) == getattr(own, "op", None):
        return config
    return config.override(**OTHER_OPERATIONS[name])


def preset(name: str) -> RunConfig:
    """A named preset ('quick', 'nanda', 'nanda-paper', 'gromov', 'parity', 'boolean')."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
