"""diffusion/models.py: each denoiser trains a few steps and samples, and a training step of the default model
stays float32 end to end (no silent float64 upcast anywhere)."""
import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion.data import MASK, decode, encode
from diffusion.loss import diffusion_loss
from diffusion.models import MLPDenoiser, SkipMLPDenoiser, TransformerDenoiser
from diffusion.sampler import sample
from diffusion.schedule import CosineSchedule
from helpers import NAMES


@pytest.mark.parametrize("make", [lambda: MLPDenoiser(L=8, hidden=32), lambda: SkipMLPDenoiser(L=8, hidden=32),
                                  lambda: TransformerDenoiser(L=8, dim=16, layers=2, heads=2),
                                  lambda: TransformerDenoiser(L=8, dim=16, layers=1, heads=2, time_input=True)],
                         ids=["mlp", "skip_mlp", "transformer", "transformer_t"])
def test_each_denoiser_trains_a_few_steps_and_samples(make):
    tl.manual_seed(0)
    model = make()
    x = encode(NAMES, 8)
    opt = tl.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(30):
        loss, value = diffusion_loss(model, x, CosineSchedule(), rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(value)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])               # it learns something
    out = sample(model, 5, steps=4, seed=0)
    assert all(isinstance(decode(r), str) for r in out.tokens) and not (out.tokens == MASK).any()


def test_a_training_step_stays_float32():
    for make, objective in ((TransformerDenoiser, "exact_k"), (MLPDenoiser, "nelbo")):
        tl.manual_seed(0)
        model = make(L=8)
        opt = tl.optim.AdamW(model.parameters())
        x = encode(["emma", "olivia", "noah", "liam"], 8)
        loss, _ = diffusion_loss(model, x, CosineSchedule(), np.random.default_rng(0), objective)
        graph = loss._topological_order()                      # every activation of the step
        assert len(graph) > 10
        assert {t.dtype for t in graph} == {np.dtype(np.float32)}, \
            {t._op: t.dtype for t in graph if t.dtype != np.float32}
        loss.backward()
        opt.step()
        assert all(p.grad.dtype == np.float32 and p.data.dtype == np.float32 for p in model.parameters())
        assert all(b.dtype == np.float32 for bufs in opt.state.values() for b in bufs)
