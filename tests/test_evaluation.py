"""diffusion/evaluation.py: the likelihood figures of either kind of model (the L = 1 toy, the AR figures, the
bound over random orders on request), the standard error, the tables, and the same figures on worker processes
(the orders themselves are tested in test_orders.py, the sample metrics in test_metrics.py)."""
import re

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite.parallel import ModelPool
from diffusion.autoregressive import ARTransformer, name_nll
from diffusion.checkpoint import build_model
from diffusion.chunks import CHUNK_ROWS
from diffusion.data import DEFAULT_NAMES, MASK, PAD, NamesData, chars_per_name, encode
from diffusion.evaluation import (curves_table, evaluate_model, format_likelihood, likelihood_figures,
                                 likelihood_table, paired_gap, ratio_figure, sample_chunked)
from diffusion.metrics import generative_nll
from diffusion.models import TransformerDenoiser
from diffusion.orders import ordered_nll
from helpers import log_probs, tiny_transformer as tiny_denoiser

NAMES = ["emma", "olivia", "ava", "mia", "noah", "liam", "zoe", "eva", "max", "leo", "ida", "bo"]


def test_length_one_toy_is_exact():
    """L = 1: every order, and the NELBO, equal -log softmax(model(MASK))[x] exactly; length first knows the
    length is 1, so it scores a letter c as -log p(c | MASK, letters only)."""
    model = tiny_denoiser(L=1)
    x = np.array([[3], [PAD], [0]])
    logp = log_probs(model, np.array([MASK]))[0]
    expected = -logp[x[:, 0]]
    for order in ("left_to_right", "confident"):
        np.testing.assert_allclose(ordered_nll(model, x, order), expected, rtol=1e-6)
    letters_only = -(logp[:26] - np.logaddexp.reduce(logp[:26]))
    np.testing.assert_allclose(ordered_nll(model, x[[0, 2]], "length_first"), letters_only[[3, 0]], rtol=1e-6)
    figures = likelihood_figures(model, x)
    chars = 2 + 1 + 2
    for key in ("nelbo", "left_to_right", "confident"):
        np.testing.assert_allclose(figures[key]["nll"], expected.sum() / chars, rtol=1e-5)


def test_likelihood_figures_add_the_bound_on_request():
    model, x = tiny_denoiser(L=6), encode(NAMES, 6)
    figures = likelihood_figures(model, x, orders=(), iw_orders=4)
    f = figures["random_orders"]
    assert f["orders"] == 4 and [k for k, _ in f["bound_by_orders"]] == [1, 2, 4]
    np.testing.assert_allclose(f["nll"], f["bound_by_orders"][-1][1], rtol=1e-9)
    assert f["nll"] < figures["nelbo"]["nll"] + 3 * figures["nelbo"]["se"]
    assert "bound over 4 random orders" in format_likelihood(figures)[1]
    assert "random_orders" not in likelihood_figures(model, x, orders=())


def test_ar_likelihood_figures_are_name_nll_per_char():
    tl.manual_seed(0)
    ar = ARTransformer(L=6, dim=16, layers=1, heads=2)
    figures = likelihood_figures(ar, encode(NAMES, 6))
    chars = sum(len(n) + 1 for n in NAMES)
    np.testing.assert_allclose(figures["nll"]["nll"], name_nll(ar, NAMES).sum() / chars, rtol=1e-9)
    np.testing.assert_allclose(generative_nll(ar, NAMES), name_nll(ar, NAMES).sum() / chars, rtol=1e-9)
    assert set(figures) == {"nll"}


def test_ratio_standard_error():
    # every name costs exactly r per char: no spread, se 0
    assert ratio_figure([2.0, 4.0, 6.0], [1, 2, 3]) == dict(nll=2.0, se=0.0)
    # equal lengths: the ordinary standard error of the mean, divided by the length
    nll = np.array([1.0, 2.0, 4.0, 9.0])
    f = ratio_figure(nll, [2, 2, 2, 2])
    np.testing.assert_allclose(f["nll"], nll.mean() / 2)
    np.testing.assert_allclose(f["se"], nll.std(ddof=1) / np.sqrt(4) / 2)


def test_paired_gap_cancels_what_both_models_share():
    chars = np.array([3, 5, 2, 7])
    hard = np.array([2.0, 9.0, 1.0, 20.0])                 # names that cost both models much the same
    other = hard + 0.25 * chars                            # a second model: 0.25 nats more on every char
    gap = paired_gap(other, hard, chars)
    np.testing.assert_allclose(gap["nll"], ratio_figure(other, chars)["nll"] - ratio_figure(hard, chars)["nll"])
    assert gap["nll"] == pytest.approx(0.25) and gap["se"] == pytest.approx(0.0, abs=1e-12)
    noisy = other + np.array([0.3, -0.3, 0.3, -0.3])       # disagreements that vary name to name: a nonzero se
    assert 0 < paired_gap(noisy, hard, chars)["se"] < ratio_figure(noisy, chars)["se"]
    for wrong in (2.0, hard[:3]):                          # NLLs not of the same names: refused, not broadcast
        with pytest.raises(ValueError, match="name by name"):
            paired_gap(other, wrong, chars)


def test_likelihood_figures_pair_every_exact_figure_with_the_reference():
    model, x = tiny_denoiser(L=6), encode(NAMES, 6)
    reference = np.linspace(8.0, 14.0, len(x))             # any per-name NLLs on the same rows
    figures = likelihood_figures(model, x, orders=("left_to_right",), iw_orders=2, reference=reference)
    assert "gap" not in figures["nelbo"]                   # the NELBO is not per name: nothing to pair
    for key in ("left_to_right", "random_orders"):
        f = figures[key]
        np.testing.assert_allclose(f["gap"]["nll"], f["nll"] - reference.sum() / chars_per_name(x).sum(), rtol=1e-9)
    table = likelihood_table({"AR": {"nll": ratio_figure(reference, chars_per_name(x))}, "diffusion": figures})
    gap = figures["left_to_right"]["gap"]
    assert f"| {gap['nll']:+.4f} ± {gap['se']:.4f} |" in table and "gap to AR ± paired se" in table


def test_curves_table_lines_up_steps():
    table = curves_table({"a": [(10, 2.0), (20, 1.5)], "b": [(20, 3.0)]})
    assert table.splitlines()[2:] == ["| 10 | 2.0000 |  |", "| 20 | 1.5000 | 3.0000 |"]
    table = curves_table({"a": [(10, 2.0), (20, 1.5)]}, steps_per_epoch=8)
    assert table.splitlines()[0] == "| step | epochs | a |" and table.splitlines()[3] == "| 20 | 2.5 | 1.5000 |"


def test_likelihood_table_gives_each_figure_relative_to_the_ar():
    both = likelihood_table({"AR": {"nll": dict(nll=2.0, se=0.01)},
                             "diffusion": {"nelbo": dict(nll=2.2, se=0.02), "confident": dict(nll=2.1, se=0.03)}})
    assert "| AR | NLL (exact) | 2.0000 | 0.0100 |  |" in both
    assert "| diffusion | NELBO | 2.2000 | 0.0200 | +10.0% |" in both
    assert "| diffusion | NLL of the most-confident-first sampler (exact) | 2.1000 | 0.0300 | +5.0% |" in both
    alone = likelihood_table({"diffusion": {"nelbo": dict(nll=2.2, se=0.02)}})
    assert "vs AR" not in alone and "| diffusion | NELBO | 2.2000 | 0.0200 |\n" in alone
    assert alone.endswith("which names happen to be in the test split.")          # what each ± is


def test_figures_are_described_in_plain_words():
    lines = format_likelihood(dict(nelbo=dict(nll=2.1, se=0.01, repeats=4, method="identity", seconds=1.0),
                                   nll=dict(nll=2.0, se=0.02, seconds=1.0)))
    assert "4 mask draws a name" in lines[0] and "which names happen to be in the test split" in lines[1]
    assert not any(re.search(r"Monte-Carlo|\bse:|identity,", line) for line in lines)


# ---------------------------------------------------------------------- the same figures on worker processes
def without_seconds(value):
    """A figures structure with the wall-clock entries (seconds, samples per second) taken out."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k not in ("seconds", "samples_per_second")}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


@pytest.mark.parametrize("kind", ["denoiser", "ar"])
def test_every_figure_is_the_same_on_one_and_two_worker_processes(kind):
    """evaluate_model on a ModelPool of 1 and of 2 workers: the same names, test likelihood (NELBO, the ordered NLLs
    and the bound over random orders, or the AR NLL) and sample figures, to the bit (300 names and 300 test rows
    make 3 chunks). In this process (no pool) NumPy's BLAS may run several threads, which rounds products
    differently: the figures agree to float32 rounding."""
    data = NamesData.load(DEFAULT_NAMES, L=8)
    data.test = data.test[:300]
    tl.manual_seed(1)
    model = TransformerDenoiser(L=8, dim=16, layers=1, heads=2) if kind == "denoiser" else \
        ARTransformer(L=8, dim=16, layers=1, heads=2)
    figures = []
    for workers in (1, 2):
        with ModelPool(model, build_model, {"config": model.config}, workers) as pool:
            figures.append(evaluate_model(model, data, (1.0, 0.8), num=300, seed=4, target_se=0.05, iw_orders=2,
                                          pool=pool))
    assert without_seconds(figures[1]) == without_seconds(figures[0])
    assert len({name for row in figures[0]["samples"] for name in row["examples"]}) > 20      # real, varied names
    here = evaluate_model(model, data, (1.0, 0.8), num=300, seed=4, target_se=0.05, iw_orders=2)
    for name, f in here["likelihood"].items():
        assert f["nll"] == pytest.approx(figures[0]["likelihood"][name]["nll"], rel=1e-6)
    if kind == "denoiser":
        assert here["likelihood"]["nelbo"]["repeats"] >= 2
        assert set(here["likelihood"]) > {"nelbo", "confident", "random_orders"}


def test_chunks_make_the_names_independent_of_how_many_are_drawn_after_them():
    """Chunk c is seeded (seed, c): the first 128 of 300 names are the 128 names drawn alone."""
    model = tiny_denoiser(L=6)
    many = sample_chunked(model, 300, seed=2).tokens
    assert np.array_equal(sample_chunked(model, CHUNK_ROWS, seed=2).tokens, many[:CHUNK_ROWS])
    assert not np.array_equal(many[:CHUNK_ROWS], many[CHUNK_ROWS:2 * CHUNK_ROWS])


@pytest.mark.parametrize("options", [dict(steps=8), dict(steps=8, length="joint", threshold=0.5)])
def test_chunked_trajectories_line_up_by_step(options):
    """Chunks skip different steps (a row with nothing to reveal skips the call); the joined trajectory has
    every step any chunk ran, each row as it stood then, ending with the final rows; masks only ever go."""
    out = sample_chunked(tiny_denoiser(L=8), CHUNK_ROWS + 2, seed=3, keep_trajectory=True, **options)
    steps = [s for s, _ in out.trajectory]
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert all(rows.shape == out.tokens.shape for _, rows in out.trajectory)
    assert np.array_equal(out.trajectory[-1][1], out.tokens)
    masks = np.array([(rows == MASK).sum(1) for _, rows in out.trajectory])        # (steps, rows)
    assert np.all(np.diff(masks, axis=0) <= 0)


def test_no_rows_is_an_empty_sample():
    assert sample_chunked(tiny_denoiser(L=6), 0).tokens.shape == (0, 6)
