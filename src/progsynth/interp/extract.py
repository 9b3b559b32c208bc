"""Program extraction: the small symbolic program a checkpoint implements, run and measured.

``extract(experiment, params)`` reads the network's logits on every pair and

1. scores every relabelling (``interp.relabel``: the named candidates, plus the cyclic isotope of
   the network's own answer table when it has one) by the fraction of the held-out logits that a
   Fourier program in it explains (``frequencies.fit_logits``) and keeps the best (the first
   listed on a tie, so a named relabelling wins over an equal isotope);
2. takes its key frequencies (``frequencies.key_frequencies``) and builds the program

       logit(c) = Σ_k α_k cos(2πk(x + y − z)/n + φ_k),   x = f(a), y = g(b), z = h(c),

   with one constant answer for the pairs outside the group (the network's most frequent answer
   on the held-out ones; 0 for multiplication), quantised as described below;
3. reports its accuracy on all pairs and on the held-out ones, its agreement with the network's
   argmax, its description length against a lookup table, ablations, and a verdict.

Description length (bits, every field rounded up to whole bits): the relabelling
(``Relabelling.bits``), the number of terms K (⌈log2(⌊n/2⌋ + 1)⌉), each frequency index
(⌈log2 ⌊n/2⌋⌉), the quantisation depth q (4 bits), each term's amplitude and phase (q bits each),
and the constant answer outside the group (⌈log2 p⌉) when there is one. Amplitudes are stored as
fractions of the largest on the 2^q levels 1/2^q, 2/2^q, ..., 1 (never 0: a key frequency stays in
the program), and phases on 2^q even steps of a turn;
q is the smallest depth (1..16) at which the quantised program answers every pair as the
unquantised fit does, and the program that runs is the quantised one. The overall scale of the
logits is kept as a float outside the count: it never changes an answer. A lookup table costs
N log2 p bits for the N pairs (p² log2 p for most tasks).

Ablations. *Embedding*: the operand embeddings (``network.operand_embeddings``) are Fourier
transformed in group order and a frequency is removed there, before anything downstream can use
it; shared embedding rows are read in a's order x = f(a) (for the named relabellings negation
keeps every frequency's subspace, so b's order gives the same ablation). *Logits*: the
frequency's directions cos/sin(w_k(x + y)) are removed from the logits (``frequencies.key_logits``).
Each key frequency alone, all key frequencies, and everything but the key frequencies; the loss
is the run's own (cross-entropy or MSE), on all pairs.

Verdict, read on the held-out pairs (a memorising network gets its training pairs right by memory,
so only held-out pairs tell a program from a table). ``program`` when the program answers at least
99 % of them correctly *and* agrees with the network's argmax on at least 99 % (a weak Fourier
component of the logits can answer correctly where the network does not: that program is not the
network's); ``partial`` when both reach half; ``none`` otherwise, and the text says which case it
is, with the best relabelling's explained fraction: the network does not beat chance (accuracy
more than three binomial standard deviations above 1/p, ``beats_chance``) and only memorises; the
network generalises but Fourier features in no relabelling follow it; or the network generalises
too little for a program. When the best relabelling is not the identity, the text also gives the
fraction a Fourier program explains in the residues' own order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from progsynth.errors import ConfigError, NotApplicableError, RunError
from progsynth.interp.fourier import DTYPE, fourier_1d, fourier_basis
from progsynth.interp.frequencies import (KEY_THRESHOLD, NEURON_THRESHOLD, LogitFit, NeuronClusters,
                                          embedding_norms, fit_logits, key_frequencies, key_logits,
                                          neuron_clusters)
from progsynth.interp.network import loss_on, operand_embeddings
from progsynth.interp.relabel import (GroupGrid, RelabelError, Relabelling, candidate_relabellings,
                                      cyclic_isotope, group_grid)
from progsynth.runs.experiment import Experiment
from progsynth.runs.store import RunStore

__all__ = ["Term", "Program", "RelabellingScore", "Ablation", "FrequencyEvidence", "Extraction",
           "extract", "extract_checkpoint", "load_params", "beats_chance", "ablations", "GENERALISING", "PARTIAL"]

GENERALISING = 0.99
"""Held-out accuracy and agreement with the network from which the extracted program counts as the
network's program."""
PARTIAL = 0.5
"""Held-out accuracy and agreement from which it counts as a partial program; below, there is none."""
MAX_QUANTISATION = 16
"""Deepest quantisation tried for amplitudes and phases (bits each)."""


@dataclass(frozen=True)
class Term:
    """α cos(2πk(x + y − z)/n + φ)."""

    frequency: int
    amplitude: float
    phase: float


@dataclass(frozen=True, eq=False)
class Program:
    """An executable Fourier program: ``program(a, b)`` → c, ``program.logits(a, b)`` → p logits."""

    relabelling: Relabelling
    terms: tuple[Term, ...]
    default_class: int | None
    """The answer for pairs outside the group (None when the relabelling leaves no residue out)."""
    quantisation_bits: int
    """q: bits per amplitude and per phase."""

    @property
    def p(self) -> int:
        return self.relabelling.p

    def batch_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(M, p) float64 logits for operand tensors a, b (M,): the Fourier sum over the group
        classes, −inf for classes outside it; outside the group, 0 at the constant answer and −inf
        elsewhere."""
        r = self.relabelling
        a, b = torch.as_tensor(a, dtype=torch.int64), torch.as_tensor(b, dtype=torch.int64)
        if bool(((a < 0) | (a >= self.p) | (b < 0) | (b >= self.p)).any()):
            raise ConfigError(f"program operands must be residues in [0, {self.p}), got a={a.tolist()}, b={b.tolist()}")
        x, y, z = r.f[a], r.g[b], r.h
        inside = (x >= 0) & (y >= 0)
        out = torch.full((a.numel(), self.p), -math.inf, dtype=DTYPE)
        s = ((x + y).unsqueeze(1) - z.unsqueeze(0)).to(DTYPE)  # (M, p)
        value = torch.zeros_like(s)
        for t in self.terms:
            value += t.amplitude * torch.cos(2 * math.pi * t.frequency * s / r.n + t.phase)
        group = inside.unsqueeze(1) & (z >= 0).unsqueeze(0)
        out[group] = value[group]
        if self.default_class is not None:
            out[~inside, self.default_class] = 0.0
        return out

    def predict(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(M,) int64 answers for operand tensors a, b."""
        return self.batch_logits(a, b).argmax(1)

    def logits(self, a: int, b: int) -> list[float]:
        """The p logits of one pair (see ``batch_logits``)."""
        return self.batch_logits(torch.tensor([a]), torch.tensor([b]))[0].tolist()

    def __call__(self, a: int, b: int) -> int:
        """The program's answer c for one pair."""
        return int(self.predict(torch.tensor([a]), torch.tensor([b]))[0])

    @property
    def description_bits(self) -> int:
        """Bits to write the program down (module docstring for the encoding)."""
        n_freq = self.relabelling.n // 2
        bits = self.relabelling.bits + math.ceil(math.log2(n_freq + 1)) + 4
        bits += len(self.terms) * (math.ceil(math.log2(n_freq)) + 2 * self.quantisation_bits)
        if self.default_class is not None:
            bits += math.ceil(math.log2(self.p))
        return bits

    def text(self) -> str:
        """The program as readable text."""
        r = self.relabelling
        lines = [f"relabelling: {r.name}: {r.formula}"]
        if r.name == "cyclic isotope":
            for label, m in (("f", r.f), ("g", r.g), ("h", r.h)):
                lines.append(f"  {label} = {m.tolist()}  (-1: outside the group)")
        if self.default_class is not None:
            out_a = (r.f < 0).nonzero().flatten().tolist()
            out_b = (r.g < 0).nonzero().flatten().tolist()
            cases = [f"a in {set(out_a)}" if out_a else "", f"b in {set(out_b)}" if out_b else ""]
            lines.append(f"if {' or '.join(c for c in cases if c)}: c = {self.default_class}")
        if self.terms:
            body = " + ".join(f"{t.amplitude:.3g}*cos(2pi*{t.frequency}*(x + y - z)/{r.n} {'+' if t.phase >= 0 else '-'} "
                              f"{abs(t.phase):.3f})" for t in self.terms)
        else:
            body = "0"
        lines += [f"logit(c) = {body}", "c = argmax_c logit(c)"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _quantise(fit: LogitFit, key: list[int], default_class: int | None, bits: int) -> Program:
    """The program of ``key`` from ``fit`` with amplitudes and phases on ``bits``-bit grids
    (``bits`` = 0: unquantised)."""
    index = torch.tensor([k - 1 for k in key], dtype=torch.int64)
    amplitudes, phases = fit.amplitudes[index], fit.phases[index]
    if bits and amplitudes.numel():
        scale = float(amplitudes.max())
        levels = 2 ** bits
        amplitudes = torch.round(amplitudes / scale * levels).clamp_min(1) / levels * scale
        phases = torch.remainder(torch.round(phases / (2 * math.pi) * levels), levels) * (2 * math.pi / levels)
        phases = torch.where(phases > math.pi, phases - 2 * math.pi, phases)
    terms = tuple(Term(k, float(a), float(ph)) for k, a, ph in zip(key, amplitudes.tolist(), phases.tolist()))
    return Program(fit.grid.relabelling, terms, default_class, bits)


def _program(fit: LogitFit, key: list[int], default_class: int | None, operands: torch.Tensor) -> Program:
    """The quantised program with the fewest bits per parameter that answers every pair as the
    unquantised one."""
    a, b = operands[:, 0], operands[:, 1]
    exact = _quantise(fit, key, default_class, 0).predict(a, b)
    for bits in range(1, MAX_QUANTISATION + 1):
        program = _quantise(fit, key, default_class, bits)
        if torch.equal(program.predict(a, b), exact):
            return program
    return program


@dataclass(frozen=True)
class RelabellingScore:
    """How much of the logits a Fourier program in one relabelling explains."""

    name: str
    formula: str
    explained: float | None
    """Fraction of the held-out logits (in the group) the best function of x + y − z explains;
    None when the relabelling does not apply to the data."""
    coverage: float | None
    """Fraction of the held-out logit entries that lie in the group."""
    note: str = ""


@dataclass(frozen=True)
class Ablation:
    """The network's loss and accuracy on all pairs with some frequencies taken out."""

    where: str
    """'embedding' or 'logits' (module docstring)."""
    name: str
    removed: tuple[int, ...]
    loss: float
    accuracy: float


@dataclass(frozen=True)
class FrequencyEvidence:
    """Three readings of one key frequency."""

    frequency: int
    logit_share: float
    """Share of the fitted Fourier program's squared norm."""
    amplitude: float
    phase: float
    neurons: int
    """Neurons clustered at this frequency (``frequencies.neuron_clusters``)."""
    embedding_share: float
    """Share of the operand embeddings' non-constant Fourier energy."""


@dataclass(frozen=True, eq=False)
class Extraction:
    """Everything ``extract`` finds about one checkpoint."""

    step: int | None
    program: Program
    fit: LogitFit = field(repr=False)
    relabellings: list[RelabellingScore]
    key_frequencies: list[int]
    accuracy: float
    """Program accuracy on all pairs."""
    heldout_accuracy: float
    """Program accuracy on the held-out pairs (NaN when none are held out)."""
    agreement: float
    """Fraction of pairs where the program and the network's argmax agree."""
    heldout_agreement: float
    """The same on the held-out pairs (NaN when none are held out)."""
    network_accuracy: float
    network_heldout_accuracy: float
    description_bits: int
    lookup_table_bits: float
    ablations: list[Ablation]
    evidence: list[FrequencyEvidence]
    clusters: NeuronClusters = field(repr=False)
    verdict_kind: str
    """'program', 'partial' or 'none' (module docstring)."""
    verdict: str

    @property
    def grid(self) -> GroupGrid:
        return self.fit.grid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the ``analyze --json`` fields); held-out figures are None when no
        pair is held out (strict JSON has no NaN)."""
        def held(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "step": self.step,
            "relabelling": self.program.relabelling.name,
            "relabelling_formula": self.program.relabelling.formula,
            "explained_fraction": self.fit.explained,
            "coverage": self.fit.coverage,
            "key_frequencies": self.key_frequencies,
            "program": self.program.text(),
            "terms": [vars(t) for t in self.program.terms],
            "default_class": self.program.default_class,
            "accuracy": self.accuracy,
            "heldout_accuracy": held(self.heldout_accuracy),
            "agreement": self.agreement,
            "heldout_agreement": held(self.heldout_agreement),
            "network_accuracy": self.network_accuracy,
            "network_heldout_accuracy": held(self.network_heldout_accuracy),
            "chance": 1 / self.program.p,
            "description_bits": self.description_bits,
            "lookup_table_bits": self.lookup_table_bits,
            "ablations": [vars(a) for a in self.ablations],
            "relabellings": [vars(s) for s in self.relabellings],
            "evidence": [vars(e) for e in self.evidence],
            "neurons_clustered": int(sum(self.clusters.counts().values())),
            "neurons": int(self.clusters.frequency.numel()),
            "neuron_clusters": {"threshold": self.clusters.threshold,
                                "counts": {str(k): n for k, n in self.clusters.counts().items()},
                                "frequency": self.clusters.frequency.tolist(),
                                "fraction": [round(f, 4) for f in self.clusters.fraction.tolist()]},
            "verdict_kind": self.verdict_kind,
            "verdict": self.verdict,
        }


def _without(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid,
             removed: list[int]) -> dict[str, torch.Tensor]:
    """``params`` with frequencies ``removed`` projected out of the operand embeddings (group order)."""
    basis = fourier_basis(grid.n)
    drop = [row for k in removed for row in basis.rows(k)]
    out = dict(params)
    for emb in operand_embeddings(experiment):
        rows = emb.offset + grid.relabelling.operand_residues(emb.operands[0])
        coefficients = fourier_1d(out[emb.param][rows], basis)
        coefficients[drop] = 0
        weight = out[emb.param].clone()
        weight[rows] = (basis.matrix.T @ coefficients).to(weight.dtype)
        out[emb.param] = weight
    return out


def ablations(experiment: Experiment, params: dict[str, torch.Tensor], logits: torch.Tensor, grid: GroupGrid,
              key: list[int]) -> list[Ablation]:
    """The network's loss and accuracy on all pairs with frequencies taken out (module docstring):
    each of ``key`` alone, all of them, and all but them, from the embeddings and from the logits."""
    labels = experiment.labels
    others = [k for k in fourier_basis(grid.n).frequencies if k not in key]
    cases = [(f"remove {k}", [k]) for k in key] + [("remove all key", key), ("keep only key", others)]
    found = [Ablation("none", "none", (), loss_on(experiment, logits),
                      float((logits.argmax(1) == labels).double().mean()))]
    for name, removed in cases:
        out = experiment.logits(_without(experiment, params, grid, removed))
        found.append(Ablation("embedding", name, tuple(removed), loss_on(experiment, out),
                              float((out.argmax(1) == labels).double().mean())))
    for name, removed in cases:
        restricted, excluded = key_logits(logits, grid, removed if name != "keep only key" else key)
        out = restricted if name == "keep only key" else excluded
        found.append(Ablation("logits", name, tuple(removed), loss_on(experiment, out),
                              float((out.argmax(1) == labels).double().mean())))
    return found


def beats_chance(accuracy: float, pairs: int, p: int) -> bool:
    """Whether ``accuracy`` on ``pairs`` pairs with p classes lies more than three binomial standard
    deviations above chance 1/p (module docstring)."""
    chance = 1 / p
    return pairs > 0 and accuracy > chance + 3 * math.sqrt(chance * (1 - chance) / pairs)


def _verdict(fit: LogitFit, program: Program, accuracy: float, heldout: float, agreement: float,
             network_heldout: float, pairs: int, scores: list[RelabellingScore]) -> tuple[str, str]:
    """(kind, text) of the verdict (module docstring); ``heldout``, ``agreement`` and
    ``network_heldout`` are read on the ``pairs`` held-out pairs."""
    name, chance = program.relabelling.name, 1 / program.p
    explained = f"explains {fit.explained:.1%} of the {'held-out ' if fit.heldout else ''}logits' variance"
    if math.isnan(heldout):
        return "partial", (f"No pairs are held out, so memory cannot be told from a program: in the {name} "
                           f"relabelling the Fourier program {explained} and answers {accuracy:.1%} of the pairs correctly.")
    own_order = next((s for s in scores if s.name == "identity"), None)
    if name != "identity" and own_order is not None and own_order.explained is not None:
        explained += f" (in the residues' own order a Fourier program explains {own_order.explained:.1%})"
    follows = (f"agrees with the network on {agreement:.1%} of the held-out pairs and answers {heldout:.1%} of them "
               "correctly")
    network = f" (the network: {network_heldout:.1%}; chance {chance:.1%})"
    key = [t.frequency for t in program.terms]
    if heldout >= GENERALISING and agreement >= GENERALISING:
        return "program", (f"The network implements a Fourier program in the {name} relabelling with key "
                           f"frequencies {key}: it {explained}, {follows}{network}.")
    if heldout >= PARTIAL and agreement >= PARTIAL:
        return "partial", (f"Only a partial program: the Fourier program in the {name} relabelling with key "
                           f"frequencies {key} {explained}, {follows}{network}.")
    best = f"The best Fourier program, in the {name} relabelling, {explained}, {follows} (chance {chance:.1%})."
    if beats_chance(heldout, pairs, program.p) and agreement < PARTIAL:
        best += (" Its answers beat chance, but that Fourier component of the logits is too weak to set the "
                 "network's answers.")
    if not beats_chance(network_heldout, pairs, program.p):
        return "none", (f"No generalising program: no program beats chance on held-out pairs. The network answers "
                        f"{network_heldout:.1%} of them correctly (chance {chance:.1%}), so it only memorises its "
                        f"training pairs. {best}")
    if network_heldout >= PARTIAL:
        tried = ", ".join(s.name for s in scores if s.explained is not None)
        return "none", (f"Fourier features do not explain this network: it answers {network_heldout:.1%} of the "
                        f"held-out pairs correctly, but in no relabelling tried ({tried}) does a Fourier program "
                        f"follow it. {best}")
    return "none", (f"No generalising program: the network answers only {network_heldout:.1%} of the held-out "
                    f"pairs correctly (chance {chance:.1%}). {best}")


def check_applies(experiment: Experiment) -> None:
    """NotApplicableError unless the run's task is arithmetic on Z_p, where Fourier programs live."""
    task = experiment.task
    if task.domain != "residues":
        raise NotApplicableError(
            f"reading a Fourier program applies to tasks on Z_p, not to this run's {task.family} task "
            f"({task.name}); `progsynth search RUN` looks for its program and `progsynth llc RUN` measures it")


@torch.no_grad()
def extract(experiment: Experiment, params: dict[str, torch.Tensor], step: int | None = None,
            key_threshold: float = KEY_THRESHOLD, neuron_threshold: float = NEURON_THRESHOLD) -> Extraction:
    """Extract, run and measure the program of ``params`` (module docstring); NotApplicableError for
    a task that is not arithmetic on Z_p."""
    check_applies(experiment)
    data, p = experiment.data, experiment.task.p
    logits = experiment.logits(params).to(DTYPE)
    answers = logits.argmax(1)
    heldout_rows = data.test_idx
    fit_rows = heldout_rows if heldout_rows.numel() else torch.arange(logits.shape[0])
    table = torch.full((p, p), -1, dtype=torch.int64)
    table[data.a, data.b] = answers
    relabellings = candidate_relabellings(p)
    isotope = cyclic_isotope(table)
    if isotope is not None and not any(isotope.same_maps(r) for r in relabellings):
        relabellings.append(isotope)
    scores, fits = [], []
    for relabelling in relabellings:
        try:
            grid = group_grid(relabelling, data.operands)
        except RelabelError as error:
            scores.append(RelabellingScore(relabelling.name, relabelling.formula, None, None, str(error)))
            continue
        fit = fit_logits(logits, grid, fit_rows)
        fits.append(fit)
        scores.append(RelabellingScore(relabelling.name, relabelling.formula, fit.explained, fit.coverage))
    if not fits:
        raise RelabelError(f"no relabelling applies to the {experiment.task.op_name!r} data: "
                           + "; ".join(s.note for s in scores))
    fit = max(fits, key=lambda f: f.explained)
    grid = fit.grid
    key = key_frequencies(fit, key_threshold)
    default_class = None
    if grid.exceptional.numel():
        outside = grid.exceptional[torch.isin(grid.exceptional, fit_rows)]
        outside = outside if outside.numel() else grid.exceptional
        default_class = int(answers[outside].mode().values)
    program = _program(fit, key, default_class, data.operands)
    predicted = program.predict(data.a, data.b)
    correct = (predicted == experiment.labels).double()
    net_correct = (answers == experiment.labels).double()
    heldout = float(correct[heldout_rows].mean()) if heldout_rows.numel() else math.nan
    network_heldout = float(net_correct[heldout_rows].mean()) if heldout_rows.numel() else math.nan
    clusters = neuron_clusters(experiment, params, grid, neuron_threshold)
    counts = clusters.counts()
    embedding = embedding_norms(experiment, params, grid).pow(2)
    embedding = embedding / embedding.sum() if float(embedding.sum()) > 0 else embedding
    evidence = [FrequencyEvidence(k, float(fit.shares[k - 1]), float(fit.amplitudes[k - 1]),
                                  float(fit.phases[k - 1]), counts.get(k, 0), float(embedding[k - 1]))
                for k in key]
    accuracy = float(correct.mean())
    agrees = (predicted == answers).double()
    heldout_agreement = float(agrees[heldout_rows].mean()) if heldout_rows.numel() else math.nan
    kind, verdict = _verdict(fit, program, accuracy, heldout, heldout_agreement, network_heldout,
                             int(heldout_rows.numel()), scores)
    return Extraction(
        step=step, program=program, fit=fit, relabellings=scores, key_frequencies=key,
        accuracy=accuracy, heldout_accuracy=heldout, agreement=float(agrees.mean()),
        heldout_agreement=heldout_agreement,
        network_accuracy=float(net_correct.mean()), network_heldout_accuracy=network_heldout,
        description_bits=program.description_bits, lookup_table_bits=logits.shape[0] * math.log2(p),
        ablations=ablations(experiment, params, logits, grid, key), evidence=evidence, clusters=clusters,
        verdict_kind=kind, verdict=verdict,
    )


def load_params(store: RunStore, experiment: Experiment, step: int) -> dict[str, torch.Tensor]:
    """The parameters of the scheduled checkpoint at ``step`` (RunError listing the steps on disk
    if there is none)."""
    return store.load_checkpoint(step).params(experiment.init_params(0))


def extract_checkpoint(run: str | Path, step: int | None = None, key_threshold: float = KEY_THRESHOLD) -> Extraction:
    """``extract`` on the checkpoint at ``step`` of the run directory ``run`` (default: the newest
    scheduled checkpoint)."""
    store = RunStore.open(run)
    steps = store.checkpoint_steps()
    if not steps:
        raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints to analyse")
    step = steps[-1] if step is None else step
    experiment = Experiment(store.config())
    return extract(experiment, load_params(store, experiment, step), step, key_threshold)
