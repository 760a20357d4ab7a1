"""diffusion/autoregressive.py, the AR baseline: its likelihood against a slow one-prefix-at-a-time reference,
normalization, an analytic L = 1 toy, sampling, checkpoints, and scripts/train_ar.py end to end (the trainer's
early stopping, tested on this model, is in test_trainer.py)."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion import checkpoint
from diffusion.autoregressive import START, ARTransformer, ar_loss, name_nll, sample_ar
from diffusion.data import LETTERS, PAD, encode
from helpers import NAMES, tiny_ar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)


def slow_name_nll(model, name):
    """-log p(name): one forward pass per prefix (START + the letters so far), reading only the last logit."""
    targets = [ord(c) - 97 for c in name] + ([PAD] if len(name) < model.L else [])
    total = 0.0
    with tl.no_grad():
        for i, target in enumerate(targets):
            prefix = np.array([[START] + targets[:i]])
            total -= log_softmax(model(prefix).data[0, -1])[target]
    return total


def test_name_nll_matches_one_prefix_at_a_time():
    model = tiny_ar(L=6)
    names = ["emma", "a", "", "olivia", "zzzzzz", "ida"]                 # empty and full-length (no end) included
    expected = [slow_name_nll(model, n) for n in names]
    np.testing.assert_allclose(name_nll(model, names), expected, rtol=1e-5)


def test_likelihood_sums_to_one_over_every_name():
    """L = 2: the 1 + 26 + 676 possible names; their probabilities must sum to 1 (PAD ends, L letters end)."""
    model = tiny_ar(L=2, seed=3)
    names = [""] + list(LETTERS) + ["".join(p) for p in itertools.product(LETTERS, repeat=2)]
    np.testing.assert_allclose(np.exp(-name_nll(model, names)).sum(), 1.0, rtol=1e-4)


def constant_ar(p):
    """L = 1 model whose next-token distribution is p (27,) whatever the input: zero head weight, bias log p."""
    model = tiny_ar(L=1)
    model.head.weight.data[...] = 0
    model.head.bias.data[...] = np.log(p).astype(np.float32)
    return model


def test_length_one_toy_is_exact():
    """L = 1: p('') = p(PAD) and p(letter c) = p(c) (its end is implied by the length limit)."""
    p = np.random.default_rng(0).dirichlet(np.ones(27))
    model = constant_ar(p)
    np.testing.assert_allclose(name_nll(model, ["", "a", "q"]), -np.log(p[[PAD, 0, 16]]), rtol=1e-5)
    loss, value = ar_loss(model, encode(["", "a"], 1))               # chars: 0 + 1 and 1 + 1
    np.testing.assert_allclose(value, -np.log(p[[PAD, 0]]).sum() / 3, rtol=1e-5)


def test_sampling_follows_the_model():
    p = np.full(27, 0.01)
    p[[0, 1, PAD]] = [0.3, 0.2, 0.26]
    out = sample_ar(constant_ar(p / p.sum()), num=4000, seed=1)
    freq = np.bincount(out.tokens[:, 0], minlength=27) / 4000
    q = p / p.sum()
    assert np.all(np.abs(freq - q) <= 5 * np.sqrt(q * (1 - q) / 4000))


def test_sampler_rows_are_letters_then_pad_and_seeded():
    model = tiny_ar(L=6)
    out = sample_ar(model, 50, temperature=1.0, seed=4)
    assert out.tokens.shape == (50, 6) and 1 <= out.network_calls <= 6
    assert np.all(np.diff((out.tokens == PAD).astype(int), axis=1) >= 0)     # never a letter after PAD
    assert np.array_equal(sample_ar(model, 50, temperature=1.0, seed=4).tokens, out.tokens)
    greedy = sample_ar(model, 3, temperature=0.0, seed=0).tokens[0]
    first = int(log_softmax(model(np.array([[START]])).data[0, 0]).argmax())   # greedy = argmax, step by step
    assert greedy[0] == first


def test_checkpoint_round_trip(tmp_path):
    model = tiny_ar(L=6, dropout=0.1)
    path = str(tmp_path / "ar.npz")
    checkpoint.save(path, model, step=3)
    loaded, meta, _ = checkpoint.load(path)
    assert isinstance(loaded, ARTransformer) and loaded.config == model.config
    np.testing.assert_array_equal(name_nll(loaded, NAMES), name_nll(model, NAMES))


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


@pytest.mark.scripts
def test_train_ar_script_smoke(tmp_path):
    out = str(tmp_path / "ar.npz")
    r = run_script("scripts/train_ar.py", "--steps", "20", "--batch-size", "32", "--num-samples", "20", "--L", "8",
                   "--log-every", "10", "--eval-every", "10", "--dropout", "0.1", "--out", out)
    assert r.returncode == 0, r.stderr
    for expected in ("train nll", "validation nll", "best validation nll", "test NLL (exact)", "saved",
                     "T=0.8", "T=1.0", "own NLL", "bigram KL"):
        assert expected in r.stdout
    r = run_script("scripts/evaluate.py", "--checkpoint", out, "--num-samples", "20")
    assert r.returncode == 0, r.stderr
    assert "test NLL (exact)" in r.stdout and "own NLL" in r.stdout
