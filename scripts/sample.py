"""Generate names from a saved denoiser.

    python scripts/sample.py --checkpoint transformer.npz --num 20 --temperature 0.8 --steps 16
    python scripts/sample.py --checkpoint transformer.npz --num 3 --show-steps
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion import checkpoint  # noqa: E402
from diffusion.cli import fail, positive_float, positive_int  # noqa: E402
from diffusion.data import decode  # noqa: E402
from diffusion.sampler import sample  # noqa: E402
from diffusion.visualize import reverse_view  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .npz written by one of the trainers")
    p.add_argument("--num", type=positive_int, default=20, help="how many names")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="softmax temperature (> 0)")
    p.add_argument("--steps", type=positive_int, default=None, help="unmasking steps, 1..L (default L)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length", choices=("model", "joint"), default="model",
                   help="'model': draw the length first (default); 'joint': plain confidence order")
    p.add_argument("--show-steps", action="store_true", help="print each sample's unmasking step by step")
    args = p.parse_args()
    try:
        model, meta, _ = checkpoint.load(args.checkpoint)
    except checkpoint.CheckpointError as e:
        fail(str(e))
    steps = args.steps or model.L
    if steps > model.L:
        fail(f"--steps must be between 1 and L={model.L}, got {steps}")
    out = sample(model, args.num, steps=steps, temperature=args.temperature, seed=args.seed,
                 length=args.length, keep_trajectory=args.show_steps)
    if args.show_steps:
        print("\n".join(reverse_view(out, rows=args.num)))
    print("\n".join(decode(row) for row in out.tokens))
    if out.letter_after_pad:
        print(f"({out.letter_after_pad} of {args.num} samples had letters after a PAD; only the part before "
              f"the first PAD is printed)", file=sys.stderr)


if __name__ == "__main__":
    main()
