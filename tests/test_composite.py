"""End-to-end gradchecks of whole layers and small models, in float64, w.r.t. inputs AND parameters.

Single ops are checked in test_gradcheck_ops.py; here the point is that they compose: parameters shared
across positions, residual paths, reshapes into heads, masks. gradcheck's tolerances are its defaults.
"""
import contextlib

import numpy as np
import pytest

from tinygrad_lite import Tensor, gradcheck, nn
from tinygrad_lite import functional as F

F64 = np.float64


# ---------------------------------------------------------------------------------------------- helpers
def _set_by_name(module, name, value):
    """Set the attribute that named_parameters() calls `name`, e.g. 'blocks.0.attn.proj.weight'."""
    *path, last = name.split(".")
    obj = module
    for part in path:
        obj = obj[int(part)] if isinstance(obj, list) else getattr(obj, part)
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        setattr(obj, last, value)


@contextlib.contextmanager
def parameters_replaced(module, tensors):
    """Run `module` with `tensors` standing in for its Parameters (in named_parameters() order), so that
    gradients flow into gradcheck's tensors; the original Parameters are put back afterwards."""
    named = list(module.named_parameters())
    assert len(named) == len(tensors)
    for (name, p), t in zip(named, tensors):
        assert p.shape == t.shape, name
        _set_by_name(module, name, t)
    try:
        yield
    finally:
        for name, p in named:
            _set_by_name(module, name, p)


def gradcheck_module(module, forward, inputs):
    """gradcheck of forward(*inputs) w.r.t. the inputs and every parameter of `module`."""
    params = [p.data for p in module.parameters()]
    n = len(inputs)

    def fn(*tensors):
        with parameters_replaced(module, tensors[n:]):
            return forward(*tensors[:n])
    return gradcheck(fn, list(inputs) + params)


def randomize(module, rng, scale=0.5):
    """Random weights everywhere (LayerNorm starts at weight 1, bias 0: too special a point to test at)."""
    for p in module.parameters():
        p.data[...] = rng.normal(scale=scale, size=p.shape)
    return module


class Stack(nn.Module):
    """A list of blocks: exercises the 'blocks.0....' parameter names through the helper above."""

    def __init__(self, blocks):
        self.blocks = blocks

    def forward(self, x, key_padding_mask=None):
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x


SEEDS = [0, 1]


def test_parameters_replaced_restores_the_module():
    layer = nn.Linear(2, 3, dtype=F64)
    originals = layer.parameters()
    with parameters_replaced(layer, [Tensor(np.zeros((3, 2))), Tensor(np.zeros(3))]):
        assert layer(Tensor(np.ones((1, 2)))).data.sum() == 0   # the stand-ins are really used
    assert all(a is b for a, b in zip(layer.parameters(), originals))


# ---------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("seed", SEEDS)
def test_linear_softmax_cross_entropy(seed):
    rng = np.random.default_rng(seed)
    head = randomize(nn.Linear(4, 5, dtype=F64), rng)
    x = rng.normal(size=(2, 3, 4))
    targets = rng.integers(0, 5, size=(2, 3))
    targets[0, 1] = -100  # an ignored position in the middle
    gradcheck_module(head, lambda t: F.cross_entropy(head(t), targets), [x])

    # the same loss spelled out: softmax, log, pick the target (a mean over counted positions)
    onehot = np.eye(5)[np.where(targets == -100, 0, targets)] * (targets != -100)[..., None]

    def composed(t):
        return -(F.softmax(head(t), -1).log() * onehot).sum() * (1.0 / (targets != -100).sum())
    gradcheck_module(head, composed, [x])
    np.testing.assert_allclose(composed(Tensor(x)).item(), F.cross_entropy(head(Tensor(x)), targets).item(),
                               rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_norm_module(seed):
    rng = np.random.default_rng(seed)
    ln = randomize(nn.LayerNorm(4, dtype=F64), rng)
    gradcheck_module(ln, ln, [rng.normal(size=(2, 3, 4))])


@pytest.mark.parametrize("seed", SEEDS)
def test_rms_norm_module(seed):
    rng = np.random.default_rng(seed)
    norm = randomize(nn.RMSNorm(4, dtype=F64), rng)
    gradcheck_module(norm, norm, [rng.normal(size=(2, 3, 4))])


# ---------------------------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("seed", SEEDS)
def test_two_layer_relu_mlp(seed):
    rng = np.random.default_rng(seed)

    class MLP(nn.Module):
        def __init__(self):
            self.fc1, self.fc2 = nn.Linear(3, 5, dtype=F64), nn.Linear(5, 2, dtype=F64)

        def forward(self, x):
            return self.fc2(self.fc1(x).relu())

    mlp = randomize(MLP(), rng)
    x = rng.normal(size=(4, 3))
    # relu is not differentiable at 0: make sure no pre-activation is within reach of the finite difference
    assert np.abs(mlp.fc1(Tensor(x)).data).min() > 1e-3
    gradcheck_module(mlp, mlp, [x])


# ---------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_self_attention(seed, causal):
    rng = np.random.default_rng(seed)
    attn = randomize(nn.MultiHeadSelfAttention(4, num_heads=2, causal=causal, dtype=F64), rng)
    gradcheck_module(attn, attn, [rng.normal(size=(2, 3, 4))])


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_head_self_attention_with_key_padding_mask(seed):
    rng = np.random.default_rng(seed)
    attn = randomize(nn.MultiHeadSelfAttention(4, num_heads=2, dtype=F64), rng)
    pad = np.array([[False, False, True], [False, False, False]])  # the last key of sequence 0 is padding
    x = rng.normal(size=(2, 3, 4))
    gradcheck_module(attn, lambda t: attn(t, key_padding_mask=pad), [x])

    # padding is invisible: the real positions' outputs do not depend on the padded position at all
    t = Tensor(x, requires_grad=True)
    out = attn(t, key_padding_mask=pad)
    out[0, :2].sum().backward()
    np.testing.assert_array_equal(t.grad[0, 2], 0)
    assert np.abs(t.grad[0, :2]).min() > 0


# ---------------------------------------------------------------------------------------------- transformer
@pytest.mark.parametrize("seed", SEEDS)
def test_transformer_block(seed):
    rng = np.random.default_rng(seed)
    block = randomize(nn.TransformerBlock(4, num_heads=2, mlp_ratio=2, dtype=F64), rng)
    gradcheck_module(block, block, [rng.normal(size=(2, 3, 4))])


def test_stack_of_two_transformer_blocks_with_padding():
    rng = np.random.default_rng(0)
    model = randomize(Stack([nn.TransformerBlock(4, num_heads=2, mlp_ratio=2, dtype=F64) for _ in range(2)]), rng)
    assert list(dict(model.named_parameters()))[:2] == ["blocks.0.ln1.weight", "blocks.0.ln1.bias"]
    pad = np.array([[False, False, False], [False, True, True]])
    gradcheck_module(model, lambda t: model(t, key_padding_mask=pad), [rng.normal(size=(2, 3, 4))])
