"""Property-based tests of the command line against hostile input (README → Reliability).

Hypothesis generates config files, checkpoint headers and command-line arguments (wrong types,
wrong containers, huge and negative numbers, unicode, empty strings) and runs real commands on a
copy of a finished run. Every case must end with exit code 0, 1 or 2, no uncaught exception (so no
traceback), and, when the command fails, the directory it ran in exactly as it was, bytes and
folders (the lock file aside: it records the last writer's PID).

Training is the one thing stubbed here: a config the fuzzer happens to make valid may ask for a
billion epochs, so ``_Loop.run`` returns at once; everything before it (reading, validating,
locking) is the real code, and the training loop itself is tested in tests/runs.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.runs.store import CHECKPOINTS, RESUME
from progsynth.runs.train import TrainResult, _Loop, train
from tests.runs.test_train import TINY

runner = CliRunner()
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FINAL = TINY.epochs  # the finished run's last step (full batch: one step per epoch)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    train(TINY, out)
    return out


def _no_training(self: _Loop) -> TrainResult:
    """``_Loop.run`` without the steps: the first metrics row of a new run, then the result."""
    if self.stores[0].metrics().empty:
        self._log()
    rows = [{k: float(v) for k, v in store.metrics().iloc[-1].items()} for store in self.stores]
    return TrainResult([s.path for s in self.stores], self.step, self.total, rows, False, 0.0, [""] * len(rows))


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, the lock files aside."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


@pytest.fixture
def sandbox(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``check(argv, prepare)``: copy the run into a fresh folder (the working directory), let
    ``prepare(run)`` damage it, run ``progsynth argv`` there and assert the contract."""
    monkeypatch.setattr(_Loop, "run", _no_training)

    def check(argv: list[str], prepare: Any = None) -> int:
        with tempfile.TemporaryDirectory() as folder:
            run = Path(folder) / "run"
            shutil.copytree(finished_run, run)
            if prepare is not None:
                prepare(run)
            with monkeypatch.context() as inside:
                inside.chdir(folder)
                before = tree(Path(folder))
                result = runner.invoke(app, [a.replace("{RUN}", str(run)) for a in argv])
                after = tree(Path(folder))
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            (argv, repr(result.exception), result.output[-500:])
        assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.output[-500:])
        assert "Traceback" not in result.output
        if result.exit_code != 0:
            assert after == before, (argv, result.output[-500:], set(after) ^ set(before))
        event(f"{argv[0]} exit {result.exit_code}")  # --hypothesis-show-statistics shows the spread
        return result.exit_code

    yield check


# ---- generated values ------------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-10**25, 10**25), st.integers(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1e-3, 1e300, -0.0]))
WORDS = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "adam", "sgd", "transformer", "mse", "add",
                                                         "modular", "parity", "0", "1e400", "nan", "None"]))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS.filter(lambda x: not isinstance(x, float)
                                                                        or math.isfinite(x)), WORDS),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(WORDS, inner, max_size=3)), max_leaves=6)


def _fields(config: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of a config dict."""
    out = []
    for key, value in config.items():
        path = prefix + key
        out += _fields(value, path + ".") if isinstance(value, dict) and value else [path]
    return out


CONFIG = TINY.to_dict()
FIELDS = _fields(CONFIG)


@st.composite
def config_files(draw: Any) -> bytes:
    """A config.json: the real one with a few fields replaced or removed, random JSON, or not JSON."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes"]))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    config = json.loads(json.dumps(CONFIG))
    for field in draw(st.lists(st.sampled_from(FIELDS + ["extra", "task.extra"]), min_size=1, max_size=3)):
        *parents, leaf = field.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {}) if isinstance(node.get(name, {}), dict) else {}
        if draw(st.booleans()) and leaf in node:
            del node[leaf]
        else:
            node[leaf] = draw(JSON)
    return json.dumps(config).encode()


@st.composite
def checkpoint_files(draw: Any) -> bytes:
    """A safetensors file with a generated header (metadata, dtypes, shapes, offsets) and body."""
    metadata = draw(st.one_of(st.none(), JSON, st.fixed_dictionaries({"step": st.one_of(
        st.sampled_from([str(FINAL), "-5", "99999999999999999999", "3e1", " 30", "٣٠"]), JSON)})))
    tensor = st.fixed_dictionaries({"dtype": st.one_of(st.sampled_from(["F32", "F64", "I64", "BOOL", "XX"]), JSON),
                                    "shape": st.one_of(st.lists(st.integers(-2, 10**12), max_size=3), JSON),
                                    "data_offsets": st.one_of(st.lists(st.integers(-1, 64), min_size=2, max_size=2),
                                                              JSON)})
    header: Any = draw(st.dictionaries(st.sampled_from(["params['W_E']", "opt['step']", "x"]), tensor, max_size=2))
    if metadata is not None or draw(st.booleans()):
        header = {**header, "__metadata__": metadata}
    if draw(st.integers(0, 9)) == 0:
        header = draw(JSON)
    text = json.dumps(header).encode()
    length = draw(st.one_of(st.just(len(text)), st.integers(0, 2**64 - 1)))
    return struct.pack("<Q", length) + text + draw(st.binary(max_size=64))


def _write(path: str, content: bytes) -> Any:
    def prepare(run: Path) -> None:
        (run / RESUME).unlink(missing_ok=True)
        (run / path).write_bytes(content)
    return prepare


LLC_QUICK = ["--chains", "2", "--draws", "2", "--burnin", "0", "--epsilon", "1e-4", "--batch-size", "8"]


# ---- the properties --------------------------------------------------------------------------
@settings(FUZZ, max_examples=200)
@given(content=config_files())
def test_generated_config_files(sandbox: Any, content: bytes) -> None:
    sandbox(["train", "--resume", "{RUN}", "--json"], _write("config.json", content))
    sandbox(["llc", "{RUN}", "--checkpoints", str(FINAL), *LLC_QUICK, "--json"], _write("config.json", content))


@settings(FUZZ, max_examples=150)
@given(content=checkpoint_files())
def test_generated_checkpoint_headers(sandbox: Any, content: bytes) -> None:
    name = f"{CHECKPOINTS}/step_{FINAL:08d}.safetensors"
    sandbox(["train", "--resume", "{RUN}", "--json"], _write(name, content))
    sandbox(["llc", "{RUN}", "--checkpoints", str(FINAL), *LLC_QUICK, "--json"], _write(name, content))


VALUE = st.one_of(st.integers(-10**25, 10**25).map(str), st.integers(-2, 4).map(str),
                  st.floats().map(str), WORDS, st.sampled_from(["0-3", "1,1", "3,2", "5,,2", "all", "auto"]))
PATH = st.one_of(st.sampled_from(["{RUN}", "{RUN}/nowhere", "{RUN}/config.json", "{RUN}/config.json/x", "",
                                  "{RUN}/" + "x" * 5000, "{RUN}/checkpoints"]), st.text(max_size=8))
SMALL = st.one_of(st.integers(-2, 3).map(str), st.sampled_from(["10000000000000000000000", "x", "", "1.5"]))
OPTIONS = {
    "train": {"--preset": WORDS, "--config": PATH, "--out": PATH, "--resume": PATH, "--seeds": VALUE,
              "--task": WORDS, "--op": WORDS, "--p": SMALL, "--n-bits": SMALL, "--k": SMALL,
              "--n-samples": SMALL, "--function": WORDS, "--task-seed": VALUE, "--train-fraction": VALUE,
              "--split-seed": VALUE, "--model": WORDS, "--epochs": VALUE, "--lr": VALUE,
              "--weight-decay": VALUE, "--seed": VALUE, "--label-noise": VALUE, "--label-noise-seed": VALUE},
    "llc": {"--checkpoints": VALUE, "--gamma": VALUE, "--seed": VALUE, "--epsilon": VALUE,
            "--restrict": st.one_of(WORDS, st.sampled_from(["all-components", "*", "W_*,b_*", "input", ""])),
            "--data": st.one_of(WORDS, st.sampled_from(["train", "test", "all"]))},
    "llc-dln": {"--widths": VALUE, "--rank": SMALL, "--n": SMALL, "--data-seed": VALUE, "--gamma": VALUE,
                "--seed": VALUE, "--batch-size": SMALL},
    "analyze": {"--checkpoint": VALUE, "--tolerance": VALUE, "--functional-inputs": SMALL},
    "search": {"--op": WORDS, "--p": SMALL, "--max-size": SMALL, "--task": WORDS, "--n-bits": SMALL,
               "--gates": WORDS, "--train-fraction": VALUE},
    "path": {"--points": SMALL},
    "contrast": {"--a": VALUE, "--b": VALUE},
    "ntk": {"--checkpoints": VALUE, "--seed": VALUE, "--method": WORDS},
    "compare": {"--inputs": SMALL, "--k": SMALL, "--seed": VALUE},
}
POSITIONAL = {"llc": True, "analyze": True, "search": False, "contrast": True, "ntk": True, "compare": True}
"""Commands taking a run directory (search: optionally)."""
CHECKPOINT = st.one_of(PATH.map(lambda p: p + "@last"), PATH.map(lambda p: p + "@0"), PATH,
                       st.sampled_from(["{RUN}@7", "{RUN}@-1", "{RUN}@" + "9" * 30, "{RUN}@", "@3", "{RUN}@1e3"]))
"""``RUN@STEP`` arguments of ``path``, well-formed or not."""
BOUNDED = {"llc": ["--chains", SMALL, "--draws", SMALL, "--burnin", SMALL, "--batch-size", SMALL],
           "llc-dln": ["--chains", SMALL, "--draws", SMALL, "--burnin", SMALL],
           "ntk": ["--inputs", SMALL, "--top", SMALL]}
"""Options every generated call of a command carries, with small values, so a call that happens to
be valid ends in seconds (the sampler's defaults take minutes)."""


@st.composite
def command_lines(draw: Any) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    if command in POSITIONAL and (POSITIONAL[command] or draw(st.booleans())):
        argv.append(draw(PATH))
    if command == "path":
        argv += [draw(CHECKPOINT), draw(CHECKPOINT)]
    if command == "contrast":
        argv.append("--no-llc")  # the sampler's defaults take minutes; llc's own cases cover it
    if command == "compare":
        argv += [draw(PATH), "--final-only"]  # a second run (or the same one again)
    for flag in draw(st.lists(st.sampled_from(sorted(OPTIONS[command])), max_size=4, unique=True)):
        argv += [flag, draw(OPTIONS[command][flag])]
    bounded = BOUNDED.get(command, [])
    for flag, values in zip(bounded[::2], bounded[1::2]):
        argv += [flag, draw(values)]
    if command in ("llc", "llc-dln") and "--epsilon" not in argv:
        argv += ["--epsilon", "1e-4"]  # epsilon='auto' runs a sweep of 6,000 steps first
    if command == "llc-dln" and "--n" not in argv:
        argv += ["--n", "50"]
    if command == "train" and "--epochs" not in argv:
        argv += ["--epochs", draw(SMALL)]
    return argv + (["--json"] if draw(st.booleans()) else [])


@settings(FUZZ, max_examples=200)
@given(argv=command_lines())
def test_generated_command_lines(sandbox: Any, argv: list[str]) -> None:
    sandbox(argv)
