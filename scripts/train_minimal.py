"""Train the smallest denoiser: a 2-layer MLP on [one-hot(xt), t] (the classic minimal script).

    python scripts/train_minimal.py          # train, print test NELBO, save runs/mlp.npz, print names
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.cli import run, script_main  # noqa: E402
from diffusion.models import MLPDenoiser  # noqa: E402


def make_model(args):
    return MLPDenoiser(L=args.L, hidden=512)


if __name__ == "__main__":
    script_main(lambda: run(__doc__.splitlines()[0], make_model, "mlp", steps=3000, batch_size=128, lr=3e-3,
                            out="runs/mlp.npz"))
