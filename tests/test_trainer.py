"""diffusion/trainer.py: a non-finite loss stops training naming the step, early stopping keeps the best weights,
and (end to end through scripts/train_minimal.py) Ctrl-C saves and exits 130, --resume continues bit for bit,
same seed -> same run."""
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion.autoregressive import ar_loss
from diffusion.data import encode
from diffusion.models import MLPDenoiser
from diffusion.trainer import TrainConfig, TrainingStopped, train
from helpers import NAMES, tiny_ar


def test_non_finite_loss_stops_naming_the_step():
    tl.manual_seed(0)
    model = MLPDenoiser(L=4, hidden=8)
    x = encode(["ab", "cd", "ef", "gh"], 4)
    saved = []

    def loss_fn(model, x0, rng):
        loss = model(x0, np.zeros(len(x0))).sum() * 0.0
        return (loss * float("nan") if len(saved) >= 2 else loss), 0.0
    with pytest.raises(TrainingStopped, match="step 3: .*not finite") as e:
        train(model, x, TrainConfig(steps=10, batch_size=2, log_every=100), loss_fn, log=lambda s: None,
              save=lambda step, opt: saved.append(step), save_every=1)
    assert saved == [1, 2] and not e.value.interrupted              # the last good checkpoint is step 2


def test_training_lowers_the_loss_and_early_stopping_keeps_the_best_weights():
    model = tiny_ar(L=8)
    x = encode(NAMES, 8)
    figures = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.0])                   # best at the 2nd check, then 2 bad ones
    seen = {}

    def validate(m):
        seen[len(seen) + 1] = m.state_dict()
        return next(figures)
    cfg = TrainConfig(steps=60, batch_size=12, lr=3e-3, warmup=5, eval_every=10, patience=2, log_every=10)
    result = train(model, x, cfg, ar_loss, log=lambda *_: None, metric="nll", validate=validate)
    assert result["stopped_early"] and result["last_step"] == 40 and result["best_step"] == 20
    assert [s for s, _ in result["validation"]] == [10, 20, 30, 40] and result["best_validation"] == 2.0
    for name, value in model.state_dict().items():                  # the model ends with the step-20 weights
        np.testing.assert_array_equal(value, seen[2][name])
    first, last = result["history"][0][1], result["history"][-1][1]
    assert last < first


# ---------------------------------------------------------------------- end to end: scripts/train_minimal.py
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--steps", "60", "--batch-size", "32", "--log-every", "1", "--num-samples", "20"]  # a log line per step


def train_minimal(out, *extra):
    r = subprocess.run([sys.executable, "scripts/train_minimal.py", *FAST, "--out", out, *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if k.startswith(("model/", "optim/"))}


def without_timings(stdout):
    """The run's output with wall-clock figures (steps/s, ETA, seconds) and file paths taken out."""
    for pattern in (r"\s+[\d.]+ steps/s\s+ETA\s+\d+s", r"in [\d.]+s", r", [\d.]+s\)", r"[\d.]+s for", r"\S+\.npz"):
        stdout = re.sub(pattern, "", stdout)
    return stdout


def losses(stdout):
    return dict(re.findall(r"step\s+(\d+)/\d+\s+train nelbo ([\d.]+)", stdout))


@pytest.mark.scripts
def test_interrupt_and_resume_is_bit_identical(tmp_path):
    reference = train_minimal(str(tmp_path / "ref.npz"))
    out = str(tmp_path / "run.npz")
    p = subprocess.Popen([sys.executable, "scripts/train_minimal.py", *FAST, "--out", out], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:                      # interrupt once training is under way
        if re.search(r"step\s+20/", line):
            p.send_signal(signal.SIGINT)
            break
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 130, stderr
    assert "resume with:" in stderr and "--resume" in stderr
    stopped_at = int(re.search(r"saved step (\d+)", stderr).group(1))
    assert 20 <= stopped_at < 60
    resumed = train_minimal(out, "--resume", out)
    a, b = weights(str(tmp_path / "ref.npz")), weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ref_losses, new_losses = losses(reference), losses(resumed)
    assert new_losses and all(ref_losses[s] == v for s, v in new_losses.items())
    # the figures printed after training (test NELBO, samples) are the same too
    tail = lambda s: without_timings(s[s.index("test NELBO"):])
    assert tail(reference) == tail(resumed)


@pytest.mark.scripts
def test_same_seed_same_run(tmp_path):
    first, second = (train_minimal(str(tmp_path / f"{i}.npz")) for i in range(2))
    assert "test NELBO" in first and without_timings(first) == without_timings(second)
    a, b = weights(str(tmp_path / "0.npz")), weights(str(tmp_path / "1.npz"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
