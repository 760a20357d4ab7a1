"""Data parallelism on one machine: N worker processes share one copy of the weights (as PyTorch's
torch.nn.parallel.DistributedDataParallel, built from the standard library like torch.multiprocessing).
ModelPool is the processes and the shared weights, with map(fn, items) to spread work that needs no gradient
(sampling, evaluation); DistributedDataParallel is a ModelPool with a training step:

    ddp = DistributedDataParallel(model, make_model, model_kwargs, loss_fn, workers=2)
    with ddp:
        for step in ...:
            opt.zero_grad()
            loss, figure = ddp.backward(x_rows, y_rows, denominator=D)   # fills every p.grad of `model`
            opt.step()                                                # the ordinary optimizer, unchanged

Why processes: NumPy runs its elementwise kernels on one core, and Python threads share one interpreter lock,
so the other cores of a laptop idle during a training step. Processes share neither. Each worker is started
with the "spawn" method (a fresh interpreter: no copy of the parent's threads or locks, the same on Linux,
macOS and Windows) and with OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1 in its environment from
the moment it starts, so its BLAS runs one thread and N workers use N cores instead of fighting over them.
(The variables are set in os.environ only while the workers start: a spawned child's environment is copied
at that moment, before its first import, and the parent's own BLAS, already loaded, is left alone.)

The design, step by step:
  * One shared-memory segment (multiprocessing.shared_memory) holds the weights, flattened into one array
    of P numbers, followed by a (N, P) array of gradients, one row per worker.
  * The parent's `model` keeps working as before, but each of its parameters' `.data` becomes a view into
    the shared weights (its values are copied in first). The optimizer updates `p.data` in place, so its
    step writes straight into shared memory, and the workers see the new weights at the next step without
    a copy through a pipe. (If something rebinds a `p.data` to a new array, backward() copies it into the
    shared array and points `p.data` back at it.)
  * Each worker rebuilds the same model from a picklable recipe, `make_model(**model_kwargs)` (a function
    defined at module level, e.g. diffusion.checkpoint.build_model with the model's `config`), then points
    its parameters at the same shared weights. Its own initial weights are thrown away.
  * backward(*rows, **shared) splits every row array (first axis = the batch) into N contiguous shards,
    sends shard r and the `shared` values through a pipe to worker r, which runs loss_fn on it, calls
    backward and writes its gradients into row r of the gradient array. The parent then adds the rows in
    the fixed order 0, 1, ..., N-1 (the all-reduce), so for a given N the result is the same bits on every
    run, and sets each `p.grad`. The optimizer step runs in the parent only: one update of one copy.
  * The pipes carry only the inputs and a few numbers back; the weights and gradients never go through
    them. The parent waits on the pipes and on each worker's process sentinel together, so a worker that
    dies or raises stops the parent within a moment with a WorkerError naming it — never a hang.
  * Workers ignore Ctrl-C (SIGINT reaches the whole process group): the parent decides. close(), which
    `with` calls however the block ends (an exception, KeyboardInterrupt), stops the workers (SIGTERM, then
    SIGKILL if they do not exit), gives the parent's parameters back their own memory, and unlinks the
    segment, so nothing is left in /dev/shm. A worker whose parent dies sees its pipe close and exits.

Why the sum of the shard gradients is the batch gradient. A batch loss is a weighted mean,
loss = (1/D) sum_rows c_row, where D is a number of the whole batch (the characters in it, or the masked
positions). The gradient is linear, so grad loss = sum over shards s of grad[(1/D) sum_{rows in s} c_row]:
each shard's term is its sum of costs divided by the *batch's* D. A shard that divided by its own D_s
(its own mean) would be off by D_s / D, and the sum would be wrong. Hence the contract for loss_fn: it
returns the shard's share, (1/D) * (sum of the shard's costs), with D handed in by the parent, computed
from the whole batch (the `shared` keyword arguments of backward reach every worker unchanged):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, y, w = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=3)
    >>> def grad(X, y, D):                    # gradient of sum((X w - y)^2) / D with respect to w
    ...     return 2 * X.T @ (X @ w - y) / D
    >>> batch = grad(X, y, D=6)               # the mean over all 6 rows
    >>> bool(np.allclose(batch, grad(X[:4], y[:4], D=6) + grad(X[4:], y[4:], D=6)))   # the batch's D
    True
    >>> bool(np.allclose(batch, grad(X[:4], y[:4], D=4) + grad(X[4:], y[4:], D=2)))   # each shard's own
    False

The sum is the batch gradient up to rounding: float addition is not associative, so N shards add the same
terms in a different order than one process does (about 1e-7 relative in float32). Losses and predictions
agree to that level. Adam divides each gradient by its own running size, so a parameter whose gradient is
zero in exact arithmetic, leaving only rounding, would be moved by that rounding, differently for each N: an
attention key's bias was one (softmax ignores a shift shared by all keys), which is why nn's attention has
none. For a given N everything is bit-identical from run to run.

Dropout draws its masks inside the network from the engine's generator (tinygrad_lite.random). Each worker
reseeds its own generator every step from (a seed the parent draws from its engine generator, the worker's
rank), so runs are repeatable for a given N and a resumed run that restored the engine generator repeats
the rest; but the masks depend on how the batch is split: with dropout > 0, results depend on N. That is the
one thing that does (the default models have dropout 0).

workers=1 is allowed: one worker does all the work. A trainer with one process does not use this module;
sampling and evaluation use a pool of one so that their figures are computed exactly as with more workers
(a worker runs BLAS on one thread, the parent may run it on several, and that rounds products differently).
"""
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from multiprocessing import shared_memory

import numpy as np

from . import random as _random

BLAS_THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def available_cores():
    """The CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                          # macOS, Windows
        return os.cpu_count() or 1


class WorkerError(RuntimeError):
    """A worker died or raised. str(error) is one line naming the worker and what happened; `worker` is its
    rank, `pid` its process id, `worker_traceback` the worker's traceback text when it raised (else None)."""

    def __init__(self, message, worker=None, pid=None, worker_traceback=None):
        super().__init__(message)
        self.worker, self.pid, self.worker_traceback = worker, pid, worker_traceback


@contextlib.contextmanager
def _environment(values):
    """Set environment variables for the duration of the block, then restore the previous values."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _sigint_deferred():
    """Hold back Ctrl-C for the duration of the block: it takes effect at the end of it (POSIX).

    Two things, for two audiences. SIGINT is blocked in this thread, and a process started inside the block
    inherits that mask, so a Ctrl-C reaching a new worker before it can ignore it stays pending. And the
    Python handler is swapped for one that only takes note: blocking in one thread is not enough for this
    process, since the kernel hands a process-wide SIGINT to any thread that does not block it (BLAS runs
    threads of its own), and Python then raises KeyboardInterrupt in the main thread all the same, say
    between starting a worker and writing it its instructions. The noted Ctrl-C is raised again after."""
    noted, previous = [], signal.getsignal(signal.SIGINT)
    swap = previous is not None and threading.current_thread() is threading.main_thread()
    if swap:                  # (None: a handler set outside Python, left alone; other threads get no Ctrl-C)
        signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    masking = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masking else None
    try:
        yield
    finally:
        if masking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # as it was (a caller may have blocked it too)
        if swap:
            signal.signal(signal.SIGINT, previous)
            for _ in noted[:2]:                                # now handled as they would have been (a second
                signal.raise_signal(signal.SIGINT)             # Ctrl-C means "stop now" to the trainer)


def _layout(params):
    """(shapes, offsets, total size) of the parameters laid end to end in one flat array."""
    shapes = [p.shape for p in params]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    return shapes, offsets, offsets[-1]


def _segment_arrays(shm, dtype, P, workers):
    """The two arrays in the segment: the weights (P,) and the gradients (workers, P)."""
    weights = np.ndarray((P,), dtype=dtype, buffer=shm.buf)
    grads = np.ndarray((workers, P), dtype=dtype, buffer=shm.buf, offset=P * dtype.itemsize)
    return weights, grads


def _describe_exit(proc):
    """'was killed by signal SIGKILL' / 'exited with code 1' for a finished process."""
    code = proc.exitcode
    if code is None:
        return "closed its pipe but is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _one_line(error):
    """'ValueError: the message' on one line, for the parent's one-line WorkerError."""
    return " ".join(f"{type(error).__name__}: {error}".split())


# ----------------------------------------------------------------------------- the worker side
def _worker_main(rank, conn, shm_name, dtype, shapes, offsets, workers, make_model, model_kwargs, loss_fn,
                 initializer):
    """A worker's whole life: attach, rebuild the model on the shared weights, then serve steps until told
    to stop or until the parent's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # Ctrl-C is the parent's to handle; it was blocked
    if hasattr(signal, "pthread_sigmask"):                 # since the start (see _start), and is now dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        if initializer is not None:
            initializer()
        shm = shared_memory.SharedMemory(name=shm_name)
        dtype = np.dtype(dtype)
        P = offsets[-1]
        weights, grads = _segment_arrays(shm, dtype, P, workers)
        model = make_model(**model_kwargs)
        params = model.parameters()
        got = [(tuple(p.shape), str(p.dtype)) for p in params]
        want = [(tuple(s), str(dtype)) for s in shapes]
        if got != want:
            raise ValueError(f"make_model built a model whose parameters differ from the parent's: "
                             f"{len(got)} parameters {got[:3]}... against {len(want)} {want[:3]}...")
        for p, start, end, shape in zip(params, offsets, offsets[1:], shapes):
            p.data = weights[start:end].reshape(shape)      # a view: the parent's updates show up here
        conn.send(("ready",))
    except BaseException as e:                           # noqa: BLE001 (reported to the parent, then exit)
        conn.send(("error", _one_line(e), traceback.format_exc()))
        return
    my_grads = grads[rank]
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):                         # the parent is gone
            return
        if message[0] == "stop":
            return
        if message[0] == "map":
            _, training, fn, item = message
            try:
                model.train(training)
                conn.send(("done", fn(model, item)))
            except Exception as e:                          # noqa: BLE001 (the parent raises it again)
                try:
                    conn.send(("raised", e, traceback.format_exc()))
                except Exception:                           # noqa: BLE001 (an exception that does not pickle)
                    conn.send(("error", _one_line(e), traceback.format_exc()))
            continue
        _, training, seed, rows, shared = message
        try:
            _random.manual_seed([seed, rank])                # this step's dropout stream (see the docstring)
            model.train(training)
            for p in params:
                p.grad = None
            loss, figure = loss_fn(model, *rows, **shared)
            loss.backward()
            has_grad = []
            for p, start, end in zip(params, offsets, offsets[1:]):
                has_grad.append(p.grad is not None)
                my_grads[start:end] = 0 if p.grad is None else p.grad.reshape(-1)
                p.grad = None                               # free it now rather than at the next step
            conn.send(("done", loss.item(), float(figure), has_grad))
        except Exception as e:                              # noqa: BLE001 (the parent raises it)
            conn.send(("error", _one_line(e), traceback.format_exc()))


# ----------------------------------------------------------------------------- the parent side
def _shutdown(processes, connections, shm, graceful):
    """Stop the workers and remove the segment. A module-level function (not a method) so that
    weakref.finalize can call it at exit for a DistributedDataParallel that was never closed."""
    try:
        if graceful:
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
            deadline = time.monotonic() + 2.0
            for proc in processes:
                proc.join(max(0.0, deadline - time.monotonic()))
        for proc in processes:
            if proc.is_alive():
                proc.terminate()                            # SIGTERM: a worker keeps no state worth saving
        for proc in processes:
            proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in connections:
            conn.close()
    finally:
        # unlink first: it removes the name from /dev/shm even while views into the memory still exist
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
        with contextlib.suppress(BufferError):             # an array still viewing it: freed with that array
            shm.close()


def _check_picklable(what, **values):
    for name, value in values.items():
        try:
            pickle.dumps(value)
        except Exception as e:                              # noqa: BLE001 (a lambda, a nested function, ...)
            raise TypeError(f"{what}: {name} must be picklable (a function defined at module level, plain "
                            f"values): {e}") from None


class ModelPool:
    """N worker processes, each holding a replica of `model` whose weights are the parent's, in shared memory.
    map(fn, items) runs fn(replica, item) for each item in the workers; DistributedDataParallel adds the
    training step. (Module docstring: the design.)

    model: the parent's model; its parameters (all of one floating dtype) move into shared memory, where the
        parent keeps using and updating them as before.
    make_model, model_kwargs: make_model(**model_kwargs) builds the same architecture in a worker; both must
        pickle (a module-level function and plain values), since a spawned worker starts from nothing.
    workers: processes to start (>= 1). timeout: seconds to wait for the workers at start and for each answer
        before raising WorkerError (None: no limit; a worker that dies or raises is noticed at once anyway).
    initializer: called with no arguments first thing in each worker (as multiprocessing.Pool's), e.g.
        tinygrad_lite.malloc.keep_freed_memory when the program chose it for itself: a process-wide
        setting, so each worker has to make the choice again.

    Use it as a context manager (or call close()): leaving the block, however it is left, stops the workers
    and removes the shared memory, and the parent's parameters keep their current values in their own memory.
    """

    _loss_fn = None                                         # DistributedDataParallel's
    _kind = "model-pool"                                    # how WorkerError names a worker

    def __init__(self, model, make_model, model_kwargs, workers=2, timeout=None, initializer=None):
        what = type(self).__name__
        if int(workers) != workers or workers < 1:
            raise ValueError(f"{what}: workers must be a whole number >= 1, got {workers}")
        _check_picklable(what, make_model=make_model, model_kwargs=model_kwargs, initializer=initializer)
        self.model, self.workers, self.timeout = model, int(workers), timeout
        self.params = model.parameters()
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1 or not np.issubdtype(next(iter(dtypes)), np.floating):
            raise TypeError(f"{what}: the parameters must share one floating dtype, got {dtypes}")
        self.dtype = np.dtype(next(iter(dtypes)))
        self.shapes, self.offsets, P = _layout(self.params)
        self._closed = True                                 # until the segment exists
        size = max(1, (1 + self.workers) * P * self.dtype.itemsize)     # the weights, then a gradient per worker
        with _sigint_deferred():        # a Ctrl-C inside SharedMemory() would leave the segment it just made
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self.shm_name = self._shm.name
            self._processes, self._connections, self._views = [], [], []
            # registered before any worker starts, so even an interrupted start cleans up at interpreter exit
            self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._connections, self._shm, False)
            self._closed = False
        try:
            self._weights, self._grads = _segment_arrays(self._shm, self.dtype, P, self.workers)
            for p, start, end, shape in zip(self.params, self.offsets, self.offsets[1:], self.shapes):
                view = self._weights[start:end].reshape(shape)
                view[...] = p.data
                p.data = view                              # the parent's weights now live in the segment
                self._views.append(view)
            self._start(make_model, model_kwargs, initializer)
        except BaseException:                               # incl. KeyboardInterrupt while workers start
            self.close(graceful=False)
            raise

    def _start(self, make_model, model_kwargs, initializer):
        context = multiprocessing.get_context("spawn")
        # copied into each child as it starts: the environment, and SIGINT blocked, so that a Ctrl-C while a
        # worker is still importing stays pending until it ignores it (as multiprocessing's resource tracker)
        with _environment(BLAS_THREADS_ENV), _sigint_deferred():
            for rank in range(self.workers):
                parent_end, child_end = context.Pipe()
                proc = context.Process(
                    target=_worker_main, name=f"model-worker-{rank}", daemon=True,
                    args=(rank, child_end, self.shm_name, self.dtype.str, self.shapes, self.offsets,
                          self.workers, make_model, model_kwargs, self._loss_fn, initializer))
                proc.start()
                child_end.close()                           # so the parent sees EOF when the child dies
                self._processes.append(proc)
                self._connections.append(parent_end)
        self._gather("start")

    @property
    def pids(self):
        """The workers' process ids, by rank."""
        return [proc.pid for proc in self._processes]

    # ------------------------------------------------------------------ work
    def map(self, fn, items):
        """[fn(replica, item) for item in items], computed in the workers: each item goes to whichever worker
        is free (so the results cannot depend on the worker count unless fn reads it). fn(model, item) must
        pickle, as must the items and the results. Returns the results in the order of `items`. An exception
        fn raises, or a worker that dies, raises WorkerError with one line naming the worker and what happened
        (the pool is closed first); the worker's exception itself is the WorkerError's __cause__ when it
        pickles, as with multiprocessing.Pool.map."""
        self._check_open("map")
        _check_picklable(f"{type(self).__name__}.map", fn=fn)
        self._sync_parameters()
        items = list(items)
        results, busy = [None] * len(items), {}             # busy: rank -> the index of the item it holds
        todo = iter(range(len(items)))

        def feed(rank):
            index = next(todo, None)
            if index is not None:
                self._send(rank, ("map", self.model.training, fn, items[index]))
                busy[rank] = index
        try:
            for rank in range(self.workers):
                feed(rank)
            deadline = self._deadline()
            while busy:
                for rank, answer in self._receive(set(busy), "map", deadline).items():
                    if answer[0] == "raised":
                        raise self._fail(rank, f"raised during the map: {_one_line(answer[1])}",
                                         answer[2]) from answer[1]
                    results[busy.pop(rank)] = answer[1]
                    feed(rank)
                    deadline = self._deadline()
        except BaseException:          # e.g. Ctrl-C: the workers are mid-item, their answers would be stale
            self.close(graceful=False)
            raise
        return results

    def _check_open(self, what):
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}: {what}() after close()")

    def _send(self, rank, message):
        try:
            self._connections[rank].send(message)
        except OSError:                                     # its end of the pipe is gone: it died
            self._processes[rank].join(1.0)
            raise self._fail(rank, _describe_exit(self._processes[rank])) from None

    def _sync_parameters(self):
        """Make sure every p.data is still its view of the shared weights (an out-of-place update, or
        `p.data = ...`, would have silently cut it off)."""
        for i, (p, view) in enumerate(zip(self.params, self._views)):
            if p.data is not view:
                if p.data.shape != view.shape:
                    raise ValueError(f"{type(self).__name__}: parameter {i} changed shape from {view.shape} "
                                     f"to {p.data.shape}")
                view[...] = p.data
                p.data = view

    def _deadline(self):
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _gather(self, what):
        """Wait for one answer from every worker. Returns the answers by rank; raises WorkerError (after
        closing) on a death, an error or the timeout."""
        answers, pending, deadline = [None] * self.workers, set(range(self.workers)), self._deadline()
        while pending:
            for rank, answer in self._receive(pending, what, deadline).items():
                answers[rank] = answer
                pending.discard(rank)
        return answers

    def _receive(self, pending, what, deadline):
        """Wait a moment for answers from the workers in `pending`, watching their pipes and their process
        sentinels together: {rank: answer} of those that answered (maybe none). Raises WorkerError (after
        closing) on a death, an error or a passed deadline."""
        waiting = [self._connections[r] for r in pending] + [self._processes[r].sentinel for r in pending]
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        # short slices: a Ctrl-C that lands in another thread still raises here promptly
        ready = multiprocessing.connection.wait(waiting, 0.25 if left is None else min(left, 0.25))
        if not ready:
            if deadline is not None and time.monotonic() >= deadline:
                late = sorted(pending)
                others = f" (nor did worker(s) {', '.join(map(str, late[1:]))})" if len(late) > 1 else ""
                raise self._fail(late[0], f"did not answer the {what} within {self.timeout} s{others}")
            return {}
        answers = {}
        for rank in sorted(pending):
            conn, proc = self._connections[rank], self._processes[rank]
            if conn in ready or proc.sentinel in ready:
                try:
                    answer = conn.recv() if conn.poll() else None   # a last word before dying counts
                except (EOFError, OSError):
                    answer = None
                except Exception as e:                      # noqa: BLE001 (an answer that does not unpickle)
                    raise self._fail(rank, f"sent an answer that cannot be read here: {_one_line(e)}") from None
                if answer is None:
                    proc.join(1.0)
                    raise self._fail(rank, f"{_describe_exit(proc)} during the {what}")
                if answer[0] == "error":
                    raise self._fail(rank, f"raised during the {what}: {answer[1]}", answer[2])
                answers[rank] = answer
        return answers

    def _fail(self, rank, what, worker_traceback=None):
        """Close everything, then return the WorkerError to raise."""
        pid = self._processes[rank].pid
        self.close(graceful=False)
        return WorkerError(f"{self._kind} worker {rank} (pid {pid}) {what}", rank, pid, worker_traceback)

    # ------------------------------------------------------------------ shutdown
    def close(self, graceful=True):
        """Stop the workers and remove the shared memory; the parent's parameters get their own copies of
        the current weights. Safe to call twice; `with` calls it."""
        if self._closed:
            return
        self._closed = True
        try:
            for p, view in zip(self.params, self._views):
                if p.data is view:
                    p.data = view.copy()                    # the current weights, in the parent's own memory
        finally:
            self._views = self._weights = self._grads = None    # drop our views so the segment can close
            self._finalizer.detach()
            _shutdown(self._processes, self._connections, self._shm, graceful)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(graceful=exc_type is None)
        return False


class DistributedDataParallel(ModelPool):
    """Train `model` with N worker processes sharing its weights (module docstring: the design): a ModelPool
    whose backward(*rows, **shared) computes the gradient of a batch, a shard per worker, into the parent's
    `.grad`s; the parent's optimizer, built on model.parameters() as usual, then updates the shared weights.

    loss_fn(model, *rows, **shared) -> (loss Tensor, figure float): the loss of a shard of the batch, a
        scalar whose sum over the shards is the batch's loss: per-row costs divided by a denominator of the
        whole batch, passed in `shared`, never by the shard's own (module docstring). `figure` (a number to
        log, in the same additive form) is summed the same way. Must pickle, like make_model.
    The other arguments are ModelPool's.
    """

    _kind = "data-parallel"

    def __init__(self, model, make_model, model_kwargs, loss_fn, workers=2, timeout=None, initializer=None):
        _check_picklable(type(self).__name__, loss_fn=loss_fn)
        self._loss_fn = loss_fn
        super().__init__(model, make_model, model_kwargs, workers, timeout, initializer)

    def backward(self, *rows, **shared):
        """Gradient of the batch's loss into `.grad` of every parameter of the parent's model (accumulated
        as Tensor.backward does: call optimizer.zero_grad() first). Returns (loss, figure) of the batch: the
        sums over the shards, in rank order.

        rows: arrays with the batch on the first axis (B, ...), all with the same B >= workers; worker r gets
        rows[i][start_r:end_r] of each, a contiguous shard (sizes differ by at most one). None is passed
        through as None. shared: keyword values every worker gets unchanged (the batch's denominators)."""
        self._check_open("backward")
        sizes = {len(r) for r in rows if r is not None}
        if len(sizes) != 1:
            raise ValueError(f"DistributedDataParallel.backward: the row arrays must have one common length "
                             f"(the batch), got lengths {sorted(sizes) or 'none'}")
        B = sizes.pop()
        if B < self.workers:
            raise ValueError(f"DistributedDataParallel.backward: a batch of {B} rows cannot feed {self.workers} "
                             f"workers")
        self._sync_parameters()
        bounds = [B * r // self.workers for r in range(self.workers + 1)]
        seed = int(_random.generator().integers(2 ** 63))  # the workers' dropout seed for this step
        for rank in range(self.workers):
            shard = tuple(None if r is None else r[bounds[rank]:bounds[rank + 1]] for r in rows)
            self._send(rank, ("step", self.model.training, seed, shard, shared))
        try:
            answers = self._gather("step")
        except BaseException:          # e.g. Ctrl-C: the workers are mid-step, their answers would be stale
            self.close(graceful=False)
            raise
        # the all-reduce: rows added in the fixed order 0, 1, ..., N-1, so a given N always gives the same bits
        total = self._grads[0].copy()
        for rank in range(1, self.workers):
            total += self._grads[rank]
        has_grad = np.any([answer[3] for answer in answers], axis=0)
        for p, start, end, shape, has in zip(self.params, self.offsets, self.offsets[1:], self.shapes, has_grad):
            if has:                                         # never-used parameters keep grad None, as in one process
                g = total[start:end].reshape(shape)
                p.grad = g if p.grad is None else p.grad + g
        loss = figure = 0.0
        for answer in answers:
            loss, figure = loss + answer[1], figure + answer[2]
        return loss, figure
