"""diffusion/checkpoint.py: round trip, corrupt and wrong-architecture files, a failed save that keeps the previous
checkpoint, and file permissions that follow the umask."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion import checkpoint
from diffusion.autoregressive import ARTransformer
from diffusion.models import SkipMLPDenoiser, TransformerDenoiser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_checkpoint_round_trip_and_errors(tmp_path):
    tl.manual_seed(0)
    model = TransformerDenoiser(L=8, dim=16, layers=1, heads=2)
    opt = tl.optim.AdamW(model.parameters())
    ema = tl.optim.ExponentialMovingAverage(model.parameters(), decay=0.9)
    ema.shadow[0] += 1.0                                      # the average differs from the weights
    path = str(tmp_path / "m.npz")
    checkpoint.save(path, model, opt, step=7, extra=dict(note="x"), ema=ema)
    loaded, meta, training = checkpoint.load(path)
    assert meta["step"] == 7 and meta["extra"]["note"] == "x" and loaded.config == model.config
    assert sorted(training["optimizer"]) == sorted(opt.state_dict())
    assert all(np.array_equal(v, training["ema"][k]) for k, v in ema.state_dict().items())
    checkpoint.save(path, model)                              # weights only: an empty training state
    assert checkpoint.load(path)[2] == dict(optimizer={}, ema={}, best={})
    checkpoint.save(path, model, opt, step=7, extra=dict(note="x"))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert np.array_equal(a, b) and a.dtype == b.dtype, name
    # corrupt, truncated, and wrong-architecture checkpoints give CheckpointError with a reason
    (tmp_path / "bad.npz").write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.load(str(tmp_path / "bad.npz"))
    other = SkipMLPDenoiser(L=8, hidden=8)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays["meta"] = np.array(json.dumps(dict(config=other.config, step=0, extra={})))
    np.savez(tmp_path / "wrong.npz", **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load(str(tmp_path / "wrong.npz"))


@pytest.mark.parametrize("Model", [TransformerDenoiser, ARTransformer])
def test_feed_forward_width_round_trips_and_a_config_without_it_means_four(tmp_path, Model):
    """mlp_ratio is part of the config a checkpoint rebuilds from; a checkpoint written before the setting existed
    (no mlp_ratio in its config, such as the shipped width-64 and width-128 models) held GPT-2's 4 x dim."""
    tl.manual_seed(0)
    lean = Model(L=8, dim=16, layers=1, heads=2, mlp_ratio=1)
    path = str(tmp_path / "lean.npz")
    checkpoint.save(path, lean)
    loaded = checkpoint.load(path)[0]
    assert loaded.config == lean.config and loaded.blocks[0].mlp.fc.weight.shape == (16, 16)
    old = Model(L=8, dim=16, layers=1, heads=2)
    arrays = {f"model/{k}": v for k, v in old.state_dict().items()}
    config = {k: v for k, v in old.config.items() if k != "mlp_ratio"}
    arrays["meta"] = np.array(json.dumps(dict(config=config, step=0, extra={})))
    np.savez(tmp_path / "old.npz", **arrays)
    loaded = checkpoint.load(str(tmp_path / "old.npz"))[0]
    assert loaded.blocks[0].mlp.fc.weight.shape == (64, 16)
    assert all(np.array_equal(a, b) for a, b in zip(old.state_dict().values(), loaded.state_dict().values()))


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    tl.manual_seed(0)
    model = TransformerDenoiser(L=8, dim=16, layers=1, heads=2)
    path = str(tmp_path / "m.npz")
    checkpoint.save(path, model, step=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, model, step=2)
    assert checkpoint.load(path)[1]["step"] == 1
    assert os.listdir(tmp_path) == ["m.npz"]                         # no temporary file left behind


def test_checkpoints_follow_the_umask(tmp_path):
    from diffusion.models import MLPDenoiser
    old = os.umask(0o022)
    try:
        checkpoint.save(str(tmp_path / "m.npz"), MLPDenoiser(L=4, hidden=4))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644


def test_a_checkpoint_from_before_the_key_bias_was_dropped_loads_and_predicts_the_same(tmp_path):
    """Attention's key projection had a bias; a checkpoint that holds one loads without it and predicts the same
    (a key bias shifts all of a query's scores alike, which softmax ignores), but its optimizer state, indexed by
    the old parameter list, is dropped: scripts refuse to resume it."""
    tl.manual_seed(0)
    old = TransformerDenoiser(L=8, dim=16, layers=2, heads=2)
    x = np.random.default_rng(0).integers(0, 28, size=(5, 8))
    with tl.no_grad():
        without = old(x).data
        for block in old.blocks:                                   # the old layout: a key bias, far from zero
            block.attn.key.bias = tl.nn.Parameter(np.random.default_rng(1).normal(size=16).astype(np.float32))
        assert np.abs(old.blocks[0].attn.key.bias.data).max() > 1
        with_bias = old(x).data
    np.testing.assert_allclose(with_bias, without, rtol=0, atol=1e-5)
    assert "blocks.0.attn.key.bias" in old.state_dict()
    path = str(tmp_path / "old.npz")
    checkpoint.save(path, old, tl.optim.AdamW(old.parameters()), step=3,
                    extra=dict(train=dict(steps=10), engine_rng=tl.random.get_state()))
    loaded, meta, training = checkpoint.load(path)
    assert "blocks.0.attn.key.bias" not in loaded.state_dict() and training == dict(optimizer={}, ema={}, best={})
    with tl.no_grad():
        np.testing.assert_allclose(loaded(x).data, with_bias, rtol=0, atol=1e-5)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--resume", path],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot be resumed" in r.stderr, r.stderr
