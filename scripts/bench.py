"""Benchmark the engine and the diffusion pipeline: medians over repeated runs in one process.

    python scripts/bench.py            # the full table (~2 min)
    python scripts/bench.py --quick    # fewer repeats and a short training run (smoke test)
    python scripts/bench.py --json bench.json

Rows: the training step (forward + backward + AdamW) of each denoiser at its default batch, and of the
Transformer at batch 256; the matmul floor (the step's own matmuls, shapes read off its graph, timed alone
in raw NumPy) and step / floor; the same step written by hand in NumPy (diffusion/numpy_step.py), which says what
the engine itself costs; the Transformer's step on all cores (the trainers' default --workers) in the same
rounds, and the ceiling of splitting its batch (N processes each timing a whole step on 1/N of the batch at
once, nothing shared); the default step with glibc's default allocator and with keep_freed_memory() (each
side in its own process: the setting is process-wide; the other rows run with it); the per-op engine
overhead; sampling 1,000 names (with the default model, --checkpoint, when it exists) in one process and on
all cores, and the GEMMs of its network calls alone; the held-out NELBO; the peak RSS of a default training
run, its workers included; and, only if PyTorch happens to be importable, the same Transformer step in PyTorch.
A second table breaks the Transformer step down op by op (a profiled run: the engine is patched to time it).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinygrad_lite as tl  # noqa: E402
from tinygrad_lite import Tensor, optim  # noqa: E402
from tinygrad_lite.malloc import keep_freed_memory  # noqa: E402
from tinygrad_lite.parallel import BLAS_THREADS_ENV, ModelPool  # noqa: E402
from diffusion import checkpoint  # noqa: E402
from diffusion.cli import DEFAULT_CHECKPOINT, workers  # noqa: E402
from diffusion.data import MASK, NamesData  # noqa: E402
from diffusion.evaluation import sample_chunked  # noqa: E402
from diffusion.likelihood import nelbo  # noqa: E402
from diffusion.loss import diffusion_loss, masked_loss, prepare  # noqa: E402
from diffusion.trainer import Objective, gradients, optimizer_step  # noqa: E402
from diffusion.predict import CHUNK  # noqa: E402
from diffusion.models import MLPDenoiser, SkipMLPDenoiser, TransformerDenoiser  # noqa: E402
from diffusion.schedule import CosineSchedule  # noqa: E402
from diffusion import numpy_step  # noqa: E402  (the same step written by hand in NumPy)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def interleaved_ms(fns, rounds, block=5):
    """Median ms of each fn in each round, the fns taking turns a block at a time: an array (rounds, len(fns)).

    This machine's speed drifts by tens of percent over a minute, so a ratio of two timings is only fair
    when both come from the same minute: the median over rounds of a per-round ratio is steady even when
    the absolute times are not. Each block starts with an untimed call, because switching libraries (NumPy's
    BLAS threads, PyTorch's OpenMP threads) costs the first call of a block."""
    times = np.zeros((rounds, len(fns)))
    for r in range(rounds):
        for i, fn in enumerate(fns):
            times[r, i] = median_ms(fn, block, warmup=1)
    return times


def training_step(model, x, objective, workers=1):
    """A closure running one full training step as the trainer runs it (trainer.optimizer_step: the noise, loss,
    backward, clip, AdamW), in this process (workers=1) or with the gradient from `workers` worker processes.
    Returns (step, grads); grads.close() stops the workers (a no-op for one process)."""
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3)
    rng = np.random.default_rng(0)
    schedule = CosineSchedule()
    loss = Objective(lambda m, x0, r: prepare(m, x0, schedule, r, objective), masked_loss)
    grads = gradients(model, loss, workers, keep_freed_memory)

    def step():
        optimizer_step(model, params, opt, loss, grads, x, rng, 1.0, 0)
    return step, grads


def default_step_ms(allocator, repeats, batch=64, start=None):
    """Median ms of the default training step (Transformer, `batch` rows) in this process, after choosing the
    allocator: "keep-freed" calls keep_freed_memory(), "default" leaves glibc's settings alone. start: a
    time.time() to wait for before timing, so that processes started together are timed together."""
    if allocator == "keep-freed":
        keep_freed_memory()
    data, rng = NamesData.load(), np.random.default_rng(0)
    tl.manual_seed(0)
    model = TransformerDenoiser()
    step = training_step(model, data.train[rng.integers(0, len(data.train), batch)], "exact_k")[0]
    step()
    while start is not None and time.time() < start:
        time.sleep(0.001)
    return median_ms(step, repeats)


def steps_together_ms(batch, processes, repeats, blas_threads=None):
    """Start `processes` processes, each timing the default step on `batch` rows (BLAS on `blas_threads`
    threads, or its default), all from the same moment: the slowest one's median ms."""
    env = dict(os.environ, **({name: str(blas_threads) for name in BLAS_THREADS_ENV} if blas_threads else {}))
    start = time.time() + 3.0                          # by then each child has loaded the data and the model
    children = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child-step", "keep-freed",
                                  "--child-repeats", str(repeats), "--child-batch", str(batch), "--child-start",
                                  str(start)], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    return max(float(child.communicate()[0].split()[-1]) for child in children)


def parallel_ceiling(batch, cores, rounds, repeats):
    """(rounds, 2) ms: the step on `batch` rows in one process, then `cores` processes each running a whole
    step (forward, backward, AdamW) on batch / cores rows with BLAS on one thread, all at once. That is data
    parallelism with nothing shared and nothing handed over: the most that splitting a batch can give here."""
    times = np.zeros((rounds, 2))
    for r in range(rounds):
        times[r] = steps_together_ms(batch, 1, repeats), steps_together_ms(batch // cores, cores, repeats, 1)
    return times


def allocator_effect(rounds, repeats):
    """(rounds, 2) ms: the default step with glibc's default allocator, then with keep_freed_memory(), each in a
    fresh process (mallopt is process-wide and cannot be undone), taking turns, in alternating order from round
    to round. The MALLOC_*_THRESHOLD_ environment variables are left out of the children's environment, so
    that the "default" side really is the default."""
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    times = np.zeros((rounds, 2))
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            allocator = ("default", "keep-freed")[i]
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-step", allocator,
                                   "--child-repeats", str(repeats)], check=True, capture_output=True, text=True,
                                  env=env)
            times[r, i] = float(done.stdout.split()[-1])
    return times


def _forward_gemms(node):
    """The (A.shape, B.shape) products C = A B a node's forward computes: plain matmuls and the fused ops."""
    shapes = [p.shape for p in node._parents]
    if node._op == "matmul":
        return [tuple(shapes[:2])]
    if node._op == "linear":                    # x (..., in) @ W^T (in, out), as one 2-D GEMM
        (*lead, n_in), (n_out, _) = shapes[0], shapes[1]
        return [((int(np.prod(lead)), n_in), (n_in, n_out))]
    if node._op == "attention":                 # S = q k^T, then out = P v
        q, k, v = shapes
        return [(q, k[:-2] + (k[-1], k[-2])), (np.broadcast_shapes(q[:-2], k[:-2]) + (q[-2], k[-2]), v)]
    return []


def gemm_shapes(output):
    """Every GEMM of the forward that computed `output`, read off its graph."""
    return [shape for n in output._topological_order() for shape in _forward_gemms(n)]


def matmul_shapes(model, x, objective):
    """Every GEMM of one training step's forward, read off the loss's graph before backward."""
    return gemm_shapes(diffusion_loss(model, x, CosineSchedule(), np.random.default_rng(0), objective)[0])


def matmul_floor(shapes, backward=True):
    """The same matmuls in raw NumPy: forward C = A B and (for a training step) backward A^T G, G B^T."""
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal(a).astype(np.float32), rng.standard_normal(b).astype(np.float32)) for a, b in shapes]

    def run():
        for a, b in arrays:
            c = a @ b
            if backward:
                c @ b.swapaxes(-1, -2)
                a.swapaxes(-1, -2) @ c
    return run


def sampling_floor_ms(model, network_rows, chunk=CHUNK):
    """The GEMMs alone of the denoiser calls a sampler made: rows go through the network `chunk` at a time
    (diffusion.predict.predict_logits), so the floor is the forward GEMMs of one chunk, timed alone, times
    the number of chunks' worth of rows the sampler sent (Samples.network_rows)."""
    x = np.full((chunk, model.L), MASK)
    shapes = gemm_shapes(model(x, np.ones(chunk) if model.time_input else None).sum())
    return median_ms(matmul_floor(shapes, backward=False), 10) * network_rows / chunk


def numpy_forward(model, network_rows, chunk=CHUNK):
    """A closure: the sampler's network calls (`network_rows` rows, `chunk` at a time) through the hand-written
    NumPy forward of diffusion/numpy_step.py instead of the engine, with no graph and no Tensor. Every chunk runs
    (a row costs the same whatever its tokens), so it can be timed in the same rounds as the sampler."""
    x, weights = np.full((chunk, model.L), MASK), model.state_dict()

    def run():
        for _ in range(-(-network_rows // chunk)):
            numpy_step.forward(weights, x, model.config["heads"])
    return run


def op_overhead_us(repeats):
    """Cost of one tiny op through the engine, forward + backward: the per-op Python overhead."""
    a = Tensor(np.ones((4, 4), np.float32), requires_grad=True)
    b = Tensor(np.ones((4, 4), np.float32), requires_grad=True)
    n = 100

    def run():
        out = a
        for _ in range(n):
            out = out * b + a
        out.sum().backward()
        a.grad = b.grad = None
    return 1000 * median_ms(run, repeats) / (2 * n)


def torch_step(batch):
    """The same Transformer step in PyTorch eager (same shapes, float32, same threads), if torch is importable."""
    try:
        import torch
    except ImportError:
        return None, None
    import torch.nn as nn
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, d=64, h=4):
            super().__init__()
            self.h, self.ln1, self.ln2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            B, L, D = x.shape
            y = self.ln1(x)
            q, k, v = (lin(y).view(B, L, self.h, D // self.h).transpose(1, 2) for lin in (self.q, self.k, self.v))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + self.o(a.transpose(1, 2).reshape(B, L, D))
            return x + self.proj(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    tok, pos = nn.Embedding(28, 64), nn.Embedding(16, 64)
    blocks, ln, head = nn.ModuleList([Block() for _ in range(4)]), nn.LayerNorm(64), nn.Linear(64, 27)
    params = [p for m in (tok, pos, blocks, ln, head) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randint(0, 28, (batch, 16))
    y = torch.randint(0, 27, (batch, 16))

    def step():
        h = tok(x) + pos(torch.arange(16))
        for b in blocks:
            h = b(h)
        loss = torch.nn.functional.cross_entropy(head(ln(h)).view(-1, 27), y.view(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def step_breakdown(model, x, objective, steps):
    """Where one training step's time goes: {op: [forward ms, backward ms, nodes]} per step, plus the optimizer
    and backward()'s own bookkeeping. A profiler, so it patches the engine for the duration: every node's
    backward closure is timed, and a node's forward is charged the time since the previous node was made
    (its own work plus the glue that prepared its inputs). Making the Tensor itself is in no row, so the
    total is a little below the step's time."""
    from tinygrad_lite import tensor as engine
    make, table, clock = engine.Tensor._make, {}, [0.0]
    saved = engine.Tensor.__dict__["_make"]            # the staticmethod itself, to put back as it was

    def timed_make(data, parents, op, backward):
        now = time.perf_counter()
        entry = table.setdefault(op, [0.0, 0.0, 0])
        entry[0] += now - clock[0]
        entry[2] += 1

        def timed_backward(g):
            t0 = time.perf_counter()
            grads = backward(g)
            entry[1] += time.perf_counter() - t0
            return grads
        out = make(data, parents, op, timed_backward)
        clock[0] = time.perf_counter()
        return out
    params = model.parameters()
    opt, rng, schedule = optim.AdamW(params, lr=1e-3), np.random.default_rng(0), CosineSchedule()
    extra = {"optimizer (clip + AdamW)": 0.0, "backward() bookkeeping": 0.0}
    engine.Tensor._make = staticmethod(timed_make)
    try:
        for i in range(steps + 3):                      # 3 warm-up steps, then reset the counters
            if i == 3:
                table.clear()
                extra = dict.fromkeys(extra, 0.0)
            clock[0] = time.perf_counter()
            loss, _ = diffusion_loss(model, x, schedule, rng, objective)
            opt.zero_grad()
            in_closures = sum(e[1] for e in table.values())
            t0 = time.perf_counter()
            loss.backward()
            t1 = time.perf_counter()
            extra["backward() bookkeeping"] += (t1 - t0) - (sum(e[1] for e in table.values()) - in_closures)
            optim.clip_grad_norm_(params, 1.0)
            opt.step()
            extra["optimizer (clip + AdamW)"] += time.perf_counter() - t1
    finally:
        engine.Tensor._make = saved
    out = {op: [1000 * f / steps, 1000 * b / steps, n // steps] for op, (f, b, n) in table.items()}
    out.update({name: [0.0, 1000 * v / steps, 0] for name, v in extra.items()})   # no node: shown as a total
    return out


def peak_rss_mb(steps):
    """Peak resident memory of `scripts/train.py` (default config, `steps` steps, its default --workers), run in
    its own process: (the main process's peak, the largest peak of its worker processes), in MB.

    Read as VmHWM from the child's /proc/self/status as it exits (its ru_maxrss would also count this larger
    parent's pages, which a forked child maps until it calls exec), and for its workers, spawned afresh, as
    getrusage(RUSAGE_CHILDREN).ru_maxrss: the largest of them, not their sum."""
    child = ("import os, resource, runpy, sys\n"
             "sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "finally:\n    if os.path.exists('/proc/self/status'):  # Linux; elsewhere the row shows '-'\n"
             "        print(open('/proc/self/status').read(), file=sys.stderr)\n"
             "        print('WorkersHWM:', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n")
    with tempfile.TemporaryDirectory() as folder:       # a fresh --out: a trainer will not overwrite a model
        done = subprocess.run([sys.executable, "-c", child, os.path.join(ROOT, "scripts", "train.py"), "--steps",
                               str(steps), "--out", os.path.join(folder, "bench_rss.npz"), "--num-samples", "1000",
                               "--log-every", str(steps)], check=True, capture_output=True, text=True)
    peaks = [[int(line.split()[1]) / 1024 for line in done.stderr.splitlines() if line.startswith(key)]
             for key in ("VmHWM:", "WorkersHWM:")]
    return tuple(found[0] if found else None for found in peaks)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repeats, short training run (smoke test)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="the trained model the sampling rows use (an untrained one if the file is not there)")
    p.add_argument("--child-step", choices=["default", "keep-freed"], help=argparse.SUPPRESS)
    p.add_argument("--child-repeats", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--child-batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--child-start", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_step:                                  # one side of allocator_effect, in its own process
        print(default_step_ms(args.child_step, args.child_repeats, args.child_batch, args.child_start))
        return
    keep_freed_memory()   # process-wide, so the program's choice: every row below runs with it, as the trainers do
    repeats = 5 if args.quick else 30
    data = NamesData.load()
    rng = np.random.default_rng(0)
    rows, figures = [], {}

    def row(name, value, unit, note=""):
        figures[name] = value
        digits = 2 if unit == "x" else 1                 # ratios: the second digit says which side of 1.0
        shown = "-" if value is None else (f"{value:,.{digits}f}" if isinstance(value, float) else str(value))
        rows.append((name, shown, unit, note))

    tl.manual_seed(0)
    models = [("MLP, batch 128", MLPDenoiser(), 128, "nelbo"), ("skip MLP, batch 128", SkipMLPDenoiser(), 128, "nelbo"),
              ("Transformer, batch 64", TransformerDenoiser(), 64, "exact_k"),
              ("Transformer, batch 256", TransformerDenoiser(), 256, "exact_k")]
    cores = workers(None)                                # as the trainers' default --workers
    for name, model, batch, objective in models:
        x = data.train[rng.integers(0, len(data.train), batch)]
        step, _ = training_step(model, x, objective)
        if name.startswith("MLP") or name.startswith("skip"):
            ms = median_ms(step, repeats)
            row(f"train step: {name}", ms, "ms", f"{batch * model.L / ms * 1000:,.0f} tokens/s")
            continue
        tl.manual_seed(0)                                  # a twin, so the two steps train the same weights
        all_cores, pool = training_step(TransformerDenoiser(), x, objective, cores)
        try:
            if batch == 256:
                times = interleaved_ms([step, all_cores], max(2, repeats // 3))
            else:  # the step, its matmuls alone, the hand-written NumPy step, all cores, and PyTorch's step if
                torch_fn, torch_label = torch_step(batch)  # there is one, measured in the same rounds
                fns = [step, matmul_floor(matmul_shapes(model, x, objective)),
                       numpy_step.training_step(model, x, objective), all_cores]
                times = interleaved_ms(fns + ([torch_fn] if torch_fn else []), max(2, repeats // 3))
        finally:
            pool.close()
        ms, last = float(np.median(times[:, 0])), times.shape[1] - 1
        ratio = lambda i, j: float(np.median(times[:, i] / times[:, j]))  # noqa: E731  per-round ratios
        row(f"train step: {name}", ms, "ms", f"{batch * model.L / ms * 1000:,.0f} tokens/s")
        cores_ms = float(np.median(times[:, 3 if batch == 64 else 1]))
        row(f"train step: {name}, all cores", cores_ms, "ms", f"{cores} worker processes (trainer --workers default)")
        ceiling = parallel_ceiling(batch, cores, 1 if args.quick else 3, repeats)
        if batch == 256:
            row("all cores / one process, batch 256", ratio(1, 0), "x", "target <= 0.6; median of per-round ratios")
        else:
            row("all cores / one process", ratio(3, 0), "x", "batch 64; target <= 0.72; median of per-round ratios")
        row(f"ceiling / one process, batch {batch}", float(np.median(ceiling[:, 1] / ceiling[:, 0])), "x",
            f"{cores} processes, each a whole step on {batch // cores} rows at once, nothing shared "
            f"({np.median(ceiling[:, 1]):.1f} vs {np.median(ceiling[:, 0]):.1f} ms, own processes)")
        if batch == 256:
            continue
        row("matmul floor: Transformer, batch 64", float(np.median(times[:, 1])), "ms",
            "the step's matmuls alone in NumPy")
        row("step / matmul floor", ratio(0, 1), "x", "one process; median of per-round ratios")
        row("hand-written NumPy step: Transformer, batch 64", float(np.median(times[:, 2])), "ms",
            "diffusion/numpy_step.py: the same arithmetic without the engine")
        row("ours / hand-written NumPy", ratio(0, 2), "x", "what the engine adds (one process)")
        row("hand-written NumPy / matmul floor", ratio(2, 1), "x", "plain NumPy, no engine")
        if torch_fn:
            row("PyTorch eager step: Transformer, batch 64", float(np.median(times[:, last])), "ms", torch_label)
            row("ours / PyTorch", ratio(0, last), "x", "one process; median of per-round ratios")
            row("ours, all cores / PyTorch", ratio(3, last), "x", "target <= 0.75; median of per-round ratios")
            row("hand-written NumPy / PyTorch", ratio(2, last), "x", "")
    times = allocator_effect(1 if args.quick else 3, repeats)
    row("train step: Transformer, batch 64, default malloc", float(np.median(times[:, 0])), "ms",
        "glibc's own thresholds; each side in a fresh process, alternating")
    row("train step: Transformer, batch 64, keep_freed_memory()", float(np.median(times[:, 1])), "ms",
        "tinygrad_lite.malloc, which bench and the trainers call")
    row("default malloc / keep_freed_memory()", float(np.median(times[:, 0] / times[:, 1])), "x",
        "median of per-round ratios")
    breakdown = step_breakdown(TransformerDenoiser(), data.train[:64], "exact_k", repeats)
    row("engine overhead per tiny op (fwd + bwd)", op_overhead_us(repeats), "us", "(4, 4) mul and add")
    trained = args.checkpoint
    model, which = ((checkpoint.load(trained)[0], f"the default model, {os.path.relpath(trained, ROOT)}")
                    if os.path.exists(trained) else (models[2][1].eval(), f"an untrained Transformer (no {trained})"))
    drawn = []
    ms = median_ms(lambda: drawn.append(sample_chunked(model, 1000, steps=16)), 1 if args.quick else 3, 1)
    out = drawn[-1]
    row("sample 1,000 names, S = 16", ms, "ms", f"{which}; in chunks of 128, one process; "
        f"{out.row_calls.mean():.1f} calls, {out.network_rows / len(out.tokens):.1f} rows through the network a name")
    floor = sampling_floor_ms(model, out.network_rows)
    row("sampling: matmul floor", floor, "ms",
        f"the forward GEMMs of those calls alone; sample / floor {ms / floor:.1f}")
    if model.config["kind"] == "transformer" and not model.time_input:   # the case numpy_step writes out
        times = interleaved_ms([lambda: sample_chunked(model, 1000, steps=16), numpy_forward(model, out.network_rows)],
                               1 if args.quick else 3, block=1)      # the ratio from the same rounds
        row("sampling: hand-written NumPy forward", float(np.median(times[:, 1])), "ms",
            f"the same rows through diffusion/numpy_step.py's forward; sample / this "
            f"{np.median(times[:, 0] / times[:, 1]):.2f} (same rounds)")
    with ModelPool(model, checkpoint.build_model, {"config": model.config}, cores, initializer=keep_freed_memory) as pool:
        times = interleaved_ms([lambda: sample_chunked(model, 1000, steps=16),
                                lambda: sample_chunked(model, 1000, steps=16, pool=pool)], 2 if args.quick else 5,
                               block=1)
    row("sample 1,000 names, S = 16, all cores", float(np.median(times[:, 1])), "ms",
        f"the same chunks on {cores} worker processes: the same names")
    row("sampling, all cores / one process", float(np.median(times[:, 1] / times[:, 0])), "x",
        "target <= 0.65; median of per-round ratios")
    t0 = time.perf_counter()
    ev = nelbo(model, data.test, seed=0)
    row("test-split NELBO (SE < 0.01)", time.perf_counter() - t0, "s", f"{ev['repeats']} repeats, SE {ev['se']:.4f}")
    main_mb, worker_mb = peak_rss_mb(50 if args.quick else 300)
    row("peak RSS, scripts/train.py", main_mb, "MB", "default config, the main process (flat after the first steps)")
    row("peak RSS, scripts/train.py, worker process", worker_mb, "MB", "the largest worker's peak")
    row("peak RSS, scripts/train.py, all processes", None if None in (main_mb, worker_mb) else main_mb + cores * worker_mb,
        "MB", f"at most: main + {cores} x the largest worker (each counts the shared weights again); target <= 300")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"NumPy {np.__version__}")
    width = max(len(r[0]) for r in rows)
    print(f"machine: {machine}")
    print(f"| {'measure'.ljust(width)} | value | unit | note |\n|{'-' * (width + 2)}|---:|---|---|")
    for name, shown, unit, note in rows:
        print(f"| {name.ljust(width)} | {shown} | {unit} | {note} |")
    print("\nWhere the Transformer's step goes (batch 64, one profiled run; each op's forward and backward):\n")
    print("| op | nodes | forward ms | backward ms | total ms | share |\n|---|---:|---:|---:|---:|---:|")
    total = sum(f + b for f, b, _ in breakdown.values())
    for op, (f, b, n) in sorted(breakdown.items(), key=lambda kv: -sum(kv[1][:2])):
        fwd_bwd = f"{n} | {f:.2f} | {b:.2f}" if n else "- | - | -"
        print(f"| {op} | {fwd_bwd} | {f + b:.2f} | {100 * (f + b) / total:.0f}% |")
    print(f"| all | | | | {total:.1f} | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine, figures=figures, rows=rows, breakdown=breakdown), f, indent=1)


if __name__ == "__main__":
    main()
