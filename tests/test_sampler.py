"""diffusion/sampler.py: the reverse process. Property tests for the sampler's templates, edits and variants
on a tiny random TransformerDenoiser, the core step and an exact oracle against known distributions, and
scripts/sample.py and scripts/sampler_table.py end to end."""
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
from diffusion.orders import ordered_nll
from diffusion.models import TransformerDenoiser
from diffusion.sampler import ORDERS, Options, Positions, reveal_schedule, reverse_step, sample
from diffusion.schedule import CosineSchedule, LinearSchedule
from diffusion.visualize import reverse_view
from helpers import tiny_transformer

L = 6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = tiny_transformer(L)

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


# ----------------------------------------------------------------------------- reveal schedule, invariants
@given(L=st.integers(1, 16), data=st.data())
def test_reveal_schedule_reveals_everything(L, data):
    steps = data.draw(st.integers(1, L))
    n = np.arange(L + 1)
    counts = reveal_schedule(n, steps, CosineSchedule())
    assert counts.shape == (L + 1, steps) and np.all(counts >= 0)
    assert np.array_equal(counts.sum(1), n)
    assert np.all(counts[n <= steps] <= 1)                       # S >= n: one position a step at most


@pytest.mark.parametrize("length", ["model", *range(1, 17)])
def test_with_s_equal_to_l_each_step_reveals_one_position(length):
    """At L = 16 with the default (cosine) schedule and S = L, every length: no step reveals two positions of a
    row, so the sampler at S = L is the one-token-a-step model the length-first likelihood scores. (Rounding
    the cosine count alone revealed two at once for 11 of the 16 lengths.)"""
    out = sample(tiny_transformer(L=16), 40, steps=16, seed=length if length != "model" else 0, length=length)
    for row, fixed in zip(out.reveal_step, out.fixed):
        steps = row[~fixed]
        assert len(np.unique(steps)) == len(steps) and steps.min() >= 1, row


@given(steps=st.integers(1, 6), temperature=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       length=st.sampled_from(["model", "joint"]), seed=st.integers(0, 1000))
def test_sampler_invariants(steps, temperature, length, seed):
    model = tiny_transformer()
    out = sample(model, 12, steps=steps, temperature=temperature, seed=seed, length=length, keep_trajectory=True)
    assert out.tokens.shape == (12, 6) and not (out.tokens == MASK).any()
    assert np.all(out.reveal_step >= (0 if length == "model" else 1)) and np.all(out.reveal_step <= steps)
    previous = np.full_like(out.tokens, MASK)
    for _, rows in out.trajectory:                                      # a revealed token never changes
        was_revealed = previous != MASK
        assert np.array_equal(rows[was_revealed], previous[was_revealed])
        previous = rows
    assert np.array_equal(previous, out.tokens)
    assert out.network_calls <= steps + (length == "model")
    if length == "model":                                              # letters then PADs, never a letter after PAD
        assert out.letter_after_pad == 0
        assert np.all(np.diff((out.tokens == PAD).astype(int), axis=1) >= 0)
    again = sample(model, 12, steps=steps, temperature=temperature, seed=seed, length=length)
    assert np.array_equal(again.tokens, out.tokens)                     # same seed, same names


def test_greedy_sampling_ignores_the_seed():
    model = tiny_transformer()
    a, b = (sample(model, 8, steps=3, temperature=0.0, seed=s).tokens for s in (1, 2))
    assert np.array_equal(a, b)


def test_sampler_rejects_bad_arguments():
    model = tiny_transformer()
    for kwargs in (dict(steps=0), dict(steps=7), dict(temperature=-1.0), dict(length="sideways")):
        with pytest.raises(ValueError):
            sample(model, 2, **kwargs)


# ----------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.npz")
    checkpoint.save(path, MODEL)
    return path


def run_sample(*args):
    return subprocess.run([sys.executable, "scripts/sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


@pytest.mark.scripts
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


@pytest.mark.scripts
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


@pytest.mark.scripts
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


def test_default_sampler_draws_the_length_first_likelihoods_distribution():
    """With S = L and T = 1 the default sampler (length first, then the most probable letter) reveals one token a
    step, so it is an autoregressive model over a data-dependent order, and evaluation's length-first ordered
    likelihood scores exactly that model. On a tiny denoiser, peaked and biased toward PAD, the likelihood of
    every valid name (L = 3: 18,278) must sum to 1 and the 30 likeliest names must be drawn at their
    probabilities. Two controls must not match: the same samples against left-to-right order, and the plain
    sampler without the length step (whose PAD-first bias this denoiser has) against the length-first model."""
    tl.manual_seed(5)                                  # a model whose plain sampler shows the PAD bias (not all do)
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
