"""Checkpoints as .npz (no pickle): weights, optimizer state, step, config (JSON) and RNG states.

Written atomically: to a temporary file in the same folder, then renamed over the target, so a crash while
saving leaves the previous checkpoint intact.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .models import build_model


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why (missing, corrupt, wrong architecture)."""


def save(path, model, optimizer=None, step=0, extra=None):
    """Write model weights (+ optimizer state, step, JSON-able `extra`) to `path` atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    meta = dict(config=model.config, step=int(step), extra=extra or {})
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path):
    """Read a checkpoint: returns (model, meta, optimizer_state dict). Raises CheckpointError, never a raw
    NumPy/zip traceback, for a missing, truncated, corrupt or mismatching file."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a checkpoint (an .npz is a zip archive; this file is not, or is truncated)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        config = meta["config"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    try:
        model = build_model(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the model from its config {config}: {e}") from None
    weights = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    optim_state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return model, meta, optim_state
