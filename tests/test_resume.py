"""Trustworthy runs: Ctrl-C saves and exits 130, --resume continues bit for bit, same seed -> same run."""
import os
import re
import signal
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--steps", "60", "--batch-size", "32", "--log-every", "1", "--num-samples", "20"]  # a log line per step


def train(out, *extra):
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


def test_interrupt_and_resume_is_bit_identical(tmp_path):
    reference = train(str(tmp_path / "ref.npz"))
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
    resumed = train(out, "--resume", out)
    a, b = weights(str(tmp_path / "ref.npz")), weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ref_losses, new_losses = losses(reference), losses(resumed)
    assert new_losses and all(ref_losses[s] == v for s, v in new_losses.items())
    # the figures printed after training (test NELBO, samples) are the same too
    tail = lambda s: without_timings(s[s.index("test NELBO"):])
    assert tail(reference) == tail(resumed)


def test_same_seed_same_run(tmp_path):
    first, second = (train(str(tmp_path / f"{i}.npz")) for i in range(2))
    assert "test NELBO" in first and without_timings(first) == without_timings(second)
    a, b = weights(str(tmp_path / "0.npz")), weights(str(tmp_path / "1.npz"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
