"""tinygrad_lite.parallel: the data-parallel step equals the one-process step, and every way a run can end
(a worker killed, a worker raising, Ctrl-C in the parent) stops promptly and leaves no process and no
shared-memory segment behind. Tests start at most 2 workers.

The functions at the top are module-level on purpose: a spawned worker rebuilds the model and finds the loss
by importing this module by name (pickle stores functions by reference).
"""
import doctest
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import functional as F, optim, parallel
from tinygrad_lite.parallel import DistributedDataParallel, ModelPool, WorkerError
from diffusion.data import chars_per_name, encode
from diffusion.loss import masked_loss, prepare
from diffusion.models import TransformerDenoiser
from diffusion.schedule import CosineSchedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(L=16, dim=32, layers=2, heads=4)
DEFAULT = dict(L=16, dim=64, layers=4, heads=4)


# ----------------------------------------------------------------------------- run in the workers
def make_denoiser(dtype="float32", **config):
    """TransformerDenoiser(**config), its weights cast to `dtype` (float64 makes rounding negligible)."""
    model = TransformerDenoiser(**config)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def make_other_model(**config):
    """A model with one layer fewer than asked: the workers must refuse to use it."""
    return TransformerDenoiser(**{**config, "layers": config["layers"] - 1})


def own_mean_shard_loss(model, x0, xt, t, targets, weight, chars, masked=None):
    """The mistake the contract forbids: a shard divided by its own denominator (its own letters + end tokens,
    from its rows x0), not the batch's."""
    return masked_loss(model, xt, t, targets, weight, chars=int(chars_per_name(x0).sum()))


def embedding_loss(model, x0, *, chars):
    """A loss that reads only the token embedding: every other parameter gets no gradient at all."""
    loss = (model.tok(x0) ** 2).sum() * (1.0 / chars)
    return loss, loss.item()


def raising_loss(model, x0, *, chars):
    """Raises in the worker whose shard holds a row starting with a (negative) marker."""
    if (x0[:, 0] < 0).any():
        raise ValueError(f"boom: a marked row in this shard of {len(x0)} rows")
    return sleepy_loss(model, x0, chars=chars, seconds=0)


def sleepy_loss(model, x0, *, chars, seconds=60):
    """A step that takes `seconds`: time for the test to kill a worker or interrupt the parent mid-step."""
    time.sleep(seconds)
    logits = model(x0)
    loss = F.cross_entropy(logits, x0, reduction="sum") * (1.0 / chars)
    return loss, loss.item()


# ----------------------------------------------------------------------------- helpers
def names(n, L=16, offset=0):
    with open(os.path.join(ROOT, "names.txt")) as f:
        rows = [line.strip() for line in f if 0 < len(line.strip()) <= L]
    return encode(rows[offset:offset + n], L)


def noise(model, x0, seed, objective):
    """What the parent draws for a step: diffusion.loss.prepare's rows and the batch's denominators."""
    return prepare(model, x0, CosineSchedule(), np.random.default_rng(seed), objective)


def build(config, dtype="float32", seed=0):
    tl.manual_seed(seed)
    return make_denoiser(dtype, **config)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_nothing_left(ddp):
    """No worker process and no shared-memory segment remain."""
    assert ddp.pids and not any(alive(pid) for pid in ddp.pids), [pid for pid in ddp.pids if alive(pid)]
    if os.path.isdir("/dev/shm"):                      # Linux shows the segments as files
        assert not os.path.exists(os.path.join("/dev/shm", ddp.shm_name.lstrip("/"))), ddp.shm_name


def after(seconds, action):
    """Run action() in a thread after `seconds` (started now)."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


# ----------------------------------------------------------------------------- the maths
def test_the_docstring_snippet_holds():
    """The module docstring's NumPy check of why the shard gradients sum to the batch gradient."""
    result = doctest.testmod(parallel, verbose=False)
    assert result.attempted >= 5 and result.failed == 0, result


@pytest.mark.parametrize("dtype, objective, tol", [("float32", "exact_k", 1e-5), ("float64", "simple", 1e-12)])
def test_shard_gradients_sum_to_the_batch_gradient(dtype, objective, tol):
    model = build(SMALL, dtype)
    x0 = names(37)                                       # odd: shards of 18 and 19 rows
    rows, shared = noise(model, x0, 7, objective)
    loss, figure = masked_loss(model, *rows, **shared)
    loss.backward()
    expected = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    with DistributedDataParallel(model, make_denoiser, dict(dtype=dtype, **SMALL), masked_loss, workers=2) as ddp:
        got_loss, got_figure = ddp.backward(*rows, **shared)
        got = [p.grad.copy() for p in model.parameters()]
        ddp.backward(*rows, **shared)                     # without zero_grad, gradients accumulate
        twice = [p.grad.copy() for p in model.parameters()]
    assert got_loss == pytest.approx(loss.item(), rel=tol) and got_figure == pytest.approx(figure, rel=tol)
    scale = max(float(np.abs(g).max()) for g in expected)
    assert scale > 1e-3
    for g, e, g2, p in zip(got, expected, twice, model.parameters()):
        assert g.dtype == p.data.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, e, rtol=0, atol=tol * scale)
        np.testing.assert_allclose(g2, 2 * e, rtol=0, atol=2 * tol * scale)
    # the tolerance can tell: shards divided by their own denominators (the mistake) sum to another gradient
    model.zero_grad()
    for part in (slice(0, 18), slice(18, 37)):
        wrong, _ = own_mean_shard_loss(model, x0[part], *(None if r is None else r[part] for r in rows), **shared)
        wrong.backward()
    worst = max(float(np.abs(p.grad - e).max()) for p, e in zip(model.parameters(), expected))
    assert worst > 100 * tol * scale


def run_steps(model, steps, batch, step_grad):
    """`steps` trainer-like steps (AdamW, clip 1.0, warmup): step_grad(rows, shared) fills the gradients and
    returns the loss. Returns the losses."""
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    data = names(1000)
    losses = []
    for step in range(1, steps + 1):
        x0 = data[np.random.default_rng([0, step]).permutation(len(data))[:batch]]
        rows, shared = noise(model, x0, [0, step, 1], "exact_k")
        opt.lr = 1e-3 * optim.warmup_decay(step - 1, steps, 5)
        opt.zero_grad()
        losses.append(step_grad(rows, shared))
        optim.clip_grad_norm_(params, 1.0)
        opt.step()
    return losses


def twenty_steps(config, dtype, batch, workers, repeat=False):
    """(losses, weights, logits on held-out rows) after 20 steps with `workers` workers. repeat: run the 20
    steps a second time on the same workers from the same start and check the result is the same bits."""
    model = build(config, dtype)
    start = model.state_dict()
    with DistributedDataParallel(model, make_denoiser, dict(dtype=dtype, **config), masked_loss, workers) as ddp:
        def step_grad(rows, shared):
            return ddp.backward(*rows, **shared)[0]
        losses = run_steps(model, 20, batch, step_grad)
        weights = [p.data.copy() for p in model.parameters()]
        if repeat:
            model.load_state_dict(start)                            # in place: into the shared weights
            assert run_steps(model, 20, batch, step_grad) == losses
            assert all(np.array_equal(p.data, w) for p, w in zip(model.parameters(), weights))
    with tl.no_grad():
        logits = model.eval()(names(200, offset=2000)).data
    return np.array(losses), weights, logits


def check_one_against_two_workers(config, dtype, batch):
    """1 worker (the whole batch in one process, as the one-process trainer computes it) against 2 workers."""
    one = twenty_steps(config, dtype, batch, workers=1)
    two = twenty_steps(config, dtype, batch, workers=2, repeat=True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(two[0], one[0], rtol=tol)                    # the losses
    np.testing.assert_allclose(two[2], one[2], rtol=0, atol=tol)            # the predictions
    assert np.abs(one[0][-1] - one[0][0]) > 100 * tol                        # training got somewhere
    for (name, _), w2, w1 in zip(build(config).named_parameters(), two[1], one[1]):
        np.testing.assert_allclose(w2, w1, rtol=0, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twenty_adamw_steps_give_the_same_losses_and_weights_with_1_and_2_workers(dtype):
    check_one_against_two_workers(SMALL, dtype, batch=32)


@pytest.mark.slow
def test_twenty_adamw_steps_of_the_default_model_with_1_and_2_workers():
    check_one_against_two_workers(DEFAULT, "float32", batch=64)


def test_parameters_the_loss_does_not_use_keep_no_gradient():
    """As after loss.backward() in one process: .grad stays None, so AdamW leaves those weights alone."""
    model = build(SMALL)
    x0 = names(16)
    with DistributedDataParallel(model, make_denoiser, SMALL, embedding_loss) as ddp:
        ddp.backward(x0, chars=chars_per_name(x0).sum())
    assert model.tok.weight.grad is not None and np.abs(model.tok.weight.grad).max() > 0
    assert all(p.grad is None for p in model.parameters() if p is not model.tok.weight)


# ----------------------------------------------------------------------------- the processes
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_run_blas_on_one_thread_and_the_parent_environment_is_restored():
    before = {name: os.environ.get(name) for name in parallel.BLAS_THREADS_ENV}
    model = build(SMALL)
    x0 = names(64)
    with DistributedDataParallel(model, make_denoiser, SMALL, sleepy_loss) as ddp:
        ddp.backward(x0, chars=chars_per_name(x0).sum(), seconds=0)     # BLAS has run in each worker
        for pid in ddp.pids:
            with open(f"/proc/{pid}/environ", "rb") as f:            # the environment the worker started with
                environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
            assert all(environ.get(name.encode()) == b"1" for name in parallel.BLAS_THREADS_ENV), environ
            with open(f"/proc/{pid}/status") as f:
                threads = int(f.read().split("Threads:")[1].split()[0])
            assert threads == 1, f"worker {pid} runs {threads} threads"   # OpenBLAS would add one per extra core
    assert {name: os.environ.get(name) for name in parallel.BLAS_THREADS_ENV} == before
    assert_nothing_left(ddp)


def test_a_rebound_parameter_is_used_and_close_gives_the_parameters_back_their_own_memory():
    model = build(SMALL)
    weights = [p.data.copy() for p in model.parameters()]
    rows, shared_values = noise(model, names(16), 1, "exact_k")
    with DistributedDataParallel(model, make_denoiser, SMALL, masked_loss) as ddp:
        shared = ddp._weights
        assert all(np.shares_memory(p.data, shared) for p in model.parameters())
        model.head.bias.data = model.head.bias.data + 1.0          # rebinding cuts it off the shared weights
        expected, _ = masked_loss(model, *rows, **shared_values)
        loss, _ = ddp.backward(*rows, **shared_values)             # backward copies it back in first
        assert loss == pytest.approx(expected.item(), rel=1e-6)
        assert np.shares_memory(model.head.bias.data, shared)
    assert not any(np.shares_memory(p.data, shared) for p in model.parameters())
    assert all(np.array_equal(p.data, w + (1.0 if p is model.head.bias else 0.0))
               for p, w in zip(model.parameters(), weights))
    assert_nothing_left(ddp)


def test_workers_ignore_ctrl_c():
    """A terminal's Ctrl-C reaches every process of the group; the workers leave it to the parent."""
    model = build(SMALL)
    x0 = names(16)
    with DistributedDataParallel(model, make_denoiser, SMALL, sleepy_loss) as ddp:
        for pid in ddp.pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.3)
        assert all(alive(pid) for pid in ddp.pids)
        loss, _ = ddp.backward(x0, chars=chars_per_name(x0).sum(), seconds=0)
    assert np.isfinite(loss)
    assert_nothing_left(ddp)


def test_a_killed_worker_stops_the_parent_within_seconds():
    model = build(SMALL)
    x0 = names(16)
    ddp = DistributedDataParallel(model, make_denoiser, SMALL, sleepy_loss)
    weights = [p.data.copy() for p in model.parameters()]
    start = time.monotonic()
    after(0.5, lambda: os.kill(ddp.pids[1], signal.SIGKILL))
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) was killed by signal SIGKILL") as caught:
        with ddp:
            ddp.backward(x0, chars=chars_per_name(x0).sum())      # each worker sleeps 60 s in its loss
    assert time.monotonic() - start < 5
    assert caught.value.worker == 1 and "\n" not in str(caught.value)
    assert all(np.array_equal(p.data, w) for p, w in zip(model.parameters(), weights))   # the weights survive
    assert_nothing_left(ddp)


def test_a_raising_worker_stops_the_parent_with_its_message():
    model = build(SMALL)
    x0 = names(16)
    x0[12, 0] = -1                                                # a marked row in the second shard
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) raised during the step: ValueError: boom") as caught:
        with DistributedDataParallel(model, make_denoiser, SMALL, raising_loss) as ddp:
            ddp.backward(x0, chars=chars_per_name(x0).sum())
    assert time.monotonic() - start < 10
    assert "raising_loss" in caught.value.worker_traceback       # the worker's traceback, for debugging
    assert_nothing_left(ddp)
    with pytest.raises(RuntimeError, match="after close"):
        ddp.backward(x0, chars=1)


def test_a_worker_that_does_not_answer_in_time_stops_the_parent():
    model = build(SMALL)
    x0 = names(16)
    ddp = DistributedDataParallel(model, make_denoiser, SMALL, sleepy_loss)
    ddp.timeout = 0.5                                             # seconds, from now on (the start took longer)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 0 \(pid \d+\) did not answer the step within 0.5 s \(nor did"):
        with ddp:
            ddp.backward(x0, chars=chars_per_name(x0).sum())      # the workers sleep 60 s in their loss
    assert time.monotonic() - start < 5
    assert_nothing_left(ddp)


def test_ctrl_c_in_the_parent_leaves_nothing_behind():
    model = build(SMALL)
    x0 = names(16)
    main = threading.main_thread().ident
    ddp = DistributedDataParallel(model, make_denoiser, SMALL, sleepy_loss)
    start = time.monotonic()
    after(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))   # as Ctrl-C: SIGINT to the main thread
    weights = [p.data.copy() for p in model.parameters()]
    with pytest.raises(KeyboardInterrupt):                        # no `with`: backward itself cleans up
        ddp.backward(x0, chars=chars_per_name(x0).sum())          # the workers sleep 60 s in their loss
    assert time.monotonic() - start < 10
    assert all(np.array_equal(p.data, w) for p, w in zip(model.parameters(), weights))
    assert_nothing_left(ddp)


def test_a_worker_that_cannot_build_the_model_stops_the_start(monkeypatch):
    created = []

    class Recorded(parallel.shared_memory.SharedMemory):          # notes the segment's name
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self.name)

    monkeypatch.setattr(parallel.shared_memory, "SharedMemory", Recorded)
    model = build(SMALL)
    weights = [p.data.copy() for p in model.parameters()]
    with pytest.raises(WorkerError, match="raised during the start: ValueError: make_model built a model"):
        DistributedDataParallel(model, make_other_model, SMALL, masked_loss)
    assert len(created) == 1 and not os.path.exists(os.path.join("/dev/shm", created[0].lstrip("/")))
    assert not multiprocessing.active_children()
    assert all(p.data.flags.owndata and np.array_equal(p.data, w) for p, w in zip(model.parameters(), weights))


def test_arguments_are_checked_before_any_process_starts():
    model = build(SMALL)
    with pytest.raises(TypeError, match="loss_fn must be picklable"):
        DistributedDataParallel(model, make_denoiser, SMALL, lambda model, x: x)
    with pytest.raises(ValueError, match="workers must be"):
        DistributedDataParallel(model, make_denoiser, SMALL, masked_loss, workers=0)



def double_first(model, x):
    """A map job: raises for a negative first value, else returns it doubled."""
    if x[0] < 0:
        raise ValueError(f"negative: {x[0]}")
    return 2 * x


def test_map_returns_results_in_order_and_a_raise_is_one_line_with_its_cause():
    model = build(SMALL)
    items = [np.array([i]) for i in range(7)]
    with ModelPool(model, make_denoiser, SMALL, workers=2) as pool:
        assert [int(r[0]) for r in pool.map(double_first, items)] == [2 * i for i in range(7)]
        with pytest.raises(WorkerError, match=r"model-pool worker \d \(pid \d+\) raised during the map: "
                                              r"ValueError: negative: -3$") as caught:
            pool.map(double_first, items + [np.array([-3])])
    assert isinstance(caught.value.__cause__, ValueError) and "Traceback" in caught.value.worker_traceback
    assert_nothing_left(pool)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_ctrl_c_while_workers_start_reaches_the_parent_only(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group, workers still importing included: they start
    with SIGINT blocked and ignore it before they unblock it, so the parent alone is interrupted, and no
    worker prints a traceback. (The workers' import is made slow here, to send the signal inside it.)"""
    (tmp_path / "slow_start.py").write_text(
        "import os, time\n"
        "if os.environ.get('SLOW_START'):                   # set after the parent imported this: workers only\n"
        "    time.sleep(3)\n"
        "def make():\n"
        "    from diffusion.models import TransformerDenoiser\n"
        "    return TransformerDenoiser(L=4, dim=8, layers=1, heads=2)\n")
    script = tmp_path / "start_pool.py"
    script.write_text(
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal, whoever started us\n"
        f"sys.path[:0] = [{ROOT!r}, {str(tmp_path)!r}]\n"
        "import tinygrad_lite as tl\n"
        "from tinygrad_lite.parallel import ModelPool\n"
        "import os\n"
        "from slow_start import make\n"
        "os.environ['SLOW_START'] = '1'\n"
        "if __name__ == '__main__':                         # a spawned worker imports this file too\n"
        "    tl.manual_seed(0)\n"
        "    print('starting', flush=True)\n"
        "    try:\n"
        "        with ModelPool(make(), make, {}, workers=2):\n"
        "            print('started', flush=True)\n"
        "    except KeyboardInterrupt:\n"
        "        print('parent interrupted', flush=True)\n"
        "        sys.exit(130)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline().strip() == "starting"
    time.sleep(1.0)                                             # the workers are inside their slow import
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 130 and "parent interrupted" in stdout, (stdout, stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_ctrl_c_landing_in_another_thread_waits_for_the_end_of_the_start():
    """Blocking SIGINT in the main thread is not enough: the kernel gives a process-wide Ctrl-C to any thread
    that does not block it (BLAS keeps threads of its own), and Python then raises KeyboardInterrupt in the
    main thread anyway, which once fell between starting a worker and writing it its instructions (the worker
    printed 'EOFError: Ran out of input'). Inside the start, a Ctrl-C is noted and raised after it."""
    bystander_ready, stop = threading.Event(), threading.Event()
    bystander = threading.Thread(target=lambda: (bystander_ready.set(), stop.wait(10)), daemon=True)
    bystander.start()
    bystander_ready.wait()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with parallel._sigint_deferred():
                signal.pthread_kill(bystander.ident, signal.SIGINT)     # lands in the other thread
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:                   # Python code runs: the handler would fire
                    pass
                reached_the_end = True
    finally:
        signal.signal(signal.SIGINT, previous)
        stop.set()
    assert reached_the_end
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})       # a caller's own block is kept
    try:
        with parallel._sigint_deferred():
            pass
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
