"""Checkpoints as .npz (no pickle): weights, optimizer state (and the weights' moving average's, when training
keeps one, and mid-run the best validated weights so far), step, config (JSON) and RNG states.

Written atomically: to a temporary file in the same folder, then renamed over the target, so a crash while
saving leaves the previous checkpoint intact. The file gets the permissions the user's umask gives a new file.

`meta` holds the model's `config` (its "kind" says which model: "transformer", "ar_transformer", ...), the
training `step`, and `extra`: the training settings, RNG state, figures, under "data" the names file the model
was trained on (data.NamesData.record: its path, SHA-256, the split rule and L) and, mid-run, under "progress" the
run so far (trainer.train's: curves, time, validation state).
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .autoregressive import ARTransformer
from .models import MLPDenoiser, SkipMLPDenoiser, TransformerDenoiser

MODELS = {"mlp": MLPDenoiser, "skip_mlp": SkipMLPDenoiser, "transformer": TransformerDenoiser,
          "ar_transformer": ARTransformer}
DENOISERS, AR = ("transformer", "mlp", "skip_mlp"), ("ar_transformer",)      # the kinds a tool may ask for
NAMES = {"mlp": "an MLP denoiser", "skip_mlp": "a skip-MLP denoiser", "transformer": "a Transformer denoiser",
         "ar_transformer": "an AR Transformer"}                  # what each kind is called in messages


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why (missing, corrupt, wrong architecture)."""


def build_model(config):
    """Rebuild a denoiser (or the AR baseline) from its `config` dict, as a checkpoint stores it."""
    config = dict(config)
    kind = config.pop("kind")
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind](**config)


def _umask():
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path, model, optimizer=None, step=0, extra=None, ema=None, best=None):
    """Write model weights (+ optimizer state, step, JSON-able `extra`, the state of `ema`, an
    optim.ExponentialMovingAverage, and `best`, a mid-run copy of the best validated weights) to `path`
    atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    sections = dict(optim=None if optimizer is None else optimizer.state_dict(),
                    ema=None if ema is None else ema.state_dict(), best=best)
    for section, state in sections.items():
        if state is not None:
            arrays.update({f"{section}/{k}": v for k, v in state.items()})
    meta = dict(config=model.config, step=int(step), extra=extra or {})
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_meta(path):
    """Only the metadata of a checkpoint (no model is built): a dict, or CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def describe(meta):
    """"a Transformer denoiser ('transformer') at step 3000, trained on names.txt": what a checkpoint holds, for
    messages about a file in the way or of the wrong kind."""
    data = meta.get("extra", {}).get("data")
    where = f", trained on {os.path.basename(data['names'])}" if data else ""
    kind = meta["config"].get("kind", "?")
    return f"{NAMES.get(kind, repr(kind))} ('{kind}') at step {meta.get('step', '?')}{where}"


def load(path):
    """Read a checkpoint: returns (model, meta, training) where training = dict(optimizer=its state dict,
    ema=the moving average's, best=the best validated weights so far), each {} when the file has none. Raises
    CheckpointError, never a raw NumPy/zip traceback, for a missing, truncated, corrupt or mismatching file."""
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
    weights, optimizer, ema, best = ({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(section)}
                                     for section in ("model/", "optim/", "ema/", "best/"))
    weights, training = _without_key_bias(weights, model, dict(optimizer=optimizer, ema=ema, best=best))
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model, meta, training


def _without_key_bias(weights, model, training):
    """A checkpoint written before attention's key projection lost its bias (tinygrad_lite.nn.
    MultiHeadSelfAttention says why) still loads: that bias never changed an output, so dropping it keeps the
    model's predictions. Its training state is indexed by the old parameter list, so it is dropped too: such a
    checkpoint samples and evaluates but cannot be resumed. Returns (weights, training state)."""
    old = [k for k in weights if k.endswith("attn.key.bias") and k not in dict(model.named_parameters())]
    if not old:
        return weights, training
    return {k: v for k, v in weights.items() if k not in old}, dict(optimizer={}, ema={}, best={})
