"""The Nanda transformer: fast path equals the straightforward one (logits and gradients, float64),
parameters, initialisations, errors, and vmap over seeds."""

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap

from progsynth.errors import ConfigError, LensTypeError
from progsynth.models import rowsum, transformer
from progsynth.models.transformer import (
    StraightforwardTransformer,
    Transformer,
    TransformerConfig,
)
from progsynth.tasks.modular import ModularTask, modular_dataset


def _pair(config: TransformerConfig, seed: int = 0) -> tuple[Transformer, StraightforwardTransformer]:
    """Both implementations with the same float64 parameters; biases made nonzero so they are exercised."""
    fast = Transformer(config, torch.Generator().manual_seed(seed), torch.float64)
    with torch.no_grad():
        for name, param in fast.named_parameters():
            if name.startswith("b_"):
                param.normal_(generator=torch.Generator().manual_seed(seed + 1))
    slow = StraightforwardTransformer(config, dtype=torch.float64)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def _value_and_grads(model: torch.nn.Module, tokens: torch.Tensor, cotangent: torch.Tensor):
    """Logits, and the gradient of <logits, cotangent> with respect to every parameter (torch.func)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def objective(p):
        return (functional_call(model, p, (tokens,)) * cotangent).sum()

    return model(tokens), grad(objective)(params)


def _assert_same_function(config: TransformerConfig, tokens: torch.Tensor, tol: float = 1e-10) -> None:
    fast, slow = _pair(config)
    outputs = config.d_vocab_out  # p, or p + 1 with unembed_equals
    cotangent = torch.randn(tokens.shape[0], outputs, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    fast_logits, fast_grads = _value_and_grads(fast, tokens, cotangent)
    slow_logits, slow_grads = _value_and_grads(slow, tokens, cotangent)
    assert fast_logits.shape == (tokens.shape[0], outputs)
    assert (fast_logits - slow_logits).abs().max() < tol
    assert fast_grads.keys() == slow_grads.keys()
    for name in fast_grads:
        assert slow_grads[name].abs().max() > 0, name  # every parameter matters
        assert (fast_grads[name] - slow_grads[name]).abs().max() < tol, name


@pytest.mark.parametrize("p", [7, 13, 23])
@pytest.mark.parametrize("init", ["nanda", "tl"])
@pytest.mark.parametrize("mlp_bias", [True, False])
def test_fast_equals_straightforward_small(p, init, mlp_bias):
    config = TransformerConfig(p=p, d_model=24, n_heads=3, d_head=8, d_mlp=40, init=init, mlp_bias=mlp_bias)
    data = modular_dataset(ModularTask(p=p, op="sub"))
    _assert_same_function(config, data.tokens())


def test_fast_equals_straightforward_on_arbitrary_tokens():
    """The tables cover every query token, so inputs need not end in '='."""
    config = TransformerConfig(p=11, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    tokens = torch.randint(0, 12, (300, 3), generator=torch.Generator().manual_seed(3))
    _assert_same_function(config, tokens)


def test_fast_equals_straightforward_at_paper_dims():
    config = TransformerConfig(p=113)
    data = modular_dataset(ModularTask(p=113))
    subset = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:200]
    _assert_same_function(config, data.tokens()[subset])


def test_parameter_names_and_shapes():
    config = TransformerConfig(p=113)
    expected = {
        "W_E": (114, 128), "W_pos": (3, 128), "W_Q": (4, 128, 32), "W_K": (4, 128, 32), "W_V": (4, 128, 32),
        "W_O": (4, 32, 128), "W_in": (128, 512), "b_in": (512,), "W_out": (512, 128), "b_out": (128,),
        "W_U": (128, 113),
    }
    for cls in (Transformer, StraightforwardTransformer):
        assert {k: tuple(v.shape) for k, v in cls(config).named_parameters()} == expected
    without_bias = {k for k, _ in Transformer(TransformerConfig(p=7, mlp_bias=False)).named_parameters()}
    assert without_bias == set(expected) - {"b_in", "b_out"}


@pytest.mark.parametrize("init", ["nanda", "tl"])
def test_initial_scales(init):
    model = Transformer(TransformerConfig(p=113, init=init), torch.Generator().manual_seed(0))
    for name, param in model.named_parameters():
        if name.startswith("b_"):
            assert bool((param == 0).all()), name
            continue
        if init == "tl":
            expected = 0.8 / math.sqrt(128)
        else:
            expected = 1 / math.sqrt(114) if name == "W_U" else 1 / math.sqrt(128)
        assert param.std().item() == pytest.approx(expected, rel=0.05), name
        assert abs(param.mean().item()) < 0.1 * expected, name


def test_seed_and_dtype_determinism():
    config = TransformerConfig(p=7, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    a = Transformer(config, torch.Generator().manual_seed(5))
    b = Transformer(config, torch.Generator().manual_seed(5), torch.float64)
    c = Transformer(config, torch.Generator().manual_seed(6))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert pb.dtype == torch.float64 and torch.equal(pa, pb.float()), name
        if name.startswith("W_"):
            assert not torch.equal(pa, pc), name


def test_vmap_over_seeds_matches_each_seed():
    config = TransformerConfig(p=7, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    models = [Transformer(config, torch.Generator().manual_seed(s), torch.float64) for s in range(3)]
    names = [name for name, _ in models[0].named_parameters()]
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k in names}
    tokens = modular_dataset(ModularTask(p=7)).tokens()
    batched = vmap(lambda p: functional_call(models[0], p, (tokens,)))(stacked)
    for s, model in enumerate(models):
        assert torch.allclose(batched[s], model(tokens), atol=1e-12)


@pytest.mark.parametrize(
    "bad", [torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 3), torch.zeros(3, dtype=torch.int64)]
)
def test_bad_tokens(bad):
    with pytest.raises(LensTypeError, match="token"):
        Transformer(TransformerConfig(p=7, d_model=8, n_heads=1, d_head=8, d_mlp=8))(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"init": "xavier"}, "init must be one of"), ({"d_model": 0}, "d_model must be an integer ≥ 1"),
     ({"n_heads": 2.5}, "n_heads"), ({"p": 1}, "p must be an integer ≥ 2"), ({"mlp_bias": 1}, "mlp_bias")],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TransformerConfig(**{"p": 7, **kwargs})


@pytest.mark.parametrize("paper", [False, True], ids=["plain", "paper-switches"])
def test_lens_training_of_the_fast_model_follows_torch_on_the_straightforward_one(paper: bool):
    """The benchmark's premise: Learner + adamw on the fast model as a lens takes the same steps as
    torch.optim.AdamW on the straightforward nn.Module (float64, Nanda's hyper-parameters). With the
    paper code's switches: p + 1 outputs and the 10-step warm-up against torch's LambdaLR."""
    from progsynth.core.learner import Learner
    from progsynth.core.losses import learning_rate, softmax_cross_entropy
    from progsynth.core.optim import adamw
    from progsynth.core.smooth import from_module

    config = TransformerConfig(p=13, d_model=16, n_heads=2, d_head=8, d_mlp=32, unembed_equals=paper)
    data = modular_dataset(ModularTask(p=13))
    x, y = data.tokens()[data.train_idx], data.labels[data.train_idx]
    fast, slow = _pair(config)
    lens = from_module(fast)
    warmup = {"warmup_steps": 10} if paper else {}
    learner = Learner(lens, softmax_cross_entropy(), adamw(1e-2, (0.9, 0.98), 1e-8, 1.0, **warmup), learning_rate(1.0))
    state = learner.init(lens.init())
    optimizer = torch.optim.AdamW(slow.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / 10, 1)) if paper else None
    for _ in range(15 if paper else 5):
        state, loss = learner.step(state, x, y)
        optimizer.zero_grad()
        reference = torch.nn.functional.cross_entropy(slow(x), y)
        reference.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        assert abs(float(loss) - float(reference.detach())) < 1e-10
    for name, param in slow.named_parameters():
        assert (state.params[name] - param.detach()).abs().max() < 1e-9, name


# --------------------------------------------------------------------------- unembed_equals (p + 1 outputs)


@pytest.mark.parametrize("p", [7, 13])
@pytest.mark.parametrize("init", ["nanda", "tl"])
@pytest.mark.parametrize("mlp_bias", [True, False])
def test_fast_equals_straightforward_with_the_equals_logit(p, init, mlp_bias):
    """With p + 1 outputs the fast path still equals the straightforward one, logits and gradients
    (the cotangent weights the '=' column too, so its gradient into W_U is checked)."""
    config = TransformerConfig(p=p, d_model=24, n_heads=3, d_head=8, d_mlp=40, init=init, mlp_bias=mlp_bias,
                               unembed_equals=True)
    _assert_same_function(config, modular_dataset(ModularTask(p=p, op="sub")).tokens())


def test_fast_equals_straightforward_with_the_equals_logit_at_paper_dims_on_arbitrary_tokens():
    config = TransformerConfig(p=113, unembed_equals=True)
    _assert_same_function(config, torch.randint(0, 114, (150, 3), generator=torch.Generator().manual_seed(4)))


def test_unembed_equals_shapes_init_and_the_other_weights_of_a_seed():
    """W_U is (d_model, p + 1) with the paper's std 1/√(p + 1); it is drawn last, so every other
    weight of a seed is the one the p-output model gets, and W_U's first p columns are not."""
    plain = Transformer(TransformerConfig(p=113), torch.Generator().manual_seed(0))
    model = Transformer(TransformerConfig(p=113, unembed_equals=True), torch.Generator().manual_seed(0))
    assert model.config.d_vocab_out == 114 and plain.config.d_vocab_out == 113
    assert tuple(model.W_U.shape) == (128, 114)
    assert model.W_U.std().item() == pytest.approx(1 / math.sqrt(114), rel=0.05)
    for (name, a), b in zip(plain.named_parameters(), model.parameters()):
        if name != "W_U":
            assert torch.equal(a, b), name
    assert model(modular_dataset(ModularTask(p=113)).tokens()[:5]).shape == (5, 114)
    assert model.unit_permutations()["W_U"] == ("resid", None)  # the '=' column is an output, not permuted
    slow = StraightforwardTransformer(TransformerConfig(p=7, unembed_equals=True))
    assert tuple(slow.W_U.shape) == (128, 8)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_unembed_equals_must_be_a_bool(bad):
    with pytest.raises(ConfigError, match="unembed_equals must be True or False"):
        TransformerConfig(p=7, unembed_equals=bad)




@pytest.mark.parametrize("row_sums", [True, False])
def test_both_ways_of_the_fast_path_equal_straightforward(monkeypatch, row_sums):
    """With the compiled row sums (plain autograd and one grad/vjp, as training) and with dense
    products (vmap, jvp, small models, no compiler), to 1e-10 in float64 on arbitrary tokens."""
    calls = []
    if not row_sums:
        monkeypatch.setattr(rowsum, "usable", lambda *tensors: False)
    else:
        monkeypatch.setattr(transformer, "ROW_SUMS_FROM", 0)  # at any size
        real = rowsum.row_sum
        monkeypatch.setattr(rowsum, "row_sum", lambda *args: calls.append(1) or real(*args))
    config = TransformerConfig(p=13, d_model=24, n_heads=3, d_head=8, d_mlp=40, unembed_equals=True)
    tokens = torch.randint(0, 14, (200, 3), generator=torch.Generator().manual_seed(5))
    _assert_same_function(config, tokens)
    assert bool(calls) == (row_sums and rowsum.ROWSUM_BACKEND == "compiled")


def test_row_sums_serve_at_the_paper_size_only():
    assert Transformer(TransformerConfig(p=113))._row_sums_pay()  # nanda: 128 >= 8 * 13
    assert not Transformer(TransformerConfig(p=53, d_model=64, n_heads=4, d_head=16, d_mlp=256))._row_sums_pay()
