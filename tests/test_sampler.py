"""Property tests for the sampler's templates, edits and variants, on a tiny random TransformerDenoiser."""
import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_lite as tl
from diffusion import checkpoint
from diffusion.data import LETTERS, MASK, PAD, decode
from diffusion.evaluation import ordered_nll
from diffusion.models import TransformerDenoiser
from diffusion.predict import distinct_rows, predict_logits
from diffusion.sampler import (ORDERS, Options, Positions, edit_template, length_probs, parse_template, reverse_step,
                               sample)
from diffusion.schedule import CosineSchedule, LinearSchedule
from diffusion.visualize import forward_view, reverse_view

L = 6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tl.manual_seed(0)
MODEL = TransformerDenoiser(L=L, dim=16, layers=1, heads=2)

pattern = st.text(alphabet="abz_", max_size=L)
templates = st.one_of(pattern.filter(bool),
                      st.tuples(pattern, pattern).filter(lambda ht: len(ht[0]) + len(ht[1]) <= L)
                                                 .map(lambda ht: ht[0] + "*" + ht[1]))
variants = st.fixed_dictionaries(dict(
    order=st.sampled_from(ORDERS), choice_temperature=st.sampled_from([0.0, 1.0]),
    threshold=st.sampled_from([None, 0.05, 0.5]), top_k=st.sampled_from([None, 1, 3]),
    top_p=st.sampled_from([1.0, 0.5]), temperature=st.sampled_from([0.0, 1.0, 2.0])))


def matches(name, template):
    return re.fullmatch(template.replace("_", "[a-z]").replace("*", "[a-z]*"), name) is not None


def assert_revealed_never_change(out):
    previous = np.full_like(out.tokens, MASK)
    for _, rows in out.trajectory:
        was_revealed = previous != MASK
        assert np.array_equal(rows[was_revealed], previous[was_revealed])
        previous = rows
    assert np.array_equal(previous, out.tokens)


def assert_every_free_position_revealed(out, length_first=True):
    """Every free position was revealed by a step; with the length drawn first, a row's last letter is its
    first reveal (others may come in the same step, never before)."""
    assert np.all(out.reveal_step[~out.fixed] >= 1)
    if length_first:
        rows = np.arange(len(out.tokens))
        last = (out.tokens != PAD).sum(1) - 1
        first = np.where(out.fixed, np.iinfo(np.int64).max, out.reveal_step).min(1)
        free = ~out.fixed[rows, last]
        assert np.all(out.reveal_step[rows, last][free] == first[free])


@given(template=templates, steps=st.integers(1, L), seed=st.integers(0, 1000), v=variants)
def test_template_letters_survive_and_no_mask(template, steps, seed, v):
    out = sample(MODEL, 8, steps=steps, seed=seed, template=template, keep_trajectory=True, **v)
    assert not (out.tokens == MASK).any() and out.letter_after_pad == 0
    names = [decode(r) for r in out.tokens]
    assert all(matches(n, template) for n in names), (template, names)
    for _, rows in out.trajectory:                                     # fixed positions never change
        assert np.array_equal(rows[out.fixed], out.tokens[out.fixed])
    assert_revealed_never_change(out)                                  # remasking is off
    assert_every_free_position_revealed(out)


@given(v=variants, length=st.sampled_from(["model", "joint", 3, (2, 5)]), steps=st.integers(1, L),
       seed=st.integers(0, 1000))
def test_every_variant_reveals_everything_and_is_seeded(v, length, steps, seed):
    out = sample(MODEL, 10, steps=steps, seed=seed, length=length, keep_trajectory=True, **v)
    assert not (out.tokens == MASK).any()
    assert_every_free_position_revealed(out, length_first=length != "joint")
    assert np.all(out.reveal_step <= steps)
    assert_revealed_never_change(out)
    if length == 3:
        assert all(len(decode(r)) == 3 for r in out.tokens)
    if length == (2, 5):
        assert all(2 <= len(decode(r)) <= 5 for r in out.tokens)
    assert np.array_equal(sample(MODEL, 10, steps=steps, seed=seed, length=length, **v).tokens, out.tokens)
    lines = reverse_view(out, rows=2)                                  # a row per step + a reveal line
    assert sum("revealed at" in line for line in lines) == 2
    assert sum(line.strip().startswith("step") for line in lines) == 2 * len(out.trajectory)


@given(threshold=st.floats(0.01, 1.0), order=st.sampled_from(ORDERS), seed=st.integers(0, 1000),
       length=st.sampled_from(["model", "joint"]))
def test_threshold_decoding_terminates_within_L_steps(threshold, order, seed, length):
    out = sample(MODEL, 16, seed=seed, threshold=threshold, order=order, length=length)
    assert not (out.tokens == MASK).any()
    assert out.network_calls <= L + (length == "model")
    free = (~out.fixed).sum(1)                                         # at least one position per call
    assert np.all(out.row_calls - (length == "model") <= np.maximum(free, 0))


def test_a_threshold_everything_passes_takes_one_call():
    low = sample(MODEL, 16, seed=0, threshold=1e-9, length=4)          # everything is above it: one call
    assert low.network_calls == 1 and np.all(low.row_calls == 1)


@given(remask=st.sampled_from([0.1, 0.5, 0.9]), template=st.sampled_from(["*", "a*", "b__z", "*z", "_a_"]),
       steps=st.integers(1, L), seed=st.integers(0, 1000))
def test_remasking_keeps_fixed_positions_and_finishes(remask, template, steps, seed):
    out = sample(MODEL, 12, steps=steps, seed=seed, template=template, remask=remask, keep_trajectory=True)
    assert not (out.tokens == MASK).any()
    assert all(matches(decode(r), template) for r in out.tokens)
    for _, rows in out.trajectory:
        assert np.array_equal(rows[out.fixed], out.tokens[out.fixed])
    again = sample(MODEL, 12, steps=steps, seed=seed, template=template, remask=remask)
    assert np.array_equal(again.tokens, out.tokens)


def test_remasking_does_remask():
    out = sample(MODEL, 50, steps=L, seed=0, remask=0.5, length="joint", keep_trajectory=True)
    assert out.remasked > 0 and not (out.tokens == MASK).any()
    went_back = any(((a != MASK) & (b == MASK)).any() for (_, a), (_, b) in zip(out.trajectory, out.trajectory[1:]))
    assert went_back


def test_top_k_one_is_greedy():
    a = sample(MODEL, 8, seed=1, template="______", top_k=1)
    b = sample(MODEL, 8, seed=2, template="______", temperature=0.0)
    assert np.array_equal(a.tokens, b.tokens)


@given(text=st.text(min_size=1, max_size=8).filter(lambda s: any(c not in LETTERS + "_*" for c in s)))
def test_invalid_templates_raise_clear_errors(text):
    with pytest.raises(ValueError, match="not allowed"):
        sample(MODEL, 2, template=text)


@pytest.mark.parametrize("template, kwargs, message", [
    ("", {}, "empty"), ("abcdefg", {}, "more than L=6"), ("a*b*", {}, "at most one"),
    ("Emma", {}, "'E' is not allowed"), ("ab_", dict(length=2), "does not fit"),
    ("a*", dict(length="joint"), "drawn first"), ("a*", dict(length=(5, 3)), "min <= max"),
    ("*", dict(remask=0.1, threshold=0.5), "do not combine"), ("*", dict(order="sideways"), "order"),
    ("*", dict(top_p=0.0), "top_p"), ("*", dict(top_k=0), "top_k"), ("*", dict(remask=1.0), "remask"),
])
def test_bad_options_raise_value_error(template, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sample(MODEL, 2, template=template, **kwargs)


def test_parse_and_edit_templates():
    t = parse_template("m_*a", 6)
    assert t.head == (12, None) and t.tail == (0,) and t.star and t.min_length == 3
    assert edit_template("emma", [1, 2]) == "e__a" and edit_template("emma", (0,)) == "_mma"
    for name, positions in (("emma", [4]), ("emma", []), ("Emma", [0]), ("", [0])):
        with pytest.raises(ValueError):
            edit_template(name, positions)
    out = sample(MODEL, 20, seed=0, template=edit_template("abba", [1]))
    assert all(re.fullmatch("a[a-z]ba", decode(r)) for r in out.tokens)


def test_forward_view_validates():
    lines = forward_view("ab", CosineSchedule(), L, times=(0.0, 1.0))
    assert lines[0].endswith("ab....") and lines[1].endswith("______")
    for bad in ("Ab", "abcdefg", "a b"):
        with pytest.raises(ValueError):
            forward_view(bad, CosineSchedule(), L)


# ----------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.npz")
    checkpoint.save(path, MODEL)
    return path


def run_sample(*args):
    return subprocess.run([sys.executable, "scripts/sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def test_sample_script_templates_edits_and_views(tiny_checkpoint):
    r = run_sample("--checkpoint", tiny_checkpoint, "--num", "6", "--template", "a_*z", "--order", "margin",
                   "--threshold", "0.5", "--show-steps")
    assert r.returncode == 0, r.stderr
    names = [line for line in r.stdout.splitlines() if line and not line.startswith(" ")]
    assert len(names) == 6 and all(re.fullmatch("a[a-z][a-z]*z", n) for n in names)
    assert r.stdout.count("revealed at") == 6
    r = run_sample("--checkpoint", tiny_checkpoint, "--num", "4", "--edit", "abba", "--positions", "1,2",
                   "--remask", "0.2", "--top-p", "0.9", "--length-mode", "model")
    assert r.returncode == 0 and all(re.fullmatch("a[a-z]{2}a", n) for n in r.stdout.split()), r.stderr
    r = run_sample("--checkpoint", tiny_checkpoint, "--forward", "abba", "--times", "0,0.5,1")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and "t=0.50" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--template", "M__a"], "'M' is not allowed"),
    (["--template", "abcdefgh"], "more than L=6"),
    (["--template", "a*b*"], "at most one"),
    (["--template", "ab", "--length", "4"], "does not fit"),
    (["--length", "3-x"], "not a length"),
    (["--edit", "emma", "--positions", "7"], "positions must be between"),
    (["--positions", "1"], "needs --edit"),
    (["--order", "sideways"], "invalid choice"),
    (["--steps", "9"], "--steps must be between"),
    (["--remask", "0.1", "--threshold", "0.5"], "do not combine"),
    (["--forward", "Emma"], "not a name"),
])
def test_sample_script_bad_input_is_one_line_and_exit_2(tiny_checkpoint, args, message):
    r = run_sample("--checkpoint", tiny_checkpoint, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_sampler_table_script(tiny_checkpoint, tmp_path):
    out = str(tmp_path / "table.json")
    r = subprocess.run([sys.executable, "scripts/sampler_table.py", "--checkpoint", tiny_checkpoint, "--num", "30",
                        "--steps", "2,6", "--variants", "max_prob,threshold,joint", "--json", out], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    import json
    rows = json.load(open(out))["rows"]
    assert [(row["variant"], row["steps"]) for row in rows] == [(v, s) for v in ("max_prob", "threshold", "joint")
                                                                for s in (2, 6)]
    assert all(0 <= row["unique"] <= 1 and row["length_tv"] >= 0 for row in rows)
    r = subprocess.run([sys.executable, "scripts/sampler_table.py", "--checkpoint", tiny_checkpoint, "--variants",
                        "sideways"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown variant" in r.stderr


def test_the_core_step_reveals_a_uniformly_random_subset_with_draws_from_the_denoiser():
    """reverse_step with order="random" and every other option off is the step of sampler.py's docstring: the
    denoiser predicts every position, a token is drawn at each, and all but keep[i] of row i's masked positions,
    chosen uniformly at random, are revealed with their draws; revealed tokens stay. Here p_theta is 'a', 'b',
    'c' with probabilities 0.5, 0.3, 0.2 at every position, position 0 is already revealed, and 3 of the 5
    masked positions are revealed: each of the C(5, 3) = 10 subsets must come up about equally often."""
    n, q = 20000, LETTERS.index("q")
    x = np.full((n, L), MASK)
    x[:, 0] = q
    logits = np.full((L, PAD + 1), -1e9)
    logits[:, :3] = np.log([0.5, 0.3, 0.2])
    predict = lambda rows: (np.repeat(logits[None], len(rows), axis=0), len(rows))  # noqa: E731
    opts = Options(L, steps=L, schedule=CosineSchedule(), temperature=1.0, order="random", choice_temperature=0.0,
                   threshold=None, remask=0.0, top_k=None, top_p=1.0)
    nothing = np.zeros((n, L), dtype=bool)
    before = x.copy()
    revealed, remasked, ran = reverse_step(predict, x, np.full(n, 2), 0, Positions(nothing, nothing, nothing), opts,
                                           np.random.default_rng(0))
    assert np.all(x[:, 0] == q) and ran == n and not remasked.any()
    assert np.array_equal(revealed, (before == MASK) & (x != MASK)) and np.all(revealed.sum(1) == 3)
    freq = np.bincount(x[revealed], minlength=3) / revealed.sum()          # 60,000 draws: sd <= 0.0021
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.01)
    subsets = revealed[:, 1:] @ (1 << np.arange(L - 1))                    # which 3 of the 5, as a bit pattern
    counts = np.bincount(subsets, minlength=1 << (L - 1))
    three = [s for s in range(1 << (L - 1)) if bin(s).count("1") == 3]
    assert counts.sum() == counts[three].sum() and len(three) == 10
    np.testing.assert_allclose(counts[three] / n, 0.1, atol=0.011)          # sd 0.0021 each


class OracleDenoiser(TransformerDenoiser.__mro__[1]):
    """The exact denoiser of a known distribution over a few names: p(x_i | xt) is the posterior over the
    names that agree with xt's revealed tokens, marginalized at position i. Sampling one token a step in
    random order (MDLM's ancestral sampler) must then reproduce the distribution itself."""

    def __init__(self, names, probs, L):
        super().__init__("oracle", L, False)
        self.rows = np.array([[LETTERS.index(c) for c in n] + [PAD] * (L - len(n)) for n in names])
        self.probs = np.asarray(probs, dtype=np.float64)

    def forward(self, xt, t=None):
        xt = np.asarray(xt)
        agree = ((xt[:, None, :] == self.rows[None]) | (xt[:, None, :] == MASK)).all(-1)     # (B, names)
        post = agree * self.probs
        post /= post.sum(1, keepdims=True)
        onehot = np.eye(PAD + 1)[self.rows]                                                 # (names, L, 27)
        return tl.Tensor(np.log(np.einsum("bn,nlc->blc", post, onehot) + 1e-300))


@pytest.mark.parametrize("length", ["model", "joint"])
def test_random_order_sampling_reproduces_a_known_distribution(length):
    names, probs = ["ab", "abc", "ba", "c", "cab", "bbbb"], [0.3, 0.1, 0.2, 0.15, 0.2, 0.05]
    oracle = OracleDenoiser(names, probs, L=4)
    # linear schedule, S = L: at most one token a step (two at once would be drawn independently)
    out = sample(oracle, 20000, steps=4, order="random", length=length, seed=0, schedule=LinearSchedule())
    drawn = [decode(row) for row in out.tokens]
    freq = np.array([drawn.count(n) for n in names]) / len(drawn)
    assert sum(freq) == 1.0                      # nothing outside the support
    # multinomial noise on 20,000 draws: each frequency has standard deviation <= 0.0035
    np.testing.assert_allclose(freq, probs, atol=0.012)


@pytest.mark.parametrize("length, one_row_calls", [("model", 1), ("joint", 0), (4, 0)])
def test_network_rows_counts_the_compute(length, one_row_calls):
    """network_rows counts the rows the network ran on: at most one per row-call (the length draw runs one row
    for all), fewer when rows coincide (identical rows run once), and at least one per call."""
    out = sample(MODEL, 20, seed=0, length=length)
    assert out.network_calls <= out.network_rows <= out.row_calls.sum() - one_row_calls * (len(out.tokens) - 1)


def test_predict_logits_runs_each_distinct_row_once():
    """Duplicated rows give the same logits as running every row, and count once; with time input a row at
    two different times is two rows."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 28, (40, L))
    x[10:30] = x[5]                                          # 21 copies of one row
    logits, ran = predict_logits(MODEL, x, count=True)
    assert ran == len(np.unique(x, axis=0))
    np.testing.assert_allclose(logits, MODEL(x).data, rtol=1e-5, atol=1e-6)
    timed = TransformerDenoiser(L=L, dim=16, layers=1, heads=2, time_input=True)
    t = np.where(np.arange(40) < 20, 0.3, 0.7)
    logits, ran = predict_logits(timed, x, t, count=True)
    assert ran == len(np.unique(np.column_stack([x, t]), axis=0))
    np.testing.assert_allclose(logits, timed(x, t).data, rtol=1e-5, atol=1e-6)
    assert predict_logits(MODEL, x[:0]).shape == (0, L, 27)
    big = np.array([[0, 1], [65536, 1], [0, 1]])             # ids past int16 stay distinct (bytes of int64)
    assert [len(f) for f in distinct_rows(big)] == [2, 3] and list(distinct_rows(big)[1]) == [0, 1, 0]


def test_length_probs_keeps_every_length_possible():
    """P(len = n) are the differences of P(PAD at n) made monotone, plus a floor: a dip in the model's PAD
    probabilities must not make a length impossible (a real name of that length would get an infinite NLL)."""
    monotone = np.array([0.0, 0.1, 0.5, 0.9])
    np.testing.assert_allclose(length_probs(monotone, floor=0.0), [0.1, 0.4, 0.4, 0.1])
    dipping = np.array([0.0, 0.6, 0.3, 0.9])                 # P(PAD at 2) < P(PAD at 1): no length 2 without the floor
    assert length_probs(dipping, floor=0.0)[1] == 0.0
    assert np.all(length_probs(dipping) > 0)


def test_default_sampler_draws_the_length_first_likelihoods_distribution():
    """With S = L and T = 1 the default sampler (length first, then the most probable letter) reveals one token a
    step, so it is an autoregressive model over a data-dependent order, and evaluation's length-first ordered
    likelihood scores exactly that model. On a tiny denoiser, peaked and biased toward PAD, the likelihood of
    every valid name (L = 3: 18,278) must sum to 1 and the 30 likeliest names must be drawn at their
    probabilities. Two controls must not match: the same samples against left-to-right order, and the plain
    sampler without the length step (whose PAD-first bias this denoiser has) against the length-first model."""
    tl.manual_seed(3)
    model = TransformerDenoiser(L=3, dim=16, layers=1, heads=2)
    model.head.weight.data *= 6                        # peaked: a few names carry most of the mass
    model.head.bias.data *= 6
    model.head.bias.data[PAD] += 4                     # and PAD-heavy, where the plain sampler goes wrong
    names = np.array([list(letters) + [PAD] * (3 - n) for n in (1, 2, 3)
                      for letters in itertools.product(range(len(LETTERS)), repeat=n)])
    index = {row.tobytes(): i for i, row in enumerate(names)}
    n = 20000

    def worst_z(drawn, q):                             # the 30 likeliest names: frequency vs probability
        counts = np.bincount([index.get(row.tobytes(), len(names)) for row in drawn], minlength=len(names) + 1)
        top = np.argsort(-q)[:30]
        return np.max(np.abs(counts[top] / n - q[top]) / np.sqrt(q[top] * (1 - q[top]) / n))
    q = np.exp(-ordered_nll(model, names, "length_first"))
    assert abs(q.sum() - 1) < 1e-4                     # every valid name is enumerated: a distribution
    default = sample(model, n, steps=3, seed=1).tokens
    assert worst_z(default, q) < 4.5
    assert worst_z(default, np.exp(-ordered_nll(model, names, "left_to_right"))) > 10
    assert worst_z(sample(model, n, steps=3, seed=1, length="joint").tokens, q) > 10
