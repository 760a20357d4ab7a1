"""Running a trained network on many rows: each distinct row once, a chunk at a time, no graph.

Shared by the sampler, the likelihood evaluations and the AR baseline's sampler.
"""
import numpy as np

from tinygrad_lite import no_grad


def distinct_rows(xt, t=None):
    """(first, inverse): indices of one row of each distinct (xt row, t) pair, and for every row the index of
    its pair in `first`, so xt[first][inverse] == xt. Rows are compared as the raw bytes of their int64 tokens
    and float64 time (one sort)."""
    n = len(xt)
    key = np.ascontiguousarray(xt, dtype=np.int64).reshape(n, -1).view(np.uint8)
    if t is not None:
        key = np.concatenate([key, np.ascontiguousarray(t, np.float64).reshape(n, 1).view(np.uint8)], axis=1)
    key = np.ascontiguousarray(key).view(np.dtype((np.void, key.shape[1])))[:, 0]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


CHUNK = 128   # rows a network call takes at a time (why: see predict_logits); pass chunk= to change it


@no_grad()
def predict_logits(model, xt, t=None, chunk=CHUNK, count=False):
    """model(xt, t) (or model(xt) when t is None) for many rows as a float64 array (N, L, V), recording no graph.

    The model is treated as a function of its input, so identical rows run once (in eval mode; in train mode
    with dropout, copies of a row would share one dropout draw). A sampler's rows often coincide: every row
    of length n starts as the same MASK/PAD pattern, and many then share their first letters. Distinct rows
    go `chunk` at a time: the arrays of 128 rows (2,048 tokens) stay closer to the cache, so a row costs less
    than in bigger calls, and peak memory does not grow with N.
    count=True also returns the number of rows the network ran on."""
    first, inverse = distinct_rows(xt, t) if len(xt) else (np.arange(0), np.arange(0))
    xu, tu = xt[first], None if t is None else np.asarray(t)[first]
    out = [(model(xu[i:i + chunk]) if tu is None else model(xu[i:i + chunk], tu[i:i + chunk])).data
           for i in range(0, max(len(xu), 1), chunk)]                  # one call even for 0 rows
    logits = np.concatenate(out).astype(np.float64)[inverse]
    return (logits, len(xu)) if count else logits
