"""Bad input takes the clear error path; numerics stay finite; a non-finite loss stops training cleanly."""
import contextlib
import io

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import tinygrad_lite as tl
from tinygrad_lite import Tensor
from diffusion.cli import trainer_parser
from diffusion.data import encode
from diffusion.models import MLPDenoiser
from diffusion.trainer import TrainConfig, TrainingStopped, train


@given(flag=st.sampled_from(["--steps", "--batch-size", "--lr", "--L", "--warmup", "--weight-decay"]),
       value=st.text(max_size=8) | st.integers(-5, 5).map(str) | st.floats(allow_nan=True).map(str))
@example(flag="--lr", value="nan")
@example(flag="--lr", value="inf")
@example(flag="--steps", value="1e3")
def test_cli_values_parse_or_exit_2(flag, value):
    """Whatever the user types: either a valid, in-range value comes back, or argparse exits with code 2
    (after printing its one-line 'error: argument ...' message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = trainer_parser("test").parse_args([flag, value])
    except SystemExit as e:
        assert e.code == 2 and "error: argument" in err.getvalue()
        return
    parsed = getattr(args, flag[2:].replace("-", "_"))
    if flag in ("--steps", "--batch-size", "--L", "--lr"):
        assert parsed > 0
    else:
        assert parsed >= 0


def test_non_finite_loss_stops_naming_the_step():
    tl.manual_seed(0)
    model = MLPDenoiser(L=4, hidden=8)
    x = encode(["ab", "cd", "ef", "gh"], 4)
    saved = []

    def loss_fn(model, x0, rng):
        loss = model(x0, np.zeros(len(x0))).sum() * 0.0
        return (loss * float("nan") if len(saved) >= 2 else loss), 0.0
    with pytest.raises(TrainingStopped, match="step 3: .*not finite") as e:
        train(model, x, TrainConfig(steps=10, batch_size=2, log_every=100), loss_fn, log=lambda s: None,
              save=lambda step, opt: saved.append(step), save_every=1)
    assert saved == [1, 2] and not e.value.interrupted              # the last good checkpoint is step 2


@given(scale=st.sampled_from([1e4, -1e4]), seed=st.integers(0, 100))
def test_extreme_logits_give_finite_loss_and_gradient(scale, seed):
    logits = Tensor(np.random.default_rng(seed).standard_normal((3, 5, 27)).astype(np.float32) * scale,
                    requires_grad=True)
    loss = tl.functional.cross_entropy(logits, np.random.default_rng(seed).integers(0, 27, (3, 5)))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(logits.grad))


def test_engine_errors_name_op_and_shapes():
    a, b = Tensor(np.ones((3, 4))), Tensor(np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"matmul: \(3, 4\) @ \(5, 6\)"):
        a @ b
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(5, 6\)"):
        a + b
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(3, 4\) into \(5,\)"):
        a.reshape(5)
    with pytest.raises(ValueError, match=r"layer_norm: weight of shape \(1, 4\) must be \(4,\)"):
        tl.functional.layer_norm(a, (4,), Tensor(np.ones((1, 4))))
