"""diffusion/trainer.py: a non-finite loss stops training naming the step, early stopping keeps the best weights,
and (end to end through scripts/train_minimal.py) Ctrl-C saves and exits 130, --resume continues bit for bit,
same seed -> same run."""
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion.autoregressive import ar_prepare, next_token_loss
from diffusion import checkpoint, cli
from diffusion.data import DEFAULT_NAMES, NamesData, encode
from diffusion.models import MLPDenoiser, TransformerDenoiser
from diffusion.trainer import Objective, TrainConfig, TrainingStopped, train
from helpers import NAMES, tiny_ar


def test_non_finite_loss_stops_naming_the_step():
    tl.manual_seed(0)
    model = MLPDenoiser(L=4, hidden=8)
    x = encode(["ab", "cd", "ef", "gh"], 4)
    saved = []

    def loss(model, x0):
        loss = model(x0, np.zeros(len(x0))).sum() * 0.0
        return (loss * float("nan") if len(saved) >= 2 else loss), 0.0
    objective = Objective(lambda model, x0, rng: ((x0,), {}), loss)
    with pytest.raises(TrainingStopped, match="step 3: .*not finite") as e:
        train(model, x, TrainConfig(steps=10, batch_size=2, log_every=100), objective, log=lambda s: None,
              save=lambda step, opt, ema, progress: saved.append(step), save_every=1)
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
    result = train(model, x, cfg, Objective(ar_prepare, next_token_loss), log=lambda *_: None, metric="nll", validate=validate)
    assert result["stopped_early"] and result["last_step"] == 40 and result["best_step"] == 20
    assert [s for s, _ in result["validation"]] == [10, 20, 30, 40] and result["best_validation"] == 2.0
    for name, value in model.state_dict().items():                  # the model ends with the step-20 weights
        np.testing.assert_array_equal(value, seen[2][name])
    first, last = result["history"][0][1], result["history"][-1][1]
    assert last < first


def test_the_weights_average_is_validated_kept_and_resumed_without_touching_training():
    """cfg.ema: the model ends with the moving average of the weights after each step (written out here from
    the weights save() sees); validation scores that average and leaves training as it was (the same final
    average with and without validating); and a run stopped at step 10 and resumed from its saved state (weights,
    optimizer and average) ends bit for bit as the uninterrupted one."""
    x = encode(NAMES, 8)
    cfg = TrainConfig(steps=20, batch_size=12, lr=3e-3, warmup=5, log_every=10, ema=0.8)
    objective = Objective(ar_prepare, next_token_loss)

    def run(cfg, validate=None, model=None, **kw):
        model = model or tiny_ar(L=8)
        trained = []

        def save(step, opt, ema, progress):
            trained.append((model.state_dict(), opt.state_dict(), ema.state_dict()))
        result = train(model, x, cfg, objective, log=lambda *_: None, metric="nll", validate=validate, save=save,
                       save_every=1, **kw)
        return model, trained, result

    tl.manual_seed(0)
    start = tiny_ar(L=8).state_dict()
    tl.manual_seed(0)
    model, trained, _ = run(cfg)
    average = {k: v.astype(np.float64) for k, v in start.items()}
    for n, (weights, _, _) in enumerate(trained, 1):
        d = min(0.8, (1 + n) / (10 + n))
        average = {k: d * average[k] + (1 - d) * weights[k] for k in average}
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, average[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(value, trained[-1][0][name])             # the average, not the last weights

    seen = []
    tl.manual_seed(0)
    validated, _, result = run(TrainConfig(**{**cfg.__dict__, "eval_every": 5}),
                               validate=lambda m: seen.append(m.state_dict()) or 1.0 / (1 + len(seen)))
    assert result["best_step"] == 20 and len(seen) == 4
    early, figures = [], iter([1.0, 2.0, 3.0])                         # best at step 5, then two worse
    tl.manual_seed(0)
    stopped, trained_early, result = run(TrainConfig(**{**cfg.__dict__, "eval_every": 5, "patience": 2}),
                                         validate=lambda m: early.append(m.state_dict()) or next(figures))
    assert result["stopped_early"] and result["best_step"] == 5 and result["last_step"] == 15
    for name, value in stopped.state_dict().items():                 # the average at step 5, not the weights
        np.testing.assert_array_equal(value, early[0][name])
        assert not np.array_equal(value, trained_early[4][0][name])
    for name, value in validated.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[name])  # validating changed nothing
        np.testing.assert_array_equal(value, seen[-1][name])            # and it saw the average

    weights, optimizer, ema = trained[9]                                # saved after step 10
    resumed = tiny_ar(L=8)
    resumed.load_state_dict(weights)
    resumed, _, _ = run(cfg, model=resumed, start_step=10, optimizer_state=optimizer, ema_state=ema)
    for name, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[name])


def test_a_resumed_run_goes_on_with_its_curves_time_and_best_weights():
    """A run stopped at step 12 and resumed with the progress its save received ends as the uninterrupted run: the
    same training curve and validation curve from step 1, the same best step, and the model holds the weights of
    that step (step 10, before the stop: they come from the saved progress), its seconds those of both parts."""
    x = encode(NAMES, 8)
    cfg = TrainConfig(steps=20, batch_size=12, lr=3e-3, warmup=5, log_every=5, eval_every=5)
    objective = Objective(ar_prepare, next_token_loss)
    figures, order = {}, iter([2.0, 1.0, 3.0, 4.0])        # by the weights: best at step 10's, whoever asks

    def validate(model):
        key = b"".join(v.tobytes() for v in model.state_dict().values())
        if key not in figures:
            figures[key] = next(order)
        return figures[key]

    def run(model, **kw):
        saved = {}

        def save(step, opt, ema, progress):
            saved[step] = copy.deepcopy((model.state_dict(), opt.state_dict(), progress))
        return train(model, x, cfg, objective, log=lambda *_: None, metric="nll", validate=validate, save=save,
                     save_every=1, **kw), saved
    tl.manual_seed(0)
    reference, saved = run(whole := tiny_ar(L=8))
    weights, optimizer, progress = saved[12]
    assert [s for s, _ in progress["history"]] == [5, 10] and progress["tracker"]["best_step"] == 10
    as_saved = {k: v for k, v in progress.items() if k != "best_weights"}   # the checkpoint keeps it as JSON
    progress = dict(json.loads(json.dumps(as_saved)), best_weights=progress["best_weights"])
    resumed = tiny_ar(L=8)
    resumed.load_state_dict(weights)
    result, _ = run(resumed, start_step=12, optimizer_state=optimizer, progress=progress)
    assert result["history"] == reference["history"] and result["validation"] == reference["validation"]
    assert result["best_step"] == reference["best_step"] == 10 and result["seconds"] > progress["seconds"]
    for name, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value, whole.state_dict()[name])


def test_ctrl_c_during_the_validation_that_stops_early_ends_the_run():
    """A Ctrl-C that lands while the last allowed validation runs: the run ends stopped early with its best
    weights (a file that could be resumed would train on past the stop)."""
    model, x = tiny_ar(L=8), encode(NAMES, 8)
    figures = iter([1.0, 2.0])                                        # patience 1: the 2nd validation stops it

    def validate(model):
        value = next(figures)
        if value == 2.0:
            os.kill(os.getpid(), signal.SIGINT)                        # the user presses Ctrl-C just now
        return value
    cfg = TrainConfig(steps=30, batch_size=12, lr=3e-3, warmup=5, log_every=10, eval_every=5, patience=1)
    result = train(model, x, cfg, Objective(ar_prepare, next_token_loss), log=lambda *_: None, metric="nll",
                   validate=validate)
    assert result["stopped_early"] and result["last_step"] == 10 and result["best_step"] == 5


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
    """Ctrl-C at step 20 or so, then --resume: the same weights, losses and test figures as one uninterrupted run,
    and the same figures file: training and validation curves from step 1, the best step, the time of both parts."""
    reference = train_minimal(str(tmp_path / "ref.npz"), "--eval-every", "15", "--json", str(tmp_path / "ref.json"))
    out = str(tmp_path / "run.npz")
    p = subprocess.Popen([sys.executable, "scripts/train_minimal.py", *FAST, "--eval-every", "15", "--out", out],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:                      # interrupt once training is under way
        if re.search(r"step\s+20/", line):
            p.send_signal(signal.SIGINT)
            break
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 130, stderr
    assert "resume with:" in stderr and "--resume" in stderr
    stopped_at = int(re.search(r"saved step (\d+)", stderr).group(1))
    assert 20 <= stopped_at < 60
    resumed = train_minimal(out, "--resume", out, "--json", str(tmp_path / "run.json"))
    a, b = weights(str(tmp_path / "ref.npz")), weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ref_losses, new_losses = losses(reference), losses(resumed)
    assert new_losses and all(ref_losses[s] == v for s, v in new_losses.items())
    # the figures printed after training (test NELBO, samples) are the same too
    tail = lambda s: without_timings(s[s.index("test NELBO"):])
    assert tail(reference) == tail(resumed)
    ref, run = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ref", "run"))
    assert len(run["history"]) == 60 and run["history"] == ref["history"]
    assert [s for s, _ in run["validation"]] == [15, 30, 45, 60] and run["validation"] == ref["validation"]
    assert run["best_step"] == ref["best_step"]
    this_part = float(re.search(r"trained \d+ steps in ([\d.]+)s \(", resumed).group(1))
    assert run["train_seconds"] > this_part


@pytest.mark.scripts
def test_same_seed_same_run(tmp_path):
    first, second = (train_minimal(str(tmp_path / f"{i}.npz")) for i in range(2))
    assert "test NELBO" in first and without_timings(first) == without_timings(second)
    a, b = weights(str(tmp_path / "0.npz")), weights(str(tmp_path / "1.npz"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- all cores: the step in worker processes
def train_default(workers, steps=20, dropout=0.0, resume_at=None):
    """The default Transformer denoiser trained as scripts/train.py trains it (its objective and settings, the
    first `steps` steps of names.txt) with `workers` processes. resume_at: stop there, then continue on a new
    model from the saved state, as --resume does. Returns (the figures logged, the weights)."""
    data = NamesData.load(DEFAULT_NAMES, L=16)
    cfg = TrainConfig(steps=steps, batch_size=64, lr=2e-3, objective="exact_k", log_every=1)
    tl.manual_seed(0)
    model = TransformerDenoiser(dropout=dropout)
    objective = cli.objective(model, cfg, data)[0]
    logged, saved = [], {}

    def save(step, opt, ema, progress):
        saved.update(weights=model.state_dict(), optimizer=opt.state_dict(), engine=tl.random.get_state())
    run = dict(log=logged.append, workers=workers)
    if resume_at is None:
        train(model, data.train, cfg, objective, **run)
    else:
        short = TrainConfig(**{**cfg.__dict__, "steps": resume_at})
        train(model, data.train, short, objective, save=save, **run)
        model = TransformerDenoiser(dropout=dropout)
        model.load_state_dict(saved["weights"])
        tl.random.set_state(saved["engine"])
        train(model, data.train, cfg, objective, start_step=resume_at, optimizer_state=saved["optimizer"], **run)
    figures = [float(re.search(r"train nelbo ([\d.]+)", line).group(1)) for line in logged]
    return np.array(figures), model.state_dict()


def test_one_and_two_workers_train_the_default_model_alike():
    """20 steps of the default model: the same losses and weights to 1e-5 in float32 (the gradient's sum is
    only rounded differently); and with 2 workers, stopping at step 10 and resuming repeats the run bit for bit."""
    one_losses, one = train_default(workers=1)
    two_losses, two = train_default(workers=2)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    assert one_losses[0] - one_losses[-1] > 1.0                          # training got somewhere
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    assert any(not np.array_equal(two[name], one[name]) for name in one)  # two processes did run
    resumed_losses, resumed = train_default(workers=2, resume_at=10)
    np.testing.assert_array_equal(resumed_losses, two_losses)
    assert all(np.array_equal(resumed[name], two[name]) for name in two)


def test_more_workers_than_rows_is_refused():
    model = tiny_ar(L=8)
    with pytest.raises(ValueError, match="smaller than the 4 workers"):
        train(model, encode(NAMES, 8), TrainConfig(steps=1, batch_size=3), Objective(ar_prepare, next_token_loss),
              log=lambda *_: None, workers=4)


# ---------------------------------------------------------------------- end to end: faults with worker processes
def children(pid):
    """Process ids of pid's children (Linux: /proc/PID/task/TID/children)."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
            found.update(int(c) for c in f.read().split())
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"            # a zombie has ended
    except OSError:
        return False


def segments():
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def run_until(args, line, tmp_path, signal_to=None, script=None):
    """Start scripts/train.py (or `script`, a wrapper) with `args` in a session of its own; when `line` (a
    regex) is printed, call signal_to(process, worker pids). Returns (exit code, stdout, stderr, worker pids,
    seconds from the signal to the exit)."""
    before = segments()
    command = [sys.executable, script or "scripts/train.py", *args]
    p = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    out, workers, sent = [], set(), None
    for text in p.stdout:
        out.append(text)
        workers |= children(p.pid) if p.poll() is None else set()
        if sent is None and re.search(line, text) and signal_to:
            workers |= children(p.pid)
            signal_to(p, sorted(workers))
            sent = time.monotonic()
    stdout, stderr = p.communicate(timeout=120)
    seconds = time.monotonic() - sent if sent else None
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker process is left"
    assert segments() <= before, "a shared-memory segment is left"
    return p.returncode, "".join(out) + stdout, stderr, workers, seconds


def worker_pids(pids):
    """The data-parallel workers among a run's child processes (multiprocessing's resource tracker is one too)."""
    def command(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    return [pid for pid in pids if "spawn_main" in command(pid)]


RUN = ["--workers", "2", "--steps", "400", "--log-every", "1", "--num-samples", "0"]


@pytest.mark.scripts
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="reads /proc and /dev/shm")
def test_ctrl_c_with_workers_saves_exits_130_and_leaves_nothing(tmp_path):
    out = str(tmp_path / "run.npz")
    code, stdout, stderr, workers, seconds = run_until(
        RUN + ["--out", out], r"step\s+15/", tmp_path, lambda p, _: os.killpg(p.pid, signal.SIGINT))  # the terminal's
    assert code == 130, stderr
    assert len(workers) >= 2                                  # the two workers (and multiprocessing's tracker)
    step = int(re.search(r"saved step (\d+)", stderr).group(1))
    assert 15 <= step < 400 and "resume with: python scripts/train.py --resume" in stderr
    assert checkpoint.read_meta(out)["step"] == step


@pytest.mark.scripts
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="reads /proc and /dev/shm")
def test_a_killed_worker_stops_the_run_with_one_line_and_the_checkpoint_intact(tmp_path):
    out = str(tmp_path / "run.npz")

    def kill_a_worker(p, pids):
        os.kill(worker_pids(pids)[-1], signal.SIGKILL)
    code, stdout, stderr, _, seconds = run_until(RUN + ["--out", out, "--save-every", "10"], r"step\s+25/",
                                                 tmp_path, kill_a_worker)
    assert code == 1 and seconds < 10, (code, seconds, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: data-parallel worker \d \(pid \d+\) was killed by signal "
                                        r"SIGKILL during the step; .*run.npz holds step 20", lines[0]), stderr
    assert checkpoint.load(out)[1]["step"] == 20


@pytest.mark.scripts
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="reads /proc and /dev/shm")
def test_a_worker_that_raises_stops_the_run_with_one_line(tmp_path):
    out = str(tmp_path / "run.npz")
    wrapper = tmp_path / "train_with_a_faulty_loss.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
        "import diffusion.cli, helpers\n"
        "diffusion.cli.masked_loss = helpers.loss_that_fails_on_call_25\n"
        f"sys.argv = [{os.path.join(ROOT, 'scripts', 'train.py')!r}] + sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    code, stdout, stderr, _, _ = run_until(RUN + ["--out", out, "--save-every", "10"], r"$^", tmp_path,
                                           script=str(wrapper))
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert re.match(r"error: data-parallel worker \d \(pid \d+\) raised during the step: ValueError: injected "
                    r"failure in the loss; .*run.npz holds step 20", lines[0]), stderr
    assert checkpoint.load(out)[1]["step"] == 20 and re.search(r"step\s+24/", stdout)
