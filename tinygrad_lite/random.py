"""One seeded random generator for the engine (initializers, dropout), as torch.manual_seed."""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the engine's generator: the same seed gives the same initial weights and dropout masks."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator():
    return _generator


def get_state():
    """The generator's state as a plain dict (for checkpoints); set_state(get_state()) restores it exactly."""
    return _generator.bit_generator.state


def set_state(state):
    _generator.bit_generator.state = state
