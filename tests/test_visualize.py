"""diffusion/visualize.py: the text picture of the forward process, and its input checks (the reverse-process
picture is checked with the sampler's variants in test_sampler.py)."""
import pytest

from diffusion.schedule import CosineSchedule
from diffusion.visualize import forward_view


L = 6


def test_forward_view_validates():
    lines = forward_view("ab", CosineSchedule(), L, times=(0.0, 1.0))
    assert lines[0].endswith("ab....") and lines[1].endswith("______")
    for bad in ("Ab", "abcdefg", "a b"):
        with pytest.raises(ValueError):
            forward_view(bad, CosineSchedule(), L)
