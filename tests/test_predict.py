"""diffusion/predict.py: running the network on each distinct row once."""
import numpy as np

from diffusion.models import TransformerDenoiser
from diffusion.predict import distinct_rows, predict_logits
from helpers import tiny_transformer


L = 6
MODEL = tiny_transformer(L)


def test_predict_logits_runs_each_distinct_row_once():
    """Duplicated rows give the same logits as running every row, and count once; with time input a row at
    two different times is two rows."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 28, (40, L))
    x[10:30] = x[5]                                          # 21 copies of one row
    logits, ran = predict_logits(MODEL, x, count=True)
    assert ran == len(np.unique(x, axis=0))
    np.testing.assert_allclose(logits, MODEL(x).data, rtol=1e-5, atol=1e-6)
    timed = TransformerDenoiser(L=L, dim=16, layers=1, heads=2, time_input=True)
    t = np.where(np.arange(40) < 20, 0.3, 0.7)
    logits, ran = predict_logits(timed, x, t, count=True)
    assert ran == len(np.unique(np.column_stack([x, t]), axis=0))
    np.testing.assert_allclose(logits, timed(x, t).data, rtol=1e-5, atol=1e-6)
    assert predict_logits(MODEL, x[:0]).shape == (0, L, 27)
    big = np.array([[0, 1], [65536, 1], [0, 1]])             # ids past int16 stay distinct (bytes of int64)
    assert [len(f) for f in distinct_rows(big)] == [2, 3] and list(distinct_rows(big)[1]) == [0, 1, 0]
