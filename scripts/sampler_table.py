"""Quality vs steps for each sampler variant: novel %, unique %, length TV, bigram KL, generative NLL.

    python scripts/sampler_table.py                                  # runs/transformer.npz, no generative NLL
    python scripts/sampler_table.py --judge runs/judge.npz --ar-checkpoint runs/ar.npz --json runs/sampler_table.json
    python scripts/sampler_table.py --checkpoint runs/transformer.npz --variants max_prob,random --steps 4,16

Each cell draws --num names (same seed for every variant) at temperature --temperature with S steps.
Generative NLL (nats/char under an independent judge, an AR model trained with another seed: scripts/judge.py
says why) needs --judge; the table then also shows the test names and, with --ar-checkpoint, the AR model's
samples as references. 'calls' is the mean number
of denoiser calls per name (the length draw included; with a threshold it adapts to the name). With max_prob at
S = L and temperature 1 it also prints those samples' NLL under the sampler's own exact distribution: an estimate
of that distribution's entropy, below which no judge's expected NLL of the samples can fall. The names (novelty,
length TV, the test names' row) are those of the file the checkpoint records.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion import checkpoint  # noqa: E402
from diffusion.cli import (DEFAULT_CHECKPOINT, OneLineParser, add_workers_flag, check_json, check_judge,  # noqa: E402
                           comma_list, fail, load_checkpoint, load_data, model_pool, positive_float, positive_int,
                           recorded_names, save_json, script_main, worker_errors, workers)
from diffusion.data import decode  # noqa: E402
from diffusion.evaluation import own_nll, sample_chunked  # noqa: E402
from diffusion.metrics import sample_report  # noqa: E402

# name -> (sample() options, what it is)
VARIANTS = {
    "max_prob": (dict(), "default: length first, most probable position first (MaskGIT order)"),
    "margin": (dict(order="margin"), "top-1 minus top-2 probability first"),
    "entropy": (dict(order="entropy"), "lowest-entropy position first"),
    "random": (dict(order="random"), "random order (MDLM ancestral), length first"),
    "maskgit": (dict(choice_temperature=1.0), "max_prob + Gumbel choice noise, tau 1.0 annealed to 0"),
    "threshold": (dict(threshold=0.9), "schedule + every position with p1 >= 0.9 (adaptive calls)"),
    "remask": (dict(remask=0.05), "max_prob + ReMDM re-masking, eta 0.05 (capped)"),
    "top_p_0.9": (dict(top_p=0.9), "max_prob, tokens from the 0.9 nucleus"),
    "top_p_0.8": (dict(top_p=0.8), "max_prob, tokens from the 0.8 nucleus"),
    "joint": (dict(length="joint"), "plain confidence order, no length step (PAD-first bias)"),
    "joint_random": (dict(length="joint", order="random"), "random order, no length step (plain MDLM)"),
}


def own_distribution(model, data, tokens, pool=None):
    """The default sampler at S = L and T = 1 draws exactly the model that the length-first ordered likelihood
    scores: its samples' NLL under that model (tokens: those samples) estimates the model's entropy H(q), a floor
    under their expected NLL under any other model, the judge included (evaluation.own_nll). Returned beside the
    test names' NLL under q."""
    own, test = (own_nll(model, x, pool) for x in (tokens, data.test))
    print(f"\nmax_prob at S = {model.L}: its samples' NLL under its own distribution (an estimate of that "
          f"distribution's entropy) {own:.3f} nats/char; the test names' {test:.3f}")
    return dict(samples=own, test=test)


def main():
    p = OneLineParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the diffusion denoiser (.npz)")
    p.add_argument("--judge", default=None, help="an AR model (.npz, scripts/train_ar.py --seed 1) scoring the samples")
    p.add_argument("--ar-checkpoint", default=None, help="an AR model whose samples make a reference row")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--num", type=positive_int, default=1000, help="names per cell (default 1000)")
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--steps", type=comma_list(int, "steps >= 1", low=1), default=[2, 4, 8, 16],
                   help="comma-separated S values")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--names", default=None, help="names file (default: the one the checkpoint records)")
    add_workers_flag(p)
    args = p.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        fail(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.json:
        check_json(args.json)
    if args.ar_checkpoint and not args.judge:
        fail("--ar-checkpoint makes a row of generative NLL: it needs --judge, an AR model trained with another seed")
    model, meta, _ = load_checkpoint(args.checkpoint, checkpoint.DENOISERS,
                                     "the sampler table (an AR model goes in --judge or --ar-checkpoint)")
    ar, ar_meta, _ = load_checkpoint(args.ar_checkpoint, checkpoint.AR, "--ar-checkpoint") if args.ar_checkpoint \
        else (None, None, None)
    judge = None
    if args.judge:
        judge, judge_meta, _ = load_checkpoint(args.judge, checkpoint.AR, "--judge")
        for path, judged in [(args.checkpoint, meta), (args.ar_checkpoint, ar_meta)]:
            if path:
                check_judge(args.judge, judge_meta, path, judged)
    if max(args.steps) > model.L:
        fail(f"--steps must be at most L={model.L}, got {max(args.steps)}")
    args.names = recorded_names(args.checkpoint, meta, args.names)
    data = load_data(args, L=model.L)
    test_names = [decode(r) for r in data.test]
    rows = []
    header = (f"{'variant':<13}{'S':>3}  {'novel%':>6} {'unique%':>7} {'len TV':>6} {'bigramKL':>8}"
              + (f" {'genNLL':>6}" if judge is not None else "") + f" {'calls':>5} {'sec':>5}")

    def show(row):
        print(f"{row['variant']:<13}{row['steps'] if row['steps'] is not None else '-':>3}  "
              f"{100 * row['novel']:6.1f} {100 * row['unique']:7.1f} {row['length_tv']:6.3f} {row['bigram_kl']:8.4f}"
              + (f" {row['generative_nll']:6.3f}" if judge is not None else "")
              + f" {row['calls']:5.1f} {row['seconds']:5.1f}", flush=True)

    print(f"{args.num} names per cell, temperature {args.temperature}, seed {args.seed}; {args.checkpoint}"
          + (f"; judge {args.judge}" if judge is not None else ""))
    print(header)
    if ar is not None:
        t0 = time.perf_counter()
        with worker_errors(), model_pool(ar, workers(args.workers), rows=args.num) as pool:
            out = sample_chunked(ar, args.num, args.seed, pool, temperature=args.temperature)
        names = [decode(r) for r in out.tokens]
        rows.append(dict(variant="AR samples", steps=None, calls=float(out.network_calls),
                         seconds=time.perf_counter() - t0, examples=names[:10],
                         **sample_report(names, data.train_names, test_names, judge)))
        show(rows[-1])
    if judge is not None:
        rows.append(dict(variant="test names", steps=None, calls=0.0, seconds=0.0, examples=test_names[:10],
                         **sample_report(test_names, data.train_names, test_names, judge)))
        show(rows[-1])
    with worker_errors(), model_pool(model, workers(args.workers), rows=args.num) as pool:
        default_tokens = variant_rows(model, args, variants, data, judge, rows, show, pool)
        print("\nvariants:\n" + "\n".join(f"  {v:<13}{VARIANTS[v][1]}" for v in variants))
        own = own_distribution(model, data, default_tokens, pool) if default_tokens is not None else None
    if args.json:
        written = save_json(args.json, dict(checkpoint=args.checkpoint, judge=args.judge,
                                            ar_checkpoint=args.ar_checkpoint, L=model.L,
                                            num=args.num, temperature=args.temperature, seed=args.seed, rows=rows,
                                            own_distribution=own))
        print(f"wrote {written}")


def variant_rows(model, args, variants, data, judge, rows, show, pool):
    """Append (and show) a row per variant and S; returns the default sampler's tokens at S = L, T = 1 (or None)."""
    test_names = [decode(r) for r in data.test]
    default_tokens = None
    for variant in variants:
        options, _ = VARIANTS[variant]
        for steps in args.steps:
            t0 = time.perf_counter()
            out = sample_chunked(model, args.num, args.seed, pool, steps=steps, temperature=args.temperature,
                                 **options)
            seconds = time.perf_counter() - t0
            if variant == "max_prob" and steps == model.L and args.temperature == 1.0:
                default_tokens = out.tokens                  # the default sampler drawing one token a step
            names = [decode(r) for r in out.tokens]
            rows.append(dict(variant=variant, about=VARIANTS[variant][1], steps=steps, options=options,
                             calls=float(out.row_calls.mean()),
                             batch_calls=out.network_calls, seconds=seconds, remasked=out.remasked,
                             letter_after_pad=out.letter_after_pad, examples=names[:10],
                             **sample_report(names, data.train_names, test_names, judge)))
            show(rows[-1])
    return default_tokens


if __name__ == "__main__":
    script_main(main)
