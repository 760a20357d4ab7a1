"""Fixed chunks of rows, each with its own seed, run in this process or spread over worker processes
(tinygrad_lite.parallel.ModelPool): how sampling and evaluation give the same names and figures for any
number of workers.

One random stream drawn through all the rows in order can only be drawn by one process. Cut the rows into
chunks of CHUNK_ROWS instead and give chunk c its own generator, seeded (seed, c): each chunk is then the same
computation wherever it runs, so chunk c of 1,000 names is the same 128 names in this process, on worker 0 of
2 or on worker 5 of 8. The results depend on CHUNK_ROWS, never on the worker count. (Workers run BLAS on one
thread each. In this process NumPy's BLAS may use several, which rounds a matrix product differently, so
figures computed here agree with a pool's to float32 rounding only: the scripts compute the figures they
report on a pool, even of one worker.)

    with ModelPool(model, build_model, {"config": model.config}, workers=2) as pool:    # or pool = None
        names = generate(model, 1000, seed=0, pool=pool)                               # evaluation.py
"""
CHUNK_ROWS = 128      # rows per chunk: batches big enough for NumPy, and 1,000 names still make 8 chunks


def chunk_bounds(n, size=CHUNK_ROWS):
    """[(start, stop), ...] cutting range(n) into consecutive chunks of `size` rows (the last one shorter)."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def run(model, fn, jobs, pool=None):
    """[fn(model, job) for job in jobs], in this process (pool None) or on the pool's workers, each job on a
    worker's replica of `model`. fn must be defined at module level: a worker imports it by name."""
    if pool is None:
        return [fn(model, job) for job in jobs]
    return pool.map(fn, jobs)
