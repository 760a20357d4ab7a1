"""Train a 3-layer MLP denoiser with a residual skip, and show both processes on names: the forward process
noising a name at several t, and the reverse process unmasking new names step by step.

    python scripts/train_pure.py             # train, print test NELBO, save runs/skip_mlp.npz, print names
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.cli import run, script_main  # noqa: E402
from diffusion.models import SkipMLPDenoiser  # noqa: E402
from diffusion.sampler import sample  # noqa: E402
from diffusion.schedule import get_schedule  # noqa: E402
from diffusion.visualize import forward_view, reverse_view  # noqa: E402


def make_model(args):
    return SkipMLPDenoiser(L=args.L, hidden=512)


def main():
    model, data, args = run(__doc__.splitlines()[0], make_model, "skip_mlp", steps=3000, batch_size=128, lr=3e-3,
                            out="runs/skip_mlp.npz")
    schedule = get_schedule(args.schedule)
    print("\nforward process q(xt | x0) on a test name ('_' = MASK, '.' = PAD):")
    print("\n".join(forward_view(data.report.names[0], schedule, model.L, seed=args.seed)))
    print(f"\nreverse process: {model.L} steps from all MASK, T=1.0")
    print("\n".join(reverse_view(sample(model, 3, temperature=1.0, seed=args.seed, keep_trajectory=True))))


if __name__ == "__main__":
    script_main(main)
