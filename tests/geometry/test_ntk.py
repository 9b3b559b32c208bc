"""geometry/ntk.py and run_ntk.py: the matrix-free NTK against dense J Jᵀ, Lanczos against eigh,
Hutchinson's trace, Fourier content of eigenfunctions, the memory guard, and rows at a run's checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from progsynth.core.smooth import mlp
from progsynth.errors import ConfigError, ResourceError
from progsynth.geometry.ntk import (NTKConfig, NTKOperator, effective_rank, estimate_memory, frequency_content,
                                    ntk_spectrum)
from progsynth.geometry.run_ntk import load_ntk, measure_run_ntk
from progsynth.interp.relabel import candidate_relabellings, group_grid
from progsynth.models import build_model
from progsynth.runs.config import ModelConfig, RunConfig
from progsynth.runs.store import RunStore
from progsynth.runs.train import train
from progsynth.tasks.modular import ModularTask
from progsynth.tasks.parity import ParityTask

TASK = ModularTask(p=7, train_fraction=0.5)
TINY = {"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32}


def tiny_transformer(rows: int = 12) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    module = build_model("transformer", TASK, seed=0, dtype=torch.float64, **TINY)
    params = {k: v.detach() for k, v in module.named_parameters()}
    return module, params, TASK.dataset().inputs("tokens")[:rows]


def dense_jacobian(module: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    jac = jacrev(lambda p: functional_call(module, p, (x,)).reshape(-1))(params)
    return torch.cat([jac[name].reshape(jac[name].shape[0], -1) for name in params], dim=1)


def test_the_operator_is_j_j_transpose():
    module, params, x = tiny_transformer()
    jacobian = dense_jacobian(module, params, x)
    operator = NTKOperator(module, params, x)
    assert (operator.rows, operator.classes, operator.parameters) == (12, 7, jacobian.shape[1])
    v = torch.randn(operator.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = jacobian @ (jacobian.T @ v)
    assert torch.allclose(operator.matvec(v), expected, rtol=0, atol=1e-10 * float(expected.abs().max()))
    assert torch.allclose(operator.jacobian(), jacobian, rtol=0, atol=1e-12)  # N·C ≤ d: by jacrev
    gromov = build_model("gromov", TASK, seed=0, dtype=torch.float64, d_mlp=3)  # N·C > d: one jvp per parameter
    g_params = {k: v.detach() for k, v in gromov.named_parameters()}
    g_x = TASK.dataset().inputs("onehot", torch.float64)
    assert torch.allclose(NTKOperator(gromov, g_params, g_x).jacobian(chunk_size=7),
                          dense_jacobian(gromov, g_params, g_x), rtol=0, atol=1e-12)


def test_lanczos_and_dense_agree_with_eigh():
    module, params, x = tiny_transformer()
    jacobian = dense_jacobian(module, params, x)
    exact = np.linalg.eigvalsh((jacobian @ jacobian.T).numpy())[::-1]
    lanczos = ntk_spectrum(module, params, x, top=6, method="lanczos", probes=16)
    dense = ntk_spectrum(module, params, x, top=6, method="dense")
    auto = ntk_spectrum(module, params, x, top=6)
    assert auto.method == "dense" and lanczos.method == "lanczos"
    np.testing.assert_allclose(lanczos.eigenvalues, exact[:6], rtol=1e-8)
    np.testing.assert_allclose(dense.eigenvalues, exact[:6], rtol=1e-10)
    np.testing.assert_allclose(dense.all_eigenvalues, exact, rtol=1e-10, atol=1e-10 * exact[0])
    theta = (jacobian @ jacobian.T).numpy()
    for spectrum in (lanczos, dense):
        vectors = spectrum.eigenvectors.reshape(6, -1).numpy()
        assert spectrum.eigenvectors.shape == (6, 12, 7)
        np.testing.assert_allclose(vectors @ theta, spectrum.eigenvalues[:, None] * vectors, atol=1e-8 * exact[0])
    trace = float((jacobian**2).sum())
    assert dense.trace == pytest.approx(trace, rel=1e-12) and dense.trace_stderr == 0 and dense.probes == 0
    assert lanczos.trace_stderr > 0 and abs(lanczos.trace - trace) < 4 * lanczos.trace_stderr
    assert lanczos.probes == 16 and lanczos.matvecs > 6
    assert dense.top_share == pytest.approx(exact[:6].sum() / trace)
    assert lanczos.effective_rank == pytest.approx(dense.effective_rank, rel=1e-8)
    assert 1 <= dense.effective_rank <= 6
    assert set(dense.to_dict()) >= {"eigenvalues", "trace", "trace_stderr", "top_share", "effective_rank",
                                    "method", "matvecs", "seconds"}


def test_a_para_of_hand_written_primitives():
    model = mlp([5, 8, 4], "tanh", dtype=torch.float64)
    params = model.init(torch.Generator().manual_seed(0))
    x = torch.randn(15, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dense = ntk_spectrum(model, params, x, top=4, method="dense")
    lanczos = ntk_spectrum(model, params, x, top=4, method="lanczos")
    np.testing.assert_allclose(lanczos.eigenvalues, dense.eigenvalues, rtol=1e-8)


def test_effective_rank():
    assert effective_rank(np.ones(5)) == pytest.approx(5.0)
    assert effective_rank(np.array([3.0, 0.0, -1e-18])) == pytest.approx(1.0)
    assert math.isnan(effective_rank(np.zeros(3)))


@pytest.mark.parametrize("op, relabelling", [("add", "identity"), ("mul", "discrete log")])
def test_frequency_content_of_a_program_direction(op: str, relabelling: str):
    p = 11
    data = ModularTask(p=p, op=op).dataset()
    r = next(c for c in candidate_relabellings(p) if c.name == relabelling)
    grid = group_grid(r, data.operands)
    n = grid.n
    rows = torch.randperm(data.operands.shape[0], generator=torch.Generator().manual_seed(0))[:60].sort().values
    x, y = grid.x[rows], grid.y[rows]
    inside = (x >= 0) & (y >= 0)
    s = ((x + y).unsqueeze(1) - torch.arange(n).unsqueeze(0)).to(torch.float64)

    def program(k: int, phase: float) -> torch.Tensor:
        u = torch.zeros(60, p, dtype=torch.float64)
        u[:, grid.classes] = torch.where(inside.unsqueeze(1), torch.cos(2 * math.pi * k * s / n + phase), 0.0)
        return u

    vectors = torch.stack([program(3, 0.0), program(2, 1.1), program(3, 0.4) + program(4, 2.0)])
    content = frequency_content(vectors, grid, rows, [3])
    assert content.frequencies == tuple(range(1, n // 2 + 1)) and content.shares.shape == (3, n // 2)
    expected = np.zeros((3, n // 2))
    expected[0, 2] = expected[1, 1] = 1.0
    expected[2, 2] = expected[2, 3] = 0.5
    np.testing.assert_allclose(content.shares, expected, atol=0.05 if relabelling == "identity" else 0.1)
    np.testing.assert_allclose(content.shares[:2], expected[:2], atol=1e-12)
    np.testing.assert_allclose(content.key_share[:2], [1.0, 0.0], atol=1e-12)
    assert frequency_content(vectors, grid, rows, [3, 4]).key_share[2] == pytest.approx(1.0)
    np.testing.assert_allclose(content.coverage, 1.0)
    with pytest.raises(ConfigError, match="key frequencies"):
        frequency_content(vectors, grid, rows, [n])


def test_the_memory_guard_refuses_before_any_work():
    module, params, x = tiny_transformer()
    estimate = estimate_memory(module, params, x, top=5)
    jacobian_bytes = estimate.rows * estimate.classes * estimate.parameters * 8
    assert estimate.lanczos_bytes > 0 and estimate.dense_bytes > jacobian_bytes
    with pytest.raises(ResourceError, match=r"needs about [0-9.e-]+ GiB.*--inputs"):
        ntk_spectrum(module, params, x, top=5, method="lanczos", max_memory_bytes=1000)
    big = estimate.dense_bytes - 1  # dense does not fit: auto falls back to Lanczos
    assert ntk_spectrum(module, params, x, top=5, max_memory_bytes=big).method == "lanczos"


def test_config_validation_and_rows():
    for field, value in (("inputs", 0), ("top", 1.5), ("probes", 1), ("seed", -1), ("method", "qr"),
                         ("max_memory_bytes", 0)):
        with pytest.raises(ConfigError, match=field):
            NTKConfig(**{field: value}).validate()
    rows = NTKConfig(inputs=10, seed=3).rows(50)
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 10
    assert torch.equal(rows, NTKConfig(inputs=10, seed=3).rows(50))
    assert not torch.equal(rows, NTKConfig(inputs=10, seed=4).rows(50))
    assert NTKConfig(inputs=100).rows(49).tolist() == list(range(49))


SMALL = NTKConfig(inputs=40, top=4, probes=4)


def test_rows_at_a_runs_checkpoints_and_a_rerun_skips_them(run: Path):
    steps = RunStore.open(run).checkpoint_steps()
    chosen = [steps[0], steps[-1]]
    seen = []
    result = measure_run_ntk(run, chosen, SMALL, progress=lambda done, total, step: seen.append((done, total, step)))
    assert result.computed == tuple(chosen) and result.skipped == ()
    assert seen == [(1, 2, chosen[0]), (2, 2, chosen[1])]
    table = result.table
    assert table["step"].tolist() == chosen and (table["analysis"] == "ntk").all()
    for _, row in table.iterrows():
        assert len(row["eigenvalues"]) == 4 and row["eigenvalues"] == sorted(row["eigenvalues"], reverse=True)
        assert row["inputs"] == 40 and row["method"] == "dense" and row["factorisation_error"] < 1e-10
        assert row["function_gradient_norm"] > 0 and row["gradient_norm"] > 0
        assert row["relabelling"] == "identity" and row["key_frequencies"]
        assert len(row["frequency_content"]) == 4 and all(len(s) == 23 // 2 for s in row["frequency_content"])
        assert all(0 <= s <= 1 + 1e-9 for s in row["key_share"])
        assert 1 <= row["effective_rank"] <= 4 and 0 < row["top_share"] <= 1
        assert row["ntk_config"] == {"inputs": 40, "top": 4, "probes": 4, "seed": 0, "method": "auto"}
    again = measure_run_ntk(run, chosen, SMALL)
    assert again.computed == () and again.skipped == tuple(chosen)
    assert len(load_ntk(run)) == 2 and len(RunStore.open(run).measures()) == 2
    other = measure_run_ntk(run, [steps[-1]], NTKConfig(inputs=40, top=3, probes=4, method="lanczos"))
    assert other.computed == (steps[-1],) and other.table["method"].tolist() == ["lanczos"]
    assert len(load_ntk(run, SMALL)) == 2 and result.to_dict()["computed"] == chosen
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["step"] == chosen[0]


def test_refused_runs_write_nothing(run: Path):
    with pytest.raises(ResourceError, match="--inputs"):
        measure_run_ntk(run, None, NTKConfig(inputs=40, max_memory_bytes=1000))
    assert RunStore.open(run).measures().empty


def test_a_task_without_a_fourier_program(tmp_path: Path):
    config = RunConfig(task=ParityTask(n_bits=5, k=2), model=ModelConfig(name="gromov", d_mlp=6), loss="mse",
                       epochs=4, metrics_every=2, max_checkpoints=2)
    train(config, tmp_path / "parity")
    result = measure_run_ntk(tmp_path / "parity", None, NTKConfig(inputs=20, top=3, probes=4))
    assert len(result.computed) == 2
    for _, row in result.table.iterrows():
        assert row["relabelling"] is None and row["frequency_content"] is None and row["key_share"] is None
        assert len(row["eigenvalues"]) == 3 and row["factorisation_error"] < 1e-10


def test_the_eigenspace_share_sees_a_direction_that_no_single_vector_points_along():
    """Two vectors mixing a frequency-3 program function with class-constant functions (as the
    eigenvectors of a degenerate eigenvalue may): neither lies along frequency 3, their span holds
    both of its functions."""
    p = 11
    data = ModularTask(p=p).dataset()
    grid = group_grid(candidate_relabellings(p)[0], data.operands)
    rows = torch.arange(data.operands.shape[0])
    s = ((grid.x + grid.y).unsqueeze(1) - torch.arange(p).unsqueeze(0)).to(torch.float64)
    cos, sin = torch.cos(2 * math.pi * 3 * s / p), torch.sin(2 * math.pi * 3 * s / p)
    other = torch.zeros_like(cos)
    other[:, 0] = cos.norm() / math.sqrt(cos.shape[0])  # a class-constant function as long as the others
    mixed = torch.stack([cos + other, sin - other, cos - other, sin + other])
    content = frequency_content(mixed, grid, rows, [3])
    assert content.key_share.max() <= 0.5 + 1e-9
    assert content.eigenspace_key_share == pytest.approx(1.0, abs=1e-12)
    assert content.eigenspace_shares[2] == pytest.approx(1.0, abs=1e-12) and content.eigenspace_shares[0] < 1e-12
    single = frequency_content(mixed[:1], grid, rows, [3])
    assert single.eigenspace_key_share == pytest.approx(0.25, abs=1e-9)  # one direction of two, half of it in it
