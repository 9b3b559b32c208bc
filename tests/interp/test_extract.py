"""interp/extract.py (with frequencies.py): the program read from Gromov's analytic network and from
tiny trained runs, for addition, multiplication, a task with no cyclic relabelling, and a network
that only memorises."""

from __future__ import annotations

import math

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.interp.extract import beats_chance, extract
from progsynth.interp.frequencies import key_frequencies
from progsynth.interp.relabel import Relabelling


def all_pairs(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)


def ablation(e, where: str, name: str):
    return next(a for a in e.ablations if a.where == where and a.name == name)


@pytest.mark.parametrize("p,frequencies,amplitudes", [(23, [3, 7], None), (29, [2, 5, 11], [1.0, 0.9, 1.1])])
def test_gromov_analytic_network_gives_back_its_frequencies(analytic, p, frequencies, amplitudes):
    experiment, params = analytic("add", (p, "identity"), frequencies, amplitudes=amplitudes)
    e = extract(experiment, params)
    assert e.key_frequencies == frequencies and [t.frequency for t in e.program.terms] == frequencies
    assert e.program.relabelling.name == "identity" and e.fit.explained == pytest.approx(1.0, abs=1e-9)
    assert e.accuracy == 1.0 and e.heldout_accuracy == 1.0 and e.agreement == 1.0 and e.verdict_kind == "program"
    # The fit reads the analytic logit Σ (9/2) A³ cos(2πk(a + b − c)/p) exactly.
    for ev, amplitude in zip(e.evidence, amplitudes or [1.0] * len(frequencies)):
        assert ev.amplitude == pytest.approx(4.5 * amplitude ** 3, rel=1e-9) and ev.phase == pytest.approx(0, abs=1e-9)
        assert ev.neurons == 9  # nine neurons per frequency, each wholly at it
    assert e.clusters.counts() == {k: 9 for k in frequencies}
    assert e.description_bits < e.lookup_table_bits == pytest.approx(p * p * math.log2(p))
    # The program runs as a Python function and reproduces its own reported accuracy.
    program = e.program
    a, b = all_pairs(p)
    answers = [program(int(x), int(y)) for x, y in zip(a, b)]
    assert sum(c == (x + y) % p for c, x, y in zip(answers, a.tolist(), b.tolist())) / p ** 2 == e.accuracy
    assert max(range(p), key=program.logits(4, 9).__getitem__) == program(4, 9) == 13 % p
    text = program.text()
    assert text.startswith("relabelling: identity") and all(f"cos(2pi*{k}*(x + y - z)/{p}" in text for k in frequencies)
    # Removing a key frequency from the embedding or the logits costs accuracy; removing them all, everything.
    assert ablation(e, "embedding", "remove all key").accuracy < 0.2
    assert ablation(e, "logits", "remove all key").accuracy < 0.2
    assert ablation(e, "embedding", "keep only key").accuracy == 1.0
    assert ablation(e, "embedding", "keep only key").loss == pytest.approx(ablation(e, "none", "none").loss)


def test_the_key_frequency_rule_is_a_share_threshold(analytic):
    """Key: a share of the fitted program ≥ 0.1 × the largest. Amplitude A gives logit amplitude ∝ A³,
    so a share ratio of (A₂/A₁)⁶: 0.7⁶ = 0.118 is key, 0.6⁶ = 0.047 is not."""
    for weaker, key in ((0.7, [2, 9]), (0.6, [2])):
        experiment, params = analytic("add", (23, "identity"), [2, 9], amplitudes=[1.0, weaker])
        e = extract(experiment, params)
        fit = e.fit
        ratio = weaker ** 6
        assert float(fit.shares[8]) == pytest.approx(ratio / (1 + ratio)) and float(fit.shares.sum()) == pytest.approx(1.0)
        assert key_frequencies(fit) == e.key_frequencies == key
        assert key_frequencies(fit, threshold=0.01) == [2, 9] and key_frequencies(fit, threshold=1.0) == [2]
    with pytest.raises(ConfigError, match=r"threshold must lie in \(0, 1\], got 0"):
        key_frequencies(fit, threshold=0)


@pytest.mark.parametrize("op,name,frequencies", [("mul", "discrete log", [2, 5]), ("div", "discrete log, negate b", [1, 6]),
                                                 ("sub", "negate b", [4])])
def test_analytic_network_in_a_relabelled_group(analytic, op, name, frequencies):
    experiment, params = analytic(op, (23, name), frequencies, default_class=0)
    e = extract(experiment, params)
    assert e.program.relabelling.name == name and e.key_frequencies == frequencies
    assert e.accuracy == 1.0 and e.agreement == 1.0 and e.verdict_kind == "program"
    identity = next(s for s in e.relabellings if s.name == "identity")
    assert identity.explained is None or identity.explained < 0.05  # the residues' own order explains little
    if "log" in name:
        assert e.program.default_class == 0 and "if a in {0} or b in {0}: c = 0" in e.program.text()
        assert "log_5 a" in e.program.text()
        # Division data lack b = 0, so the residues' own order does not even apply there.
        assert ("residues' own order" in e.verdict) == (op == "mul")
        assert e.program(0, 17) == 0 and e.program(3, 8) == (3 * 8 if op == "mul" else 3 * pow(8, -1, 23)) % 23


def test_an_isotope_no_list_names_is_found_from_the_answers(analytic):
    """(2a + 3b) mod 19 is addition after x = 2a, y = 3b: extraction finds that from the network alone."""
    p = 19
    r = torch.arange(p)
    relabelling = Relabelling("built", "x = 2a, y = 3b", p, p, 2 * r % p, 3 * r % p, r, 0)
    experiment, params = analytic(lambda a, b, p: (2 * a + 3 * b) % p, relabelling, [2, 5])
    e = extract(experiment, params)
    assert e.program.relabelling.name == "cyclic isotope" and e.key_frequencies == [2, 5]
    assert e.accuracy == 1.0 and e.verdict_kind == "program"
    assert e.program.relabelling.same_maps(relabelling)
    assert e.description_bits < e.lookup_table_bits


def test_without_held_out_pairs_the_verdict_says_memory_cannot_be_told_apart(analytic):
    experiment, params = analytic("add", (23, "identity"), [3], train_fraction=1.0)
    e = extract(experiment, params)
    assert e.verdict_kind == "partial" and e.verdict.startswith("No pairs are held out")
    assert math.isnan(e.heldout_accuracy) and e.accuracy == 1.0


def test_a_grokked_addition_run(extraction):
    e = extraction("addition")
    n_freq = e.grid.n // 2
    assert e.network_heldout_accuracy >= 0.99  # the run generalised
    assert 0 < len(e.key_frequencies) < n_freq
    assert e.program.relabelling.name == "identity"
    assert e.accuracy >= 0.95 and e.heldout_accuracy >= 0.95 and e.agreement >= 0.95 and e.heldout_agreement >= 0.95
    assert e.verdict_kind == "program" and e.verdict.startswith("The network implements a Fourier program")
    assert e.description_bits < e.lookup_table_bits / 10
    base = ablation(e, "none", "none")
    for where in ("embedding", "logits"):
        removed_all = ablation(e, where, "remove all key")
        kept = ablation(e, where, "keep only key")
        assert kept.loss < 1.2 * base.loss < removed_all.loss / 1.5 and kept.accuracy >= 0.95
        assert removed_all.accuracy < 0.5
        for k in e.key_frequencies:
            assert ablation(e, where, f"remove {k}").loss > base.loss
    # The three readings agree: neurons cluster at key frequencies, and the embedding lives there.
    clustered = e.clusters.counts()
    assert sum(clustered.get(k, 0) for k in e.key_frequencies) >= 0.8 * sum(clustered.values()) > 0
    assert sum(ev.embedding_share for ev in e.evidence) >= 0.8


def test_a_memorising_network_yields_no_program(extraction):
    e = extraction("memorising")
    p, heldout = e.program.p, e.fit.pairs
    assert e.network_accuracy > 0.25 and not beats_chance(e.network_heldout_accuracy, heldout, p)
    assert not beats_chance(e.heldout_accuracy, heldout, p)
    assert e.verdict_kind == "none"
    assert e.verdict.startswith("No generalising program: no program beats chance on held-out pairs.")
    assert f"(chance {1 / p:.1%})" in e.verdict and "memorises" in e.verdict
    assert e.fit.explained < 0.1 and f"{e.fit.explained:.1%}" in e.verdict


def test_a_program_forming_under_memory_is_not_the_networks(extraction):
    """The network beats chance on held-out pairs but gets few right; the Fourier part of its logits
    answers them, yet the network's argmax does not follow it: no program, and the text says why."""
    e = extraction("forming")
    p, heldout = e.program.p, e.fit.pairs
    assert beats_chance(e.network_heldout_accuracy, heldout, p) and e.network_heldout_accuracy < 0.5
    assert beats_chance(e.heldout_accuracy, heldout, p) and e.heldout_agreement < 0.5
    assert e.verdict_kind == "none"
    assert e.verdict.startswith(f"No generalising program: the network answers only {e.network_heldout_accuracy:.1%}")
    assert "too weak to set the network's answers" in e.verdict


def test_multiplication_is_found_in_discrete_logs(extraction):
    e = extraction("mul")
    assert "log" in e.program.relabelling.name and e.program.relabelling.n == 22
    assert e.accuracy >= 0.95 and e.heldout_agreement >= 0.95 and e.verdict_kind == "program"
    identity = next(s for s in e.relabellings if s.name == "identity")
    assert identity.explained < 0.05 < e.fit.explained
    assert f"in the residues' own order a Fourier program explains {identity.explained:.1%}" in e.verdict


def test_squares_are_not_explained_by_fourier_features(extraction):
    """a² + b² mod 23 has no cyclic relabelling: the output says Fourier features do not explain the
    network, which still generalises, and how much of the logits they do explain."""
    e = extraction("squares")
    assert e.network_heldout_accuracy >= 0.5
    assert e.program.relabelling.name != "cyclic isotope"
    assert e.fit.explained < 0.5 and e.heldout_agreement < 0.5 and e.verdict_kind == "none"
    assert e.verdict.startswith("Fourier features do not explain this network")
    assert f"explains {e.fit.explained:.1%} of the held-out logits' variance" in e.verdict


def test_beats_chance():
    assert beats_chance(0.2, 300, 23) and not beats_chance(0.06, 300, 23) and not beats_chance(1.0, 0, 23)


def test_bad_program_input(analytic):
    experiment, params = analytic("add", (7, "identity"), [1])
    with pytest.raises(ConfigError, match=r"residues in \[0, 7\), got a=\[7\], b=\[0\]"):
        extract(experiment, params).program(7, 0)
