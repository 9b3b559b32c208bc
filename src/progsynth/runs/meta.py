"""Meta-training a learned optimizer (``core.learned``) on a family of small training problems.

One outer iteration draws ``meta_batch`` problems from the family, trains each for T = ``steps``
inner steps with the learned optimizer lens through the supervised step of ``core.learner``
(optimizer ; model ; loss ; rate), and moves φ by Adam along ``torch.func.grad`` of the meta-loss
through those T puts. With gap_t = max(L_t − L*, 0)/(L_0 − L*), the fraction of the initial loss
gap left after inner step t (L* the problem's least loss: the least-squares loss of a
regression, 0 for a classification),

    "mean_log" (default)   mean over t = 1..T of log(gap_t + 1e-6)
    "mean"                 mean over t = 1..T of gap_t
    "final"                gap_T

``mean_log`` weighs every problem alike whatever its loss scale and keeps rewarding progress
once the loss is small. An outer step whose meta-loss or meta-gradient is not finite (an inner
run diverged) is skipped and counted.

Families (``META_FAMILIES``), every problem full batch and CPU-cheap:

- ``"regression"``: y = x·w + b + 0.1·noise, with 64 examples of 8 correlated features
  (x = z·A, A with singular values log-uniform in [0.3, 3], so every problem is conditioned
  differently), w, b ~ N(0, 1); a linear model (``core.smooth.linear``), MSE.
- ``"modular"``: c = a ∘ b mod p with p ∈ {5, 7, 11} and ∘ ∈ {add, sub, mul}, 50 % of the pairs
  (a task from the registry), Gromov's quadratic MLP of width 32 (``models``, the same model as
  ``progsynth train --model gromov``), softmax cross-entropy.

The artifact (``save_learned``) is a folder with ``learned_optimizer.safetensors`` (φ) and
``learned_optimizer.json`` (format version, kind, hyper-parameters, the family and seeds it was
meta-trained on, the meta-training time), each written atomically, the JSON last, so a folder
without it is incomplete. ``load_learned`` trusts nothing it reads: a wrong format version, a
missing or corrupt file, wrong φ names or shapes, NaN or inf in φ are each one RunError naming the
file. Its ``sha256`` covers both files; a run's ``config.json`` records it, so ``resume``
refuses a learned optimizer changed since the run began.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save_file
from torch.utils._pytree import tree_flatten_with_path, keystr

from progsynth.core.learned import LEARNED_KINDS, LearnedOptimizer, init_phi, learned_hyper, learned_optimizer, phi_shapes
from progsynth.core.learner import Learner
from progsynth.core.lens import Para
from progsynth.core.losses import learning_rate, mse, softmax_cross_entropy
from progsynth.core.smooth import from_module, linear
from progsynth.errors import ConfigError, ProgsynthError, RunError, os_error
from progsynth.models import build_model
from progsynth.runs.config import _number
from progsynth.runs.store import atomic_write
from progsynth.tasks import make_task
from progsynth.tasks.common import check_int, check_seed

__all__ = ["META_FAMILIES", "OBJECTIVES", "FORMAT_VERSION", "WEIGHTS_FILE", "INFO_FILE", "MetaConfig", "Problem",
           "MetaResult", "LearnedArtifact", "sample_problem", "unroll", "meta_objective", "meta_loss", "meta_train",
           "check_out", "save_learned", "load_learned", "LearnedFromFile", "use_learned", "steps_to_target", "describe_phi"]

FORMAT_VERSION = 1
"""The version of the learned-optimizer files this progsynth writes and reads."""
FORMAT = "progsynth-learned-optimizer"
WEIGHTS_FILE = "learned_optimizer.safetensors"
INFO_FILE = "learned_optimizer.json"
OBJECTIVES = ("mean_log", "mean", "final")
"""The meta-losses (module docstring)."""
_GAP_FLOOR = 1e-6


# --------------------------------------------------------------------------- problems


class Problem(NamedTuple):
    """One inner training problem: a model lens, a loss lens, initial parameters, the full batch
    (x, y) and the least loss L* the model can reach on it (for the relative gap)."""

    model: Para
    loss: Para
    params: Any
    x: torch.Tensor
    y: torch.Tensor
    floor: float
    name: str


def _log_uniform(generator: torch.Generator, low: float, high: float, n: int) -> torch.Tensor:
    return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.rand(n, generator=generator,
                                                                                     dtype=torch.float64))


def _orthogonal(generator: torch.Generator, d: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _regression(generator: torch.Generator, dtype: torch.dtype) -> Problem:
    """Linear regression with correlated features (module docstring)."""
    d, n = 8, 64
    a = _orthogonal(generator, d) * _log_uniform(generator, 0.3, 3.0, d) @ _orthogonal(generator, d)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) @ a
    w = torch.randn(d, 1, generator=generator, dtype=torch.float64)
    b = torch.randn((), generator=generator, dtype=torch.float64)
    y = x @ w + b + 0.1 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    design = torch.cat((x, torch.ones(n, 1, dtype=torch.float64)), dim=1)
    residual = y - design @ torch.linalg.lstsq(design, y).solution
    model = linear(d, 1, dtype=dtype)
    return Problem(model, mse(), model.init(generator), x.to(dtype), y.to(dtype),
                   float((residual**2).mean()), "regression")


MODULAR_PRIMES = (5, 7, 11)
MODULAR_OPS = ("add", "sub", "mul")
MODULAR_WIDTH = 32


def _modular(generator: torch.Generator, dtype: torch.dtype) -> Problem:
    """A small modular-arithmetic task from the registry with Gromov's MLP (module docstring)."""
    pick = torch.randint(0, 1 << 30, (4,), generator=generator).tolist()
    p, op = MODULAR_PRIMES[pick[0] % len(MODULAR_PRIMES)], MODULAR_OPS[pick[1] % len(MODULAR_OPS)]
    task = make_task("modular", p=p, op=op, train_fraction=0.5, split_seed=pick[2])
    data = task.dataset()
    module = build_model("gromov", task, seed=pick[3], dtype=dtype, d_mlp=MODULAR_WIDTH)
    model = from_module(module, name="gromov")
    train = data.train_idx
    x = data.inputs(module.input_kind, dtype)[train]
    y = torch.nn.functional.one_hot(data.labels[train], task.n_classes).to(dtype)  # probabilities: the
    # loss's reverse derivative is then out of place, so it can itself be differentiated
    return Problem(model, softmax_cross_entropy(), model.init(), x, y, 0.0, f"{task.name}")


@dataclass(frozen=True)
class _Family:
    sample: Callable[[torch.Generator, torch.dtype], Problem]
    describe: dict[str, Any]
    init_lr: dict[str, float]
    """Where meta-training starts, by kind: the step size of SGD (momentum kind) or Adam (mlp kind)."""
    init_momentum: float


META_FAMILIES: dict[str, _Family] = {
    "regression": _Family(_regression, {"name": "regression", "features": 8, "examples": 64,
                                        "singular_values": [0.3, 3.0], "noise": 0.1, "model": "linear(8, 1)",
                                        "loss": "mse"},
                          {"momentum": 0.02, "mlp": 0.02}, 0.5),
    "modular": _Family(_modular, {"name": "modular", "p": list(MODULAR_PRIMES), "ops": list(MODULAR_OPS),
                                  "train_fraction": 0.5, "model": f"gromov(d_mlp={MODULAR_WIDTH})",
                                  "loss": "softmax_cross_entropy"},
                       {"momentum": 0.5, "mlp": 0.01}, 0.5),
}
"""The problem families meta-training draws from (module docstring)."""


def sample_problem(family: str, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Problem:
    """One problem of ``family`` (``META_FAMILIES``), drawn with ``generator``."""
    if family not in META_FAMILIES:
        raise ConfigError(f"meta-training family must be one of {', '.join(META_FAMILIES)}, got {family!r}")
    return META_FAMILIES[family].sample(generator, dtype)


# --------------------------------------------------------------------------- unrolling


def unroll(optimizer: Any, problem: Problem, steps: int) -> torch.Tensor:
    """The losses L_0, ..., L_T (shape (T + 1,)) of ``steps`` = T full-batch steps of the
    supervised step (``core.learner``) with ``optimizer`` on ``problem``: L_t is the loss after t
    updates. Pure, so ``torch.func.grad`` differentiates it in the optimizer's φ."""
    learner = Learner(problem.model, problem.loss, optimizer, learning_rate(1.0))
    state = learner.init(problem.params)
    losses = []
    for _ in range(steps):
        state, loss = learner.step(state, problem.x, problem.y)
        losses.append(loss)
    losses.append(problem.loss.get(problem.y, learner.predict(state, problem.x)))
    return torch.stack(losses)


def meta_objective(losses: torch.Tensor, floor: float, objective: str = "mean_log") -> torch.Tensor:
    """The meta-loss of one unroll's losses L_0..L_T (module docstring)."""
    gap = (losses[1:] - floor).clamp_min(0.0) / (losses[0].detach() - floor)
    if objective == "mean_log":
        return torch.log(gap + _GAP_FLOOR).mean()
    if objective == "mean":
        return gap.mean()
    if objective == "final":
        return gap[-1]
    raise ConfigError(f"meta objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


def meta_loss(phi: dict[str, torch.Tensor], kind: str, hyper: dict[str, Any], problems: list[Problem], steps: int,
              objective: str = "mean_log") -> torch.Tensor:
    """The meta-loss of φ: the mean over ``problems`` of ``meta_objective`` of ``steps`` inner
    steps with the learned optimizer (φ, ``kind``, complete ``hyper``). Differentiable in φ."""
    optimizer = LearnedOptimizer(kind, phi, hyper, check_finite=False)
    values = [meta_objective(unroll(optimizer, p, steps), p.floor, objective) for p in problems]
    return torch.stack(values).mean()


def steps_to_target(optimizer: Any, problem: Problem, budget: int, gap: float) -> int | None:
    """The first step t ≤ ``budget`` whose loss is within ``gap`` of the problem's least loss,
    relative to the start (L_t − L* ≤ gap·(L_0 − L*)), or None when it is never reached (or the
    run diverges). Stops at the target: no gradient, one host sync per step."""
    learner = Learner(problem.model, problem.loss, optimizer, learning_rate(1.0))
    with torch.no_grad():
        state = learner.init(problem.params)
        try:
            for t in range(budget + 1):
                if t < budget:
                    state, loss = learner.step(state, problem.x, problem.y)
                else:
                    loss = problem.loss.get(problem.y, learner.predict(state, problem.x))
                if t == 0:
                    threshold = problem.floor + gap * (float(loss) - problem.floor)
                if float(loss) <= threshold:  # L_t: the loss before update t + 1
                    return t
        except ProgsynthError:  # p' became non-finite: the run diverged before reaching the target
            return None
    return None


# --------------------------------------------------------------------------- meta-training


@dataclass(frozen=True)
class MetaConfig:
    """What meta-training a learned optimizer takes (``progsynth meta-train``)."""

    family: str = "regression"
    """The problem family, one of ``META_FAMILIES``."""
    kind: str = "momentum"
    """'momentum' (per-tensor step size and momentum) or 'mlp' (a per-coordinate MLP); ``core.learned``."""
    steps: int = 40
    """T: inner training steps unrolled per problem."""
    meta_iterations: int = 150
    """K: outer (Adam) steps on φ."""
    meta_batch: int = 4
    """Problems drawn per outer step."""
    meta_lr: float = 0.05
    """Adam's step size on φ."""
    objective: str = "mean_log"
    """The meta-loss, one of ``OBJECTIVES`` (module docstring)."""
    hidden: int = 8
    """Hidden units of the 'mlp' kind's MLP (ignored by 'momentum')."""
    seed: int = 0
    """Seeds the problems drawn and φ's initial MLP weights: the same seed gives the same φ."""

    def validate(self) -> None:
        if not isinstance(self.family, str) or self.family not in META_FAMILIES:
            raise ConfigError(f"family must be one of {', '.join(META_FAMILIES)}, got {self.family!r}")
        if not isinstance(self.kind, str) or self.kind not in LEARNED_KINDS:
            raise ConfigError(f"kind must be one of {', '.join(LEARNED_KINDS)}, got {self.kind!r}")
        check_int("steps (inner steps unrolled)", self.steps, 1, 10_000)
        check_int("meta_iterations", self.meta_iterations, 1, 10**7)
        check_int("meta_batch", self.meta_batch, 1, 10_000)
        _number("meta_lr", self.meta_lr, 0, open_low=True)
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        check_int("hidden", self.hidden, 1, 1024)
        check_seed("seed", self.seed)

    @property
    def hyper(self) -> dict[str, Any]:
        """The learned optimizer's hyper-parameters (``core.learned``)."""
        return {"hidden": self.hidden} if self.kind == "mlp" else {}


@dataclass
class MetaResult:
    """A meta-trained learned optimizer and how it was trained."""

    config: MetaConfig
    optimizer: LearnedOptimizer
    param_names: list[str]
    """The parameter tensors of the family's model, in leaf order (the 'momentum' kind's φ entries)."""
    meta_losses: list[float]
    """The meta-loss of every outer step (before its update)."""
    skipped: int
    """Outer steps skipped because the meta-loss or its gradient was not finite."""
    seconds: float
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (what ``learned_optimizer.json`` holds besides the format).
        ``meta_loss_first`` / ``meta_loss_last``: the mean meta-loss of the first and the last tenth
        of the outer steps (each step draws new problems, so one step's value is noisy)."""
        first = self.meta_losses[: max(1, len(self.meta_losses) // 10)]
        last = self.meta_losses[-max(1, len(self.meta_losses) // 10):]
        return {"kind": self.optimizer.kind, "hyper": _jsonable(self.optimizer.hyper),
                "param_names": self.param_names, "meta": asdict(self.config),
                "family": META_FAMILIES[self.config.family].describe, "meta_train_seconds": round(self.seconds, 3),
                "meta_iterations_done": len(self.meta_losses), "skipped": self.skipped,
                "meta_loss_first": _mean(first), "meta_loss_last": _mean(last),
                "rule": describe_phi(self.optimizer)}


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _jsonable(hyper: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}


def describe_phi(optimizer: LearnedOptimizer) -> dict[str, Any]:
    """φ in readable units: the step sizes and momenta ('momentum'), the step size and the weights
    of the linear part on (p', fast momentum, slow momentum) ('mlp')."""
    phi = optimizer.phi
    if optimizer.kind == "momentum":
        return {"lr": [float(v) for v in phi["log_lr"].exp()],
                "momentum": [float(v) for v in torch.sigmoid(phi["logit_momentum"])]}
    return {"lr": float(phi["log_lr"].exp()), "linear": [float(v) for v in phi["linear"]],
            "mlp_output_norm": float(phi["w2"].norm())}


ProgressFn = Callable[[int, int, float], None]


def meta_train(config: MetaConfig, progress: ProgressFn | None = None,
               should_stop: Callable[[int], bool] | None = None) -> MetaResult:
    """Meta-train a learned optimizer (module docstring); ``progress(done, total, meta_loss)``
    after every outer step. ``should_stop(done)`` returning True ends meta-training there (the
    result says ``interrupted``); Ctrl-C propagates and leaves nothing written."""
    config.validate()
    family = META_FAMILIES[config.family]
    generator = torch.Generator().manual_seed(config.seed)
    probe = family.sample(torch.Generator().manual_seed(config.seed), torch.float32)
    named = tree_flatten_with_path(probe.params)[0]
    names = [keystr(path) for path, _ in named]
    hyper = learned_hyper(config.kind, config.hyper)
    phi = init_phi(config.kind, family.init_lr[config.kind], family.init_momentum, hyper, len(names), generator)
    leaves = {k: v.clone().requires_grad_() for k, v in phi.items()}
    outer = torch.optim.Adam(leaves.values(), lr=config.meta_lr)
    value_and_grad = torch.func.grad_and_value(meta_loss)
    losses: list[float] = []
    skipped, interrupted = 0, False
    start = time.perf_counter()
    for k in range(config.meta_iterations):
        problems = [family.sample(generator, torch.float32) for _ in range(config.meta_batch)]
        current = {n: v.detach() for n, v in leaves.items()}
        try:
            grads, value = value_and_grad(current, config.kind, hyper, problems, config.steps, config.objective)
            finite = bool(torch.isfinite(value)) and all(bool(torch.isfinite(g).all()) for g in grads.values())
        except ProgsynthError:
            finite, value = False, torch.tensor(float("nan"))
        if finite:
            for name, leaf in leaves.items():
                leaf.grad = grads[name]
            outer.step()
        else:
            skipped += 1
        losses.append(float(value))
        if progress is not None:
            progress(k + 1, config.meta_iterations, float(value))
        if should_stop is not None and k + 1 < config.meta_iterations and should_stop(k + 1):
            interrupted = True
            break
    seconds = time.perf_counter() - start
    final = learned_optimizer(config.kind, {n: v.detach().clone() for n, v in leaves.items()}, hyper,
                              leaf_names=names if config.kind == "momentum" else None)
    return MetaResult(config, final, names, losses, skipped, seconds, interrupted)


# --------------------------------------------------------------------------- the artifact


@dataclass(frozen=True)
class LearnedArtifact:
    """A learned optimizer read back from its folder."""

    path: Path
    """The folder holding the two files."""
    optimizer: LearnedOptimizer
    info: dict[str, Any]
    """The JSON file's content."""
    sha256: str
    """Of both files (``learned_optimizer.json`` then ``learned_optimizer.safetensors``)."""


def _sha256(info_bytes: bytes, weights_bytes: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(info_bytes)
    digest.update(weights_bytes)
    return digest.hexdigest()


def check_out(out: str | Path) -> Path:
    """``out`` as a Path if a learned optimizer can be written there (a new or existing folder
    without one); else the RunError ``save_learned`` would raise, before any meta-training."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise RunError(f"{str(out)!r} is a file; meta-train writes a folder, choose another OUT")
        if (out / WEIGHTS_FILE).exists() or (out / INFO_FILE).exists():
            raise RunError(f"{str(out)!r} already holds a learned optimizer; choose another OUT")
    except OSError as error:
        raise os_error(error, "use", out) from None
    return out


def save_learned(out: str | Path, result: MetaResult) -> str:
    """Write ``result`` into the folder ``out`` (created; refused when it already holds a learned
    optimizer): φ, then the JSON, each atomically. Returns the artifact's sha256."""
    out = check_out(out)
    weights, info = out / WEIGHTS_FILE, out / INFO_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error, "create", out) from None
    tensors = {f"phi.{k}": v.detach().contiguous() for k, v in result.optimizer.phi.items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": result.optimizer.kind}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **result.to_dict()}, indent=2) + "\n"
    atomic_write(info, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return _sha256(info.read_bytes(), weights.read_bytes())


def _folder(path: str | Path) -> Path:
    """The artifact folder a user named: the folder itself or either of its two files."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name in (WEIGHTS_FILE, INFO_FILE) and path.parent.is_dir():
        return path.parent
    if not path.exists():
        raise RunError(f"learned optimizer {str(path)!r} does not exist")
    raise RunError(f"{str(path)!r} is not a learned optimizer: expected the folder `progsynth meta-train` writes, "
                   f"or its {INFO_FILE} or {WEIGHTS_FILE}")


def load_learned(path: str | Path, expect_sha256: str | None = None) -> LearnedArtifact:
    """Read a learned optimizer folder (module docstring); with ``expect_sha256``, refuse one
    whose files have changed (a RunError naming both hashes)."""
    folder = _folder(path)
    weights_file, info_file = folder / WEIGHTS_FILE, folder / INFO_FILE
    for file in (info_file, weights_file):
        if not file.is_file():
            raise RunError(f"learned optimizer {str(folder)!r} has no {file.name} (not written by `progsynth "
                           f"meta-train`, or its writing was interrupted)")
    try:
        info_bytes, weights_bytes = info_file.read_bytes(), weights_file.read_bytes()
    except OSError as error:
        raise RunError(f"cannot read learned optimizer {str(folder)!r}: {error.strerror or error}") from None
    digest = _sha256(info_bytes, weights_bytes)
    try:
        info = json.loads(info_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RunError(f"learned optimizer file {str(info_file)!r} is not valid JSON ({error}); it is corrupt") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RunError(f"{str(info_file)!r} is not a progsynth learned optimizer (no \"format\": \"{FORMAT}\")")
    version = info.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise RunError(f"learned optimizer {str(info_file)!r} has format version {version!r}; this progsynth reads "
                       f"version {FORMAT_VERSION} (meta-train it again with this version)")
    try:
        tensors = load_safetensors(weights_bytes)
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise RunError(f"learned optimizer file {str(weights_file)!r} is corrupt: {error}") from None
    kind, hyper = info.get("kind"), info.get("hyper")
    names = info.get("param_names")
    try:
        if not isinstance(hyper, dict):
            raise ConfigError(f"'hyper' must be a mapping, got {hyper!r}")
        n = len(names) if isinstance(names, list) else None
        expected = phi_shapes(kind, hyper, n if kind == "momentum" else None)
        phi = {}
        for name in expected:
            if f"phi.{name}" not in tensors:
                raise ConfigError(f"φ has no entry {name!r}")
            phi[name] = tensors[f"phi.{name}"]
        extra = sorted(set(tensors) - {f"phi.{name}" for name in expected})
        if extra:
            raise ConfigError(f"unexpected tensors {extra}")
        optimizer = learned_optimizer(kind, phi, hyper, leaf_names=names if kind == "momentum" else None)
        optimizer = replace(optimizer, name=f"learned optimizer {str(folder)!r}")  # its errors name the file
    except ConfigError as error:
        raise RunError(f"learned optimizer {str(folder)!r}: {error}") from None
    if expect_sha256 and expect_sha256 != digest:
        raise RunError(f"learned optimizer {str(folder)!r} changed since this run started: its sha256 is "
                       f"{digest[:12]}…, the run's config.json records {expect_sha256[:12]}…; restore that file "
                       "or start a new run")
    return LearnedArtifact(folder, optimizer, info, digest)


@dataclass(frozen=True, eq=False)
class LearnedFromFile:
    """The optimizer lens of a run trained with a learned optimizer (``optim.learned``): the
    artifact is read, and its sha256 checked against ``sha256``, on first use (``init`` or ``put``),
    not when the run's ``Experiment`` is built, so analyses of the run, which never step the
    optimizer, open it even after the learned optimizer's folder has moved. ``check_finite`` is
    passed on (``dataclasses.replace(opt, check_finite=False)`` works, as for every optimizer lens)."""

    path: str
    sha256: str
    check_finite: bool = True
    _loaded: list = field(default_factory=list, init=False, repr=False)

    @property
    def name(self) -> str:
        return f"learned optimizer {self.path!r}"

    def lens(self) -> LearnedOptimizer:
        """The learned optimizer itself (read and checked once per instance)."""
        if not self._loaded:
            optimizer = load_learned(self.path, expect_sha256=self.sha256).optimizer
            self._loaded.append(replace(optimizer, check_finite=self.check_finite))
        return self._loaded[0]

    def init(self, params: Any) -> Any:
        return self.lens().init(params)

    def get(self, state: Any, params: Any) -> Any:
        return params

    def put(self, state: Any, params: Any, dparams: Any) -> tuple[Any, Any]:
        return self.lens().put(state, params, dparams)


def use_learned(config: Any, path: str | Path) -> Any:
    """``config`` (a ``RunConfig``) training with the learned optimizer at ``path`` (its folder or
    either file): ``optim.learned`` set to the folder's absolute path and ``optim.learned_sha256``
    to its files' hash, after reading and checking them (``load_learned``)."""
    artifact = load_learned(path)
    return config.override(**{"optim.learned": str(artifact.path.resolve()), "optim.learned_sha256": artifact.sha256})
