"""Generate names from a saved model: free, from a template, by editing a name; pick the sampler variant.

    python scripts/sample.py                                         # 20 names from runs/transformer.npz
    python scripts/sample.py --checkpoint runs/transformer.npz --num 20 --temperature 0.8 --steps 16
    python scripts/sample.py --checkpoint runs/transformer.npz --num 3 --show-steps
    python scripts/sample.py --checkpoint runs/transformer.npz --template "m__a"      # 4 letters, m..a
    python scripts/sample.py --checkpoint runs/transformer.npz --template "ma*" --length 5-7
    python scripts/sample.py --checkpoint runs/transformer.npz --edit emma --positions 1,2   # resample 'mm'
    python scripts/sample.py --checkpoint runs/transformer.npz --order margin --threshold 0.9 --show-steps
    python scripts/sample.py --checkpoint runs/transformer.npz --forward emma --times 0,0.3,0.6,1

Templates: a letter is kept, '_' is one generated letter, one '*' is any number (0 or more) of generated
letters ("ma*" prefix, "*ette" suffix, "a*a" both). Without '*' the template fixes the length; with '*' the
length is drawn from the model (or from --length N / --length MIN-MAX). Template letters never change.
--edit NAME --positions 1,2 re-masks those 0-based positions of NAME and resamples them (same length).
An AR checkpoint (scripts/train_ar.py, e.g. runs/ar.npz) samples left to right: of the options above it takes
--num, --temperature, --seed and a template that is a fixed prefix ("ma*"); the others are the masked sampler's.
Bad templates or flags: one line on stderr, exit code 2.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.autoregressive import is_autoregressive  # noqa: E402
from diffusion.cli import (DEFAULT_CHECKPOINT, OneLineParser, add_workers_flag, comma_list, fail,  # noqa: E402
                           load_checkpoint, model_pool, nonnegative_float, positive_float, positive_int,
                           script_main, worker_failed, workers)
from diffusion.data import decode  # noqa: E402
from diffusion.evaluation import sample_chunked  # noqa: E402
from tinygrad_lite.parallel import WorkerError  # noqa: E402
from diffusion.sampler import ORDERS, edit_template  # noqa: E402
from diffusion.schedule import SCHEDULES, get_schedule  # noqa: E402
from diffusion.visualize import forward_view, reverse_view  # noqa: E402


def length_arg(text):
    """'6' -> 6, '5-7' -> (5, 7)."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"{text!r} is not a length N or a range MIN-MAX")


def parser():
    p = OneLineParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="a .npz written by one of the trainers (default: scripts/train.py's)")
    p.add_argument("--num", type=positive_int, default=20, help="how many names (default 20)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="token softmax temperature, > 0 (default 1.0); for greedy use a small value like 0.01")
    p.add_argument("--steps", type=positive_int, default=None, help="unmasking steps, 1..L (default L)")
    p.add_argument("--seed", type=int, default=0)
    add_workers_flag(p, "worker processes drawing the names, in chunks of 128 (the same names for any number)")
    g = p.add_argument_group("length and constraints")
    g.add_argument("--length-mode", choices=("model", "joint"), default="model",
                   help="'model': draw the length first (default); 'joint': plain confidence order")
    g.add_argument("--length", type=length_arg, default=None, metavar="N|MIN-MAX",
                   help="name length, or a range of lengths")
    g.add_argument("--template", default=None, help="e.g. 'm__a', 'ma*', '*ette' (see below)")
    g.add_argument("--edit", default=None, metavar="NAME", help="a name to edit; needs --positions")
    g.add_argument("--positions", type=comma_list(int, "whole numbers"), default=None,
                   help="0-based positions of --edit to resample")
    g = p.add_argument_group("sampler variant")
    g.add_argument("--order", choices=ORDERS, default="max_prob",
                   help="which masked positions to reveal first (default max_prob)")
    g.add_argument("--choice-temperature", type=nonnegative_float, default=0.0,
                   help="MaskGIT Gumbel noise on the order, annealed to 0 (default 0: off)")
    g.add_argument("--threshold", type=positive_float, default=None,
                   help="also reveal every position whose top probability is >= this (parallel decoding)")
    g.add_argument("--remask", type=nonnegative_float, default=0.0,
                   help="ReMDM: probability a revealed token is re-masked each step, capped (default 0)")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample tokens among the k most likely")
    g.add_argument("--top-p", type=positive_float, default=1.0, help="nucleus sampling mass (default 1: off)")
    g = p.add_argument_group("pictures")
    g.add_argument("--show-steps", action="store_true", help="print each sample's unmasking step by step")
    g.add_argument("--forward", default=None, metavar="NAME", help="print the forward (noising) process of NAME "
                   "at --times and exit")
    g.add_argument("--times", type=comma_list(float, "numbers"), default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="for --forward")
    return p


def main():
    p = parser()
    args = p.parse_args()
    model, meta, _ = load_checkpoint(args.checkpoint)
    if is_autoregressive(model):
        return sample_left_to_right(model, args, p)
    if args.forward is not None:
        name = meta.get("extra", {}).get("train", {}).get("schedule", "cosine")
        try:
            print("\n".join(forward_view(args.forward, get_schedule(name if name in SCHEDULES else "cosine"),
                                         model.L, times=args.times, seed=args.seed)))
        except ValueError as e:
            fail(str(e))
        return
    template = args.template
    if args.positions is not None and args.edit is None:
        fail("--positions needs --edit NAME")
    if args.edit is not None:
        if template is not None:
            fail("use either --template or --edit, not both")
        if args.positions is None:
            fail("--edit needs --positions, e.g. --positions 1,2 (0-based)")
        try:
            template = edit_template(args.edit, args.positions)
        except ValueError as e:
            fail(str(e))
        print(f"editing {args.edit!r}: resampling template {template!r}", file=sys.stderr)
    length = args.length_mode if args.length is None else args.length
    if args.length is not None and args.length_mode == "joint":
        fail("--length fixes the length first; it does not combine with --length-mode joint")
    try:
        out = draw(model, args, steps=args.steps, temperature=args.temperature, length=length,
                   keep_trajectory=args.show_steps, template=template, order=args.order,
                   choice_temperature=args.choice_temperature, threshold=args.threshold, remask=args.remask,
                   top_k=args.top_k, top_p=args.top_p)
    except ValueError as e:
        fail(re.sub(r"\b(steps|temperature|choice_temperature|threshold|remask|top_k|top_p)\b",
                    lambda m: "--" + m.group(1).replace("_", "-"), str(e).removeprefix("sample: ")))
    if args.show_steps:
        print("\n".join(reverse_view(out, rows=args.num)))
    print("\n".join(decode(row) for row in out.tokens))
    if out.letter_after_pad:
        print(f"({out.letter_after_pad} of {args.num} samples had letters after a PAD; only the part before "
              f"the first PAD is printed)", file=sys.stderr)


def draw(model, args, **options):
    """args.num rows from either model with the sampler's `options`, in seeded chunks over --workers processes."""
    try:
        with model_pool(model, workers(args.workers), rows=args.num) as pool:
            return sample_chunked(model, args.num, args.seed, pool, **options)
    except WorkerError as e:
        if isinstance(e.__cause__, ValueError):          # a bad option, found by the sampler in a worker
            raise e.__cause__ from None
        worker_failed(e)


def sample_left_to_right(model, args, p):
    """An AR checkpoint: names left to right, continuing a fixed prefix if the template is one ("ma*")."""
    for flag in ("steps", "length_mode", "length", "edit", "positions", "order", "choice_temperature", "threshold",
                 "remask", "top_k", "top_p", "show_steps", "forward", "times"):
        if getattr(args, flag) != p.get_default(flag):
            fail(f"--{flag.replace('_', '-')} is an option of the masked sampler; {args.checkpoint} holds an AR "
                 f"model, which writes names left to right")
    prefix, star, rest = (args.template or "*").partition("*")
    if not star or rest or "_" in prefix:
        fail(f"an AR model writes left to right: it can follow a fixed prefix like 'ma*', not the template "
             f"{args.template!r}")
    try:
        out = draw(model, args, temperature=args.temperature, prefix=prefix)
    except ValueError as e:
        fail(str(e).removeprefix("sample_ar: "))
    print("\n".join(decode(row) for row in out.tokens))


if __name__ == "__main__":
    script_main(main)
