"""Program search and SGD side by side on the same tasks and training splits (``progsynth versus``).

Four experiments, each a list of *points*; a point trains one network (a normal run directory under
``OUT/runs/``) and/or runs one search, and becomes one row of ``OUT/versus.jsonl``:

- ``data``: held-out accuracy against the training fraction, for the search's MAP program and
  mixture and for the Gromov MLP (the fastest network that groks) trained on the same split with a
  fixed epoch budget; compute as program evaluations against SGD steps and seconds. The full plan
  adds transformer spot checks (the ``quick`` preset).
- ``size``: targets of growing program size at a fixed split: the search's seconds and evaluations
  to reach the target's size against the network's seconds to 99 % held-out accuracy, and the size
  at which SGD becomes the cheaper way to a correct program (None when it never does).
- ``parity``: sparse parity over n bits (k = 2, 3): the XOR-subset search (C(n, k) subsets) against
  the embedding MLP trained by plain SGD until 99 % held-out accuracy; the fitted exponent of n in
  SGD's steps; and the hidden progress (Barak et al. 2022): how much more strongly the first layer
  reads the relevant bits than the others (``_relevant_weight_ratio``), at the last checkpoint
  before the test loss drops below 0.9 ln 2.
- ``found``: for the ``data`` runs that generalised, the bits of the search's MAP program against
  the bits of the Fourier program ``analyze`` extracts from the network, and whether the two
  compute the same function on every input.

SGD stops once held-out accuracy reaches ``TARGET_ACCURACY`` plus a margin (a fifth more steps,
so a scheduled checkpoint after generalisation exists for ``found``); its steps and seconds *to
the target* are read from metrics.jsonl (seconds prorated by steps). Nothing is lost: a point whose
row exists is skipped, and a point whose run directory exists without a row resumes that run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from progsynth.errors import ConfigError, ProgsynthError
from progsynth.search.tasks import search_task

__all__ = ["EXPERIMENTS", "TARGET_ACCURACY", "VERSUS_FILE", "Point", "plan", "run_versus", "VersusResult",
           "summarise", "load_rows"]

EXPERIMENTS = ("data", "size", "parity", "found")
"""The experiments of ``progsynth versus``, in the order they run."""
TARGET_ACCURACY = 0.99
"""Held-out accuracy at which a network counts as having found the program."""
VERSUS_FILE = "versus.jsonl"
"""One row per finished point, in the output directory."""
_MARGIN = 0.2
"""Train this fraction of the steps-to-target further before stopping (see the module docstring)."""

_DROP = 0.9
"""The test loss has dropped once it is below this fraction of chance level (ln 2 for parity)."""

ProgressFn = Callable[[int, int, str], None]
"""progress(points done, points in the plan, the point starting)."""


@dataclass(frozen=True)
class Point:
    """One unit of work: an experiment, a unique key, and its settings."""

    experiment: str
    key: str
    settings: dict[str, Any] = field(hash=False)


# ---- the plan -----------------------------------------------------------------------------------
_FULL = {
    "data": {"p": 97, "ops": ("add", "sub", "mul", "x2+y2"),
             "fractions": (0.001, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.9), "epochs": 1000, "max_size": 7,
             "transformer": (("add", 0.4), ("mul", 0.4))},
    "size": {"p": 97, "fraction": 0.5, "epochs": 600,
             "targets": ("a + b", "a^2 + b^2", "(a + b)^2 - b", "a*b + a + b", "a^3 + a*b + b",
                         "(a + b)^3 + a*b", "a^3 + a*b + b^3")},
    "parity": {"ns": (10, 20, 30, 40, 50), "ks": (2, 3), "n_samples": 50_000, "epochs": 4},
}
_QUICK = {
    "data": {"p": 23, "ops": ("add",), "fractions": (0.05, 0.5), "epochs": 150, "max_size": 5,
             "transformer": ()},
    "size": {"p": 23, "fraction": 0.5, "epochs": 100, "targets": ("a + b", "a*b + a + b")},
    "parity": {"ns": (6, 8), "ks": (2,), "n_samples": 1000, "epochs": 2},
}


def _key(value: float) -> str:
    return f"{value:g}".replace(".", "p")


def plan(experiments: tuple[str, ...], quick: bool) -> list[Point]:
    """The points of ``experiments`` (full figures, or a seconds-long ``quick`` version)."""
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise ConfigError(f"unknown experiment {unknown[0]!r}; expected some of {', '.join(EXPERIMENTS)} or 'all'"
                          if unknown else f"no experiment given; expected some of {', '.join(EXPERIMENTS)}")
    spec = _QUICK if quick else _FULL
    points: list[Point] = []
    if "data" in experiments or "found" in experiments:
        d = spec["data"]
        for op in d["ops"]:
            for f in d["fractions"]:
                points.append(Point("data", f"data-gromov-{op}-{_key(f)}",
                                    {"model": "gromov", "op": op, "p": d["p"], "fraction": f,
                                     "epochs": d["epochs"], "max_size": d["max_size"]}))
        for op, f in d["transformer"]:
            points.append(Point("data", f"data-transformer-{op}-{_key(f)}",
                                {"model": "transformer", "op": op, "p": 53, "fraction": f,
                                 "epochs": 1300, "max_size": d["max_size"]}))
    if "size" in experiments:
        s = spec["size"]
        for target in s["targets"]:
            points.append(Point("size", "size-" + "".join(c for c in target if c.isalnum() or c in "+-*^"),
                                {"op": target, "p": s["p"], "fraction": s["fraction"], "epochs": s["epochs"]}))
    if "parity" in experiments:
        q = spec["parity"]
        for k in q["ks"]:
            for n in q["ns"]:
                points.append(Point("parity", f"parity-n{n}-k{k}",
                                    {"n_bits": n, "k": k, "n_samples": q["n_samples"], "epochs": q["epochs"]}))
    if "found" in experiments:
        for point in [p for p in points if p.experiment == "data"]:
            points.append(Point("found", "found-" + point.key[len("data-"):], {"from": point.key}))
    return points


# ---- SGD and search on one point ----------------------------------------------------------------
def _train_until(config: Any, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) ``config`` in ``run_dir`` until held-out accuracy reaches the target plus
    the margin, or the budget ends; steps and seconds to the target from the metrics."""
    from progsynth.runs.store import RunStore
    from progsynth.runs.train import resume, train

    reached: dict[str, int] = {}

    def progress(step: int, total: int, rows: list[dict]) -> None:
        if "step" not in reached and rows[0]["test_accuracy"] >= TARGET_ACCURACY:
            reached["step"] = step

    def should_stop(step: int) -> bool:
        return "step" in reached and step >= math.ceil(reached["step"] * (1 + _MARGIN)) + 10

    started = time.perf_counter()
    if (run_dir / "config.json").exists():
        result = resume(run_dir, progress=progress, should_stop=should_stop)
    else:
        result = train(config, run_dir, progress=progress, should_stop=should_stop)
    seconds = time.perf_counter() - started
    metrics = RunStore.open(run_dir).metrics()
    hit = metrics[metrics["test_accuracy"] >= TARGET_ACCURACY]
    steps_to = int(hit["step"].iloc[0]) if len(hit) else None
    per_step = seconds / max(result.steps, 1)
    return {"run": str(run_dir), "generalised": steps_to is not None, "sgd_steps": steps_to,
            "sgd_epochs": None if steps_to is None else steps_to / config_steps_per_epoch(config),
            "sgd_seconds": None if steps_to is None else per_step * steps_to,
            "sgd_steps_run": result.steps, "sgd_seconds_run": seconds,
            "sgd_test_accuracy": float(metrics["test_accuracy"].max()),
            "sgd_final_test_accuracy": float(metrics["test_accuracy"].iloc[-1])}


def config_steps_per_epoch(config: Any) -> float:
    """Optimizer steps per epoch of ``config`` (1 when full batch)."""
    if config.batch_size is None:
        return 1.0
    n_train = len(config.task.dataset().train_idx)
    return float(math.ceil(n_train / config.batch_size))


def _search(task: Any, max_size: int, gates: tuple[str, ...] | None = None) -> dict[str, Any]:
    r = search_task(task, max_size, gates).result
    return {"search_verdict": r.verdict_kind, "search_map": r.map_text, "search_map_bits": r.map_bits,
            "search_map_size": r.map_size, "search_map_accuracy": r.map_heldout_accuracy,
            "search_mixture_accuracy": r.mixture_heldout_accuracy, "search_evaluations": r.evaluations,
            "search_programs": r.programs_enumerated, "search_behaviours": r.distinct_behaviours,
            "search_seconds": r.seconds}


def _modular_config(model: str, op: str, p: int, fraction: float, epochs: int) -> Any:
    from progsynth.runs.config import preset

    base = preset("gromov" if model == "gromov" else "quick")
    changes: dict[str, Any] = {"task.op": op, "task.p": p, "task.train_fraction": fraction, "epochs": epochs}
    if model == "gromov":
        changes["metrics_every"] = 5
    return base.override(**changes)


def _data_point(point: Point, out: Path) -> dict[str, Any]:
    s = point.settings
    config = _modular_config(s["model"], s["op"], s["p"], s["fraction"], s["epochs"])
    row = {"model": s["model"], "op": s["op"], "p": s["p"], "fraction": s["fraction"], "epochs_budget": s["epochs"],
           "n_train": len(config.task.dataset().train_idx)}
    row.update(_search(config.task, s["max_size"]))
    row.update(_train_until(config, out / "runs" / point.key))
    return row


def _size_point(point: Point, out: Path) -> dict[str, Any]:
    from progsynth.search.grammar import arithmetic_grammar
    from progsynth.tasks.expression import parse_arithmetic, size as tree_size

    s = point.settings
    config = _modular_config("gromov", s["op"], s["p"], s["fraction"], s["epochs"])
    task = config.task
    tree = parse_arithmetic(s["op"])
    target_size = tree_size(tree)
    bits = arithmetic_grammar(s["p"]).description_bits(tree)
    row = {"target": s["op"], "target_size": target_size, "target_bits": bits, "p": s["p"],
           "fraction": s["fraction"], "epochs_budget": s["epochs"], "n_train": len(task.dataset().train_idx)}
    row.update(_search(task, target_size))
    row.update(_train_until(config, out / "runs" / point.key))
    return row


def _relevant_weight_ratio(run_dir: Path, relevant: tuple[int, ...]) -> list[dict[str, float]]:
    """Per checkpoint: how strongly the first layer reads the relevant bits against the others.

    Bit i enters the embedding MLP as the embedding of its value in the i-th block of the first
    layer's input, so flipping it moves the first pre-activations by (W_E[1] − W_E[0]) · W_0[block i];
    the ratio is the mean norm of that over the relevant bits to the mean over the others (1 at
    initialisation, up to chance)."""
    from progsynth.interp.extract import load_params
    from progsynth.runs.experiment import Experiment
    from progsynth.runs.store import RunStore

    store = RunStore.open(run_dir)
    experiment = Experiment(store.config())
    d_embed = store.config().model.d_model
    series = []
    for step in store.checkpoint_steps():
        params = load_params(store, experiment, step)
        flip = (params["W_E"][1] - params["W_E"][0]).double()
        weights = params["W_0"].double()
        n_bits = weights.shape[0] // d_embed
        per_bit = (flip @ weights.reshape(n_bits, d_embed, -1)).norm(dim=-1)
        mask = np.zeros(n_bits, dtype=bool)
        mask[list(relevant)] = True
        series.append({"step": step, "ratio": float(per_bit[mask].mean() / per_bit[~mask].mean())})
    return series


def _parity_point(point: Point, out: Path) -> dict[str, Any]:
    from progsynth.runs.config import preset
    from progsynth.runs.store import RunStore

    s = point.settings
    config = preset("parity").override(**{"task.n_bits": s["n_bits"], "task.k": s["k"],
                                          "task.n_samples": s["n_samples"], "epochs": s["epochs"]})
    task = config.task
    row = {"n_bits": s["n_bits"], "k": s["k"], "n_samples": s["n_samples"], "relevant": list(task.relevant_bits),
           "subsets": math.comb(s["n_bits"], s["k"])}
    row.update(_search(task, 2 * s["k"] - 1, ("xor",)))
    row["search_found_planted"] = _same_subset(row["search_map"], s["n_bits"], task.relevant_bits)
    run_dir = out / "runs" / point.key
    row.update(_train_until(config, run_dir))
    series = _relevant_weight_ratio(run_dir, task.relevant_bits)
    metrics = RunStore.open(run_dir).metrics()
    dropped = metrics[metrics["test_loss"] < _DROP * math.log(2)]
    drop_step = int(dropped["step"].iloc[0]) if len(dropped) else None
    before = [r for r in series if drop_step is not None and r["step"] < drop_step]
    row.update({"loss_drop_step": drop_step, "weight_ratio": series,
                "ratio_before_drop": before[-1]["ratio"] if before else None,
                "ratio_before_drop_step": before[-1]["step"] if before else None})
    return row


def _same_subset(text: str | None, n_bits: int, relevant: tuple[int, ...]) -> bool:
    """Whether the XOR program ``text`` (None: no program) reads exactly the relevant bits."""
    from progsynth.tasks.expression import parse_boolean, variables

    return text is not None and variables(parse_boolean(text, n_bits)) == {f"x{i}" for i in relevant}


def _found_point(point: Point, rows: dict[str, dict]) -> dict[str, Any]:
    """Compare the search's MAP with the program extracted from the network of a ``data`` point."""
    import torch

    from progsynth.interp.extract import extract_checkpoint
    from progsynth.tasks.expression import evaluate, parse_arithmetic

    source = rows.get(point.settings["from"])
    if source is None:
        raise ConfigError(f"found point {point.key!r} needs data point {point.settings['from']!r} first")
    row = {"from": point.settings["from"], "model": source["model"], "op": source["op"],
           "fraction": source["fraction"], "search_map": source["search_map"],
           "search_map_bits": source["search_map_bits"], "generalised": source["generalised"]}
    if not source["generalised"] or source["search_map"] is None:
        return {**row, "compared": False, "reason": "the network did not generalise" if not source["generalised"]
                else "the search found no program"}
    try:
        extraction = extract_checkpoint(source["run"])
    except ProgsynthError as error:
        return {**row, "compared": False, "reason": str(error)}
    p = source["p"]
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    network_program = extraction.program.predict(a, b).numpy()
    values, defined = evaluate(parse_arithmetic(source["search_map"]), {"a": a.numpy(), "b": b.numpy()}, p)
    agree = network_program[defined] == np.asarray(values)[defined]
    return {**row, "compared": True, "extracted_program": extraction.program.text(),
            "extracted_bits": extraction.description_bits, "extraction_verdict": extraction.verdict_kind,
            "extracted_accuracy": extraction.accuracy, "checkpoint": extraction.step,
            "same_function_fraction": float(agree.mean()), "same_function": bool(agree.all()),
            "inputs_compared": int(defined.sum())}


# ---- running and summarising --------------------------------------------------------------------
def load_rows(out: str | Path) -> dict[str, dict]:
    """The finished points of an output directory by key (empty when none)."""
    file = Path(out) / VERSUS_FILE
    rows: dict[str, dict] = {}
    if file.exists():
        for line in file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["key"]] = row
    return rows


@dataclass
class VersusResult:
    """Rows by experiment and the summary figures (``summarise``)."""

    out: Path
    rows: dict[str, list[dict]]
    computed: list[str]
    skipped: list[str]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "computed": self.computed, "skipped": self.skipped, **self.summary}


def run_versus(out: str | Path, experiments: tuple[str, ...] = EXPERIMENTS, quick: bool = False,
               progress: ProgressFn | None = None) -> VersusResult:
    """Run the points of ``experiments`` not yet in ``OUT/versus.jsonl`` and summarise all of them."""
    out = Path(out)
    points = plan(experiments, quick)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"versus output {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(out)
    computed, skipped = [], []
    runners = {"data": _data_point, "size": _size_point, "parity": _parity_point}
    for i, point in enumerate(points):
        if point.key in rows:
            skipped.append(point.key)
            continue
        if progress is not None:
            progress(i, len(points), point.key)
        if point.experiment == "found":
            row = _found_point(point, rows)
        else:
            row = runners[point.experiment](point, out)
        row = {"experiment": point.experiment, "key": point.key, "quick": quick, **row}
        with open(out / VERSUS_FILE, "a") as handle:
            handle.write(json.dumps(row, default=float) + "\n")
        rows[point.key] = row
        computed.append(point.key)
    if progress is not None:
        progress(len(points), len(points), "")
    chosen = {p.key for p in points}
    by_experiment = {e: [rows[k] for k in rows if k in chosen and rows[k]["experiment"] == e] for e in experiments}
    return VersusResult(out, by_experiment, computed, skipped, summarise(by_experiment))


def _fit_exponent(ns: list[int], steps: list[int]) -> float | None:
    """Least-squares slope of log(steps) on log(n) (None with fewer than two points)."""
    if len(ns) < 2:
        return None
    return float(np.polyfit(np.log(ns), np.log(steps), 1)[0])


def summarise(rows: dict[str, list[dict]]) -> dict[str, Any]:
    """The figures the README quotes, from the rows of each experiment."""
    summary: dict[str, Any] = {}
    if rows.get("data"):
        data = {}
        for r in rows["data"]:
            entry = data.setdefault(f"{r['model']}:{r['op']}", {"fractions": [], "sgd": [], "map": [], "mixture": []})
            entry["fractions"].append(r["fraction"])
            entry["sgd"].append(r["sgd_test_accuracy"])
            entry["map"].append(r["search_map_accuracy"])
            entry["mixture"].append(r["search_mixture_accuracy"])
        for entry in data.values():
            ok = [f for f, a in zip(entry["fractions"], entry["sgd"]) if a >= TARGET_ACCURACY]
            entry["sgd_smallest_fraction"] = min(ok) if ok else None
            found = [f for f, a in zip(entry["fractions"], entry["map"]) if a is not None and a >= TARGET_ACCURACY]
            entry["search_smallest_fraction"] = min(found) if found else None
        summary["data"] = data
    if rows.get("size"):
        sizes = sorted(rows["size"], key=lambda r: r["target_size"])
        cheaper = [r["target_size"] for r in sizes
                   if r["generalised"] and r["search_map_accuracy"] is not None and r["sgd_seconds"] < r["search_seconds"]]
        summary["size"] = {
            "targets": [{"target": r["target"], "size": r["target_size"], "search_seconds": r["search_seconds"],
                         "search_evaluations": r["search_evaluations"], "search_correct": r["search_map_accuracy"] == 1.0,
                         "sgd_seconds": r["sgd_seconds"], "sgd_generalised": r["generalised"]} for r in sizes],
            "sgd_cheaper_from_size": min(cheaper) if cheaper else None}
    if rows.get("parity"):
        parity: dict[str, Any] = {}
        for k in sorted({r["k"] for r in rows["parity"]}):
            rs = sorted((r for r in rows["parity"] if r["k"] == k), key=lambda r: r["n_bits"])
            done = [r for r in rs if r["generalised"]]
            parity[f"k{k}"] = {
                "n": [r["n_bits"] for r in rs], "sgd_steps": [r["sgd_steps"] for r in rs],
                "search_evaluations": [r["search_evaluations"] for r in rs],
                "search_seconds": [r["search_seconds"] for r in rs], "subsets": [r["subsets"] for r in rs],
                "search_found_planted": all(r["search_found_planted"] for r in rs),
                "sgd_exponent": _fit_exponent([r["n_bits"] for r in done], [r["sgd_steps"] for r in done]),
                "ratio_before_drop": [r["ratio_before_drop"] for r in rs]}
        summary["parity"] = parity
    if rows.get("found"):
        compared = [r for r in rows["found"] if r["compared"]]
        summary["found"] = {
            "compared": len(compared), "same_function": sum(r["same_function"] for r in compared),
            "pairs": [{"op": r["op"], "fraction": r["fraction"], "model": r["model"], "search": r["search_map"],
                       "search_bits": r["search_map_bits"], "extracted_bits": r["extracted_bits"],
                       "same_function": r["same_function"]} for r in compared]}
    return summary
