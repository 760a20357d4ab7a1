"""scripts/ end to end (fast settings; the full runs are marked slow): train_pure.py then sample.py, compare.py,
bench.py --quick, and bad input to the scripts as one clear line and exit 2."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import write

pytestmark = pytest.mark.scripts
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_trainer_script_smoke(tmp_path):
    out = str(tmp_path / "m.npz")
    r = run_script("scripts/train_pure.py", "--steps", "30", "--batch-size", "32", "--num-samples", "50",
                   "--log-every", "10", "--out", out)
    assert r.returncode == 0, r.stderr
    for expected in ("train nelbo", "test NELBO", "unigram baseline", "saved", "T=0.5", "T=0.8", "T=1.0",
                     "T=1.5", "forward process", "reverse process", "revealed at"):
        assert expected in r.stdout
    r = run_script("scripts/sample.py", "--checkpoint", out, "--num", "5", "--steps", "4")
    assert r.returncode == 0 and len(r.stdout.split()) == 5


def test_compare_script_trains_loads_and_reports_each_models_settings(tmp_path):
    """compare.py end to end on 400 names: trains both kinds, then loads them back; the training table shows
    each model's own settings (a loaded checkpoint's, as saved), and every table is printed."""
    with open(os.path.join(ROOT, "names.txt")) as f:
        names = write(tmp_path, "".join(f.readlines()[:400]))
    prefix = str(tmp_path / "cmp")
    common = ["--names", names, "--num-samples", "30", "--seed", "1"]
    r = run_script("scripts/compare.py", "--steps", "12", "--batch-size", "16", "--eval-every", "6",
                   "--dropout", "0.1", "--weight-decay", "0.05", "--out", prefix, *common)
    assert r.returncode == 0, r.stderr
    tables = ("## Training", "## Test likelihood", "## Samples", "## Diffusion quality versus sampling steps",
              "## Learning curves")
    assert all(t in r.stdout for t in tables)
    assert re.search(r"\| AR \| 204,379 \| 12 x 16 \| 0.003 \| 0.05 \| 0.1 \| next token \| every 6 steps, "
                     r"best kept \|", r.stdout)
    assert "| step | epochs | AR validation NLL | diffusion validation NELBO |" in r.stdout
    ar = float(re.search(r"\| AR \| NLL \(exact\) \| ([\d.]+) \|", r.stdout).group(1))
    ltr, gap = re.search(r"\| diffusion \| NLL of the left-to-right sampler \(exact\) \| ([\d.]+) \| [\d.]+ \| "
                         r"[+-][\d.]+% \| ([+-][\d.]+) ± [\d.]+ \|", r.stdout).groups()  # paired with the AR
    assert float(gap) == pytest.approx(float(ltr) - ar, abs=2e-4)
    r = run_script("scripts/compare.py", "--ar-checkpoint", prefix + "_ar.npz", "--diffusion-checkpoint",
                   prefix + "_diffusion.npz", "--weight-decay", "0.3", "--iw-orders", "4",  # --weight-decay: no use
                   *common)
    assert r.returncode == 0, r.stderr
    assert all(t in r.stdout for t in tables)
    assert "| diffusion | NLL bound over 4 random orders (importance-weighted) |" in r.stdout
    assert re.search(r"\| diffusion \| NLL bound over 4 random orders \(importance-weighted\) \| [\d.]+ \| [\d.]+ \| "
                     r"[+-][\d.]+% \| [+-][\d.]+ ± [\d.]+ \|", r.stdout)              # with its paired gap to the AR
    assert re.search(r"## Importance-weighted bound versus random orders K.*\n\n\| orders K \| bound \|\n\|---\|---\|\n"
                     r"\| 1 \| [\d.]+ \|\n\| 2 \| [\d.]+ \|\n\| 4 \| [\d.]+ \|\n", r.stdout)
    assert re.search(r"\| diffusion \| 204,379 \| 12 x 16 \| 0.003 \| 0.05 \| 0.1 \| exact_k \| every 6 steps, "
                     r"best kept \| \d+ \| loaded ", r.stdout)


@pytest.mark.slow                      # a whole (quick) benchmark: minutes, and speed is bench's business
def test_bench_quick_prints_every_row(tmp_path):
    """A smoke test, not a timed one: bench.py --quick runs and reports every figure, each a positive number."""
    out = tmp_path / "bench.json"
    r = run_script("scripts/bench.py", "--quick", "--json", str(out))
    assert r.returncode == 0, r.stderr
    figures = json.loads(out.read_text())["figures"]
    rows = ["train step: MLP, batch 128", "train step: skip MLP, batch 128", "train step: Transformer, batch 64",
            "matmul floor: Transformer, batch 64", "step / matmul floor", "train step: Transformer, batch 256",
            "hand-written NumPy step: Transformer, batch 64", "ours / hand-written NumPy",
            "hand-written NumPy / matmul floor",
            "train step: Transformer, batch 64, default malloc",
            "train step: Transformer, batch 64, keep_freed_memory()", "default malloc / keep_freed_memory()",
            "engine overhead per tiny op (fwd + bwd)", "sample 1,000 names, S = 16", "sampling: matmul floor",
            "sampling: hand-written NumPy forward",
            "test-split NELBO (SE < 0.01)", "peak RSS, scripts/train.py"]
    try:
        import torch  # noqa: F401  (the PyTorch rows are there exactly when it is importable)
        rows += ["PyTorch eager step: Transformer, batch 64", "ours / PyTorch", "hand-written NumPy / PyTorch"]
    except ImportError:
        assert not any("PyTorch" in name for name in figures)
    for name in rows:
        assert name in r.stdout and np.isfinite(figures[name]) and figures[name] > 0, name
    breakdown = json.loads(out.read_text())["breakdown"]        # the step, op by op
    for op in ["linear", "attention", "gelu", "layer_norm", "optimizer (clip + AdamW)"]:
        assert op in breakdown and sum(breakdown[op][:2]) > 0, op


@pytest.mark.parametrize("args, message", [
    (["scripts/train_minimal.py", "--steps", "0"], "must be > 0"),
    (["scripts/train_minimal.py", "--batch-size", "-3"], "must be > 0"),
    (["scripts/train_minimal.py", "--lr", "abc"], "not a number"),
    (["scripts/train_minimal.py", "--names", "/nonexistent.txt"], "cannot read names file"),
    (["scripts/sample.py", "--checkpoint", "/nonexistent.npz"], "no such checkpoint"),
    (["scripts/sample.py", "--checkpoint", "names.txt"], "not a checkpoint"),
    (["scripts/train_ar.py", "--dropout", "-0.1"], "must be >= 0"),
    (["scripts/train.py", "--mlp-ratio", "0"], "must be > 0"),
    (["scripts/train_ar.py", "--eval-every", "x"], "not a whole number"),
    (["scripts/evaluate.py", "--checkpoint", "/nonexistent.npz"], "no such checkpoint"),
    (["scripts/evaluate.py", "--checkpoint", "names.txt"], "not a checkpoint"),
])
def test_bad_input_is_one_clear_line_and_exit_2(args, message):
    r = run_script(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script, bar", [("scripts/train_minimal.py", 2.20), ("scripts/train_pure.py", 2.20),
                                         ("scripts/train.py", 2.20)])
def test_default_run_meets_the_quality_bar(tmp_path, script, bar):
    r = run_script(script, "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    nelbo = float(re.search(r"test NELBO ([\d.]+) ± ([\d.]+)", r.stdout).group(1))
    assert nelbo <= bar, r.stdout
    t1 = re.search(r"T=1\.0\s+novel ([\d.]+)%\s+unique ([\d.]+)%\s+length TV ([\d.]+)", r.stdout)
    novel, unique, tv = map(float, t1.groups())
    assert novel >= 50 and unique >= 95 and tv <= 0.1, r.stdout


def test_tune_ranks_variants_on_validation_and_continues_an_interrupted_sweep(tmp_path):
    """tune.py on 300 names with a few steps: a row per variant with its validation curve, ranked best first;
    a second call runs only the variants missing from the JSON; --show prints the table without training."""
    with open(os.path.join(ROOT, "names.txt")) as f:
        names = write(tmp_path, "".join(f.readlines()[:300]))
    out = str(tmp_path / "tune.json")
    also = ["--also", f"--names {names} --steps 6 --batch-size 16", "--eval-every", "3", "--json", out]
    r = run_script("scripts/tune.py", "--variants", "default,min_lr0", *also)
    assert r.returncode == 0, r.stderr
    rows = json.load(open(out))["rows"]
    assert [row["variant"] for row in rows] == ["default", "min_lr0"]
    assert all([s for s, _ in row["validation"]] == [3, 6] and row["train"]["steps"] == 6 for row in rows)
    assert rows[1]["train"]["min_lr_ratio"] == 0 and rows[0]["train"]["min_lr_ratio"] == 0.1
    ranked = sorted(rows, key=lambda row: row["best_validation"])
    assert r.stdout.index(f"`{ranked[0]['variant']}`") < r.stdout.index(f"`{ranked[1]['variant']}`")
    r = run_script("scripts/tune.py", "--variants", "default,k_power-1", *also)
    assert r.returncode == 0 and "default: already in" in r.stdout, r.stderr
    rows = json.load(open(out))["rows"]
    assert [row["variant"] for row in rows] == ["default", "min_lr0", "k_power-1"]
    assert [row["train"]["k_power"] for row in rows] == [0, 0, -1]          # uniform k unless a variant says
    assert [row["model"]["mlp_ratio"] for row in rows] == [4, 4, 4]         # GPT-2's feed-forward unless it says
    assert "k-power -1" in r.stdout
    r = run_script("scripts/tune.py", "--json", out, "--show")
    assert r.returncode == 0 and "3 variants of `scripts/train.py`, ranked." in r.stdout and "..." not in r.stdout
    r = run_script("scripts/tune.py", "--trainer", "train_ar", "--variants", "default,k_power-1", *also[:2])
    assert r.returncode == 2 and r.stdout == "" and r.stderr.strip().splitlines() == [       # refused before training
        "error: variant k_power-1 sets the denoiser's --k-power; scripts/train_ar.py has no such flag "
        "(pass --variants)"], r.stderr
