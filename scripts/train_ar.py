"""Train the autoregressive baseline: a 4-layer causal Transformer (width 64, 4 heads) on names, next-token.

    python scripts/train_ar.py                       # train, print test NLL, save runs/ar.npz, print names
    python scripts/train_ar.py --dropout 0.1 --weight-decay 0.1 --eval-every 250 --patience 4 --steps 6000
    python scripts/train_ar.py --help

Same flags as the other trainers (--objective and --schedule do not apply here); --eval-every scores the
validation split and keeps the best weights, --patience stops early.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.autoregressive import ARTransformer  # noqa: E402
from diffusion.cli import run, script_main  # noqa: E402


def make_model(args):
    return ARTransformer(L=args.L, dim=args.dim, layers=args.layers, heads=args.heads, dropout=args.dropout,
                         mlp_ratio=args.mlp_ratio)


if __name__ == "__main__":
    script_main(lambda: run(__doc__.splitlines()[0], make_model, "ar_transformer", steps=2000, batch_size=128,
                            lr=3e-3, ema=0.999, dim=64, layers=4, heads=4, mlp_ratio=4, dropout=0.0,
                            out="runs/ar.npz"))
