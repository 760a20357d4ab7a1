"""diffusion/checkpoint.py: round trip, corrupt and wrong-architecture files, a failed save that keeps the previous
checkpoint, and file permissions that follow the umask."""
import json
import os
import stat

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion import checkpoint
from diffusion.models import SkipMLPDenoiser, TransformerDenoiser


def test_checkpoint_round_trip_and_errors(tmp_path):
    tl.manual_seed(0)
    model = TransformerDenoiser(L=8, dim=16, layers=1, heads=2)
    opt = tl.optim.AdamW(model.parameters())
    path = str(tmp_path / "m.npz")
    checkpoint.save(path, model, opt, step=7, extra=dict(note="x"))
    loaded, meta, opt_state = checkpoint.load(path)
    assert meta["step"] == 7 and meta["extra"]["note"] == "x" and loaded.config == model.config
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
