"""Property tests for the diffusion pieces: schedule, forward process, loss, sampler, likelihood identity."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_lite as tl
from tinygrad_lite import Tensor
from diffusion.data import MASK, PAD, NUM_CLASSES, NamesData, encode, decode
from diffusion.likelihood import nelbo, unigram_nll
from diffusion.loss import diffusion_loss
from diffusion.models import MLPDenoiser, SkipMLPDenoiser, TransformerDenoiser
from diffusion.process import mask_exactly, q_sample, sample_times
from diffusion.sampler import reveal_schedule, sample
from diffusion.schedule import CosineSchedule, LinearSchedule

SCHEDULES = [CosineSchedule(), LinearSchedule()]
NAMES = ["emma", "olivia", "ava", "mia", "noah", "liam", "lucas", "zoe", "eva", "max", "leo", "ida"]


def tiny_transformer(L=6, seed=0):
    tl.manual_seed(seed)
    return TransformerDenoiser(L=L, dim=16, layers=1, heads=2)


# ----------------------------------------------------------------------------- schedule and forward process
@pytest.mark.parametrize("schedule", SCHEDULES, ids=["cosine", "linear"])
def test_schedule_endpoints_and_derivative(schedule):
    assert schedule.alpha(0.0) > 0.999 and schedule.alpha(1.0) < 1e-9
    t = np.linspace(0.05, 0.95, 19)
    numeric = (schedule.alpha(t + 1e-6) - schedule.alpha(t - 1e-6)) / 2e-6
    np.testing.assert_allclose(schedule.dalpha(t), numeric, rtol=1e-6, atol=1e-8)
    assert np.all(np.diff(schedule.alpha(t)) < 0)                      # tokens only get masked as t grows
    np.testing.assert_allclose(schedule.time_at(schedule.mask_rate(t)), t, atol=1e-9)
    np.testing.assert_allclose(schedule.weight(t), -schedule.dalpha(t) / (1 - schedule.alpha(t)))


@given(t=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1), which=st.sampled_from([0, 1]))
def test_q_sample_mask_rate_matches_schedule(t, seed, which):
    schedule = SCHEDULES[which]
    x0 = np.random.default_rng(seed).integers(0, NUM_CLASSES, size=(400, 50))
    xt, masked = q_sample(x0, np.full(400, t), schedule, np.random.default_rng(seed))
    p, n = float(schedule.mask_rate(t)), x0.size
    # 20,000 independent Bernoulli(p) draws: the observed rate is within 5 standard deviations
    assert abs(masked.mean() - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.array_equal(xt == MASK, masked)
    assert np.array_equal(xt[~masked], x0[~masked])                    # unmasked tokens never change


@given(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 64))
def test_sample_times_stratified(seed, B):
    t = sample_times(B, np.random.default_rng(seed))
    assert t.shape == (B,) and np.all((0 <= t) & (t < 1))
    assert np.array_equal(np.floor(np.sort(t) * B), np.arange(B))       # exactly one t in each [i/B, (i+1)/B)


@given(seed=st.integers(0, 2**32 - 1), L=st.integers(1, 16))
def test_mask_exactly_masks_k_positions(seed, L):
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, NUM_CLASSES, size=(30, L))
    k = rng.integers(0, L + 1, size=30)
    xt, masked = mask_exactly(x0, k, rng)
    assert np.array_equal(masked.sum(1), k) and np.array_equal(xt[~masked], x0[~masked])


# ----------------------------------------------------------------------------- loss
class FixedLogits(tl.nn.Module):
    """A 'denoiser' whose logits are one leaf tensor, so the test can read dLoss/dlogits directly."""
    time_input = False

    def __init__(self, B, L, seed):
        self.logits = Tensor(np.random.default_rng(seed).standard_normal((B, L, NUM_CLASSES)), requires_grad=True)

    def forward(self, xt, t=None):
        self.seen = xt
        return self.logits


@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["nelbo", "simple"]))
def test_loss_ignores_unmasked_positions(seed, objective):
    x0 = encode(NAMES[:8], 8)
    model = FixedLogits(8, 8, seed)
    loss, value = diffusion_loss(model, x0, CosineSchedule(), np.random.default_rng(seed), objective)
    loss.backward()
    masked = model.seen == MASK
    grad_norm = np.abs(model.logits.grad).sum(-1)
    assert np.all(grad_norm[~masked] == 0)                              # zero weight where unmasked
    assert np.all(grad_norm[masked] > 0)
    assert np.isfinite(value) and value >= 0


def test_nelbo_loss_matches_hand_formula():
    x0 = encode(NAMES[:8], 8)
    schedule = CosineSchedule()
    model = FixedLogits(8, 8, 1)
    loss, _ = diffusion_loss(model, x0, schedule, np.random.default_rng(5))
    rng = np.random.default_rng(5)                                     # replay the same draws
    t = sample_times(8, rng)
    _, masked = q_sample(x0, t, schedule, rng)
    logp = model.logits.data - np.log(np.exp(model.logits.data).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]
    expected = (schedule.weight(t)[:, None] * masked * nll).sum() / ((x0 != PAD).sum() + 8)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-9)


# ----------------------------------------------------------------------------- sampler
@given(L=st.integers(1, 16), data=st.data())
def test_reveal_schedule_reveals_everything(L, data):
    steps = data.draw(st.integers(1, L))
    n = np.arange(L + 1)
    counts = reveal_schedule(n, steps, CosineSchedule())
    assert counts.shape == (L + 1, steps) and np.all(counts >= 0)
    assert np.array_equal(counts.sum(1), n)


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


# ----------------------------------------------------------------------------- likelihood
def test_identity_agrees_with_continuous_time_estimate():
    """The exact identity and the Monte-Carlo-over-t estimate are two estimators of one number.
    Linear schedule: alpha(0) = 1 exactly, so the continuous bound covers all mask rates, as the identity does."""
    model = tiny_transformer(L=6)
    x = encode(NAMES * 3, 6)
    exact = nelbo(model, x, seed=0, target_se=0.003)
    mc = nelbo(model, x, LinearSchedule(), seed=1, target_se=0.02, method="monte_carlo", max_repeats=4096)
    assert abs(exact["nelbo"] - mc["nelbo"]) < 4 * np.hypot(exact["se"], mc["se"])
    assert exact["se"] < 0.003 and mc["se"] < 0.02


def test_stratified_k_is_the_same_estimate():
    """Scoring each row at fewer k (stratified, reweighted) estimates the same NELBO as scoring every k; with
    one k per block of one, it is the full identity, draw for draw."""
    model = tiny_transformer(L=6)
    x = encode(NAMES * 3, 6)
    every = nelbo(model, x, seed=0, target_se=0.003, k_per_name=6)
    assert nelbo(model, x, seed=0, target_se=0.003, k_per_name=60) == every        # m is capped at L
    for m in (1, 2, 4):
        fewer = nelbo(model, x, seed=1, target_se=0.003, k_per_name=m, max_repeats=4096)
        assert abs(fewer["nelbo"] - every["nelbo"]) < 4 * np.hypot(fewer["se"], every["se"]), m
        assert fewer["se"] < 0.003


def test_identity_is_exact_for_one_position():
    """L = 1: NELBO(x) = -log p(x | MASK) exactly; the estimator has no noise at all."""
    model = tiny_transformer(L=1)
    x = np.array([[3], [PAD], [0]])
    with tl.no_grad():
        logits = model(np.full((3, 1), MASK)).data[:, 0].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -logp[np.arange(3), x[:, 0]].sum() / (2 + 1 + 2)       # chars: 1 letter + end, end only, 1 + end
    result = nelbo(model, x, seed=0)
    np.testing.assert_allclose(result["nelbo"], expected, rtol=1e-5)
    assert result["se"] == 0


def test_unigram_baseline_uniform():
    x = encode(["ab", "cd"], 4)            # letters a, b, c, d and 2 end tokens; add-one smoothing over 27
    p = (np.array([1, 1, 1, 1] + [0] * 22 + [2]) + 1) / (6 + 27)
    expected = -(4 * np.log(p[0]) + 2 * np.log(p[26])) / 6
    np.testing.assert_allclose(unigram_nll(x, x), expected)


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("make", [lambda: MLPDenoiser(L=8, hidden=32), lambda: SkipMLPDenoiser(L=8, hidden=32),
                                  lambda: TransformerDenoiser(L=8, dim=16, layers=2, heads=2),
                                  lambda: TransformerDenoiser(L=8, dim=16, layers=1, heads=2, time_input=True)],
                         ids=["mlp", "skip_mlp", "transformer", "transformer_t"])
def test_each_denoiser_trains_a_few_steps_and_samples(make):
    tl.manual_seed(0)
    model = make()
    x = encode(NAMES, 8)
    opt = tl.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(30):
        loss, value = diffusion_loss(model, x, CosineSchedule(), rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(value)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])               # it learns something
    out = sample(model, 5, steps=4, seed=0)
    assert all(isinstance(decode(r), str) for r in out.tokens) and not (out.tokens == MASK).any()


def test_names_data_split_is_canonical():
    data = NamesData.load()
    assert len(data.test) == 1600 and len(data.val) == 1600 and len(data.train) == 28800
    names = data.report.names
    assert decode(data.test[0]) == names[0] and decode(data.test[1]) == names[20]
    assert decode(data.val[0]) == names[1] and decode(data.train[0]) == names[2]
    assert not set(map(decode, data.test)) & set(data.train_names)
