"""diffusion/numpy_step.py, the bench's hand-written NumPy step, must do exactly the engine's work: same loss,
same gradients, same optimizer update. Float64 weights, so any difference beyond rounding is a real one."""
import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import Tensor, functional as F, optim
from diffusion import numpy_step
from diffusion.loss import corrupt
from diffusion.models import TransformerDenoiser
from diffusion.schedule import CosineSchedule

def float64_model(seed, **config):
    tl.manual_seed(seed)
    model = TransformerDenoiser(**config)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


@pytest.mark.parametrize("seed, config", [(0, dict(L=16, dim=32, layers=2, heads=4)),
                                          (1, dict(L=6, dim=24, layers=3, heads=2))])
def test_hand_written_step_has_the_engines_loss_and_gradients(seed, config):
    model = float64_model(seed, **config)
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 27, size=(10, config["L"]))
    xt, _, masked, row_weight = corrupt(model, x0, CosineSchedule(), rng, "exact_k")
    targets, weight = np.where(masked, x0, -100), row_weight[:, None] * masked
    loss = (F.cross_entropy(model(xt), targets, reduction="none") * Tensor(weight)).sum()
    loss.backward()
    got_loss, grads = numpy_step.loss_and_grads(model.state_dict(), xt, targets, weight, config["heads"])
    np.testing.assert_allclose(got_loss, loss.item(), rtol=1e-12)
    assert sorted(grads) == sorted(name for name, _ in model.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad, rtol=1e-9, atol=1e-12, err_msg=name)


def test_hand_written_adamw_is_the_engines_clip_and_adamw():
    model = float64_model(0, L=4, dim=8, layers=1, heads=2)
    weights = model.state_dict()
    opt, mine = optim.AdamW(model.parameters(), lr=0.01), numpy_step.AdamW(weights, lr=0.01)
    rng = np.random.default_rng(0)
    for scale, clipped in ((0.01, False), (10.0, True)):     # a step under the clipping norm, then one above
        grads = {name: scale * rng.standard_normal(p.shape) for name, p in model.named_parameters()}
        for name, p in model.named_parameters():
            p.grad = grads[name].copy()
        assert (optim.clip_grad_norm_(model.parameters(), 1.0) > 1.0) == clipped
        opt.step()
        mine.step(grads, max_norm=1.0)
        for name, p in model.named_parameters():
            np.testing.assert_allclose(weights[name], p.data, rtol=1e-12, atol=1e-15, err_msg=name)
