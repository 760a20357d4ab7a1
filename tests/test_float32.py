"""Float32 end to end: no silent float64 upcast anywhere in a training step of the default model."""
import numpy as np

import tinygrad_lite as tl
from diffusion.data import encode
from diffusion.loss import diffusion_loss
from diffusion.models import MLPDenoiser, TransformerDenoiser
from diffusion.schedule import CosineSchedule


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
