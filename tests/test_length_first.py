"""diffusion/length_first.py: the length distribution read off the model's PAD probabilities (the default
sampler against the length-first likelihood is tested in test_sampler.py)."""
import numpy as np

from diffusion.sampler import length_probs


def test_length_probs_keeps_every_length_possible():
    """P(len = n) are the differences of P(PAD at n) made monotone, plus a floor: a dip in the model's PAD
    probabilities must not make a length impossible (a real name of that length would get an infinite NLL)."""
    monotone = np.array([0.0, 0.1, 0.5, 0.9])
    np.testing.assert_allclose(length_probs(monotone, floor=0.0), [0.1, 0.4, 0.4, 0.1])
    dipping = np.array([0.0, 0.6, 0.3, 0.9])                 # P(PAD at 2) < P(PAD at 1): no length 2 without the floor
    assert length_probs(dipping, floor=0.0)[1] == 0.0
    assert np.all(length_probs(dipping) > 0)
