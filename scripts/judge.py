"""Score models' samples with an independent judge: an AR model trained with another seed.

    python scripts/judge.py --judge models/judge.npz models/diffusion.npz models/ar.npz
    python scripts/judge.py --judge runs/judge.npz runs/transformer.npz runs/ar.npz --json runs/judge.json

Each checkpoint draws --num names with its default sampler at T = 1 (a denoiser: length first, then the most
probable position, S = L, one token a step; the AR model: left to right). A row gives:
  judge NLL   the samples' nats/char under the judge (generative NLL): low when they look like data to it;
  novel NLL   the judge NLL of the novel samples only (those not among the training names): the judge was
              trained on the same names, so it scores a copied training name lower than a real name it never
              saw, and a model that copies is flattered by its judge NLL;
  own NLL     their nats/char under the distribution they were drawn from (evaluation.own_nll), an estimate
              of its entropy. Gibbs' inequality: the expected judge NLL is at least the entropy, so the gap
              judge - own is the room the judge sees between the model and itself; a model scoring its own
              samples sees none, which is why the judge is never one of the models it judges;
  novel, unique, length TV   against the training names, among the samples, to the test names' lengths.
The last rows are the test names and the training names themselves, under the judge (the gap between them is the
judge's own memory of its training names; a test name is never a training name, so the novel NLL compares
with the first). Every model must be trained on the judge's names
file and L (it records them).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion import checkpoint  # noqa: E402
from diffusion.cli import (OneLineParser, add_workers_flag, check_json, check_judge, load_checkpoint,  # noqa: E402
                           load_data, model_pool, positive_int, recorded_names, save_json, script_main,
                           worker_errors, workers)
from diffusion.data import decode  # noqa: E402
from diffusion.evaluation import markdown_table, own_nll, sample_chunked  # noqa: E402
from diffusion.metrics import generative_nll, sample_report  # noqa: E402


def judged_row(label, model, judge, data, num, seed, pool):
    """Draw `num` names from `model` at T = 1 with its default sampler and score them."""
    out = sample_chunked(model, num, seed, pool)
    names = [decode(r) for r in out.tokens]
    report = sample_report(names, data.train_names, [decode(r) for r in data.test], judge)
    return dict(model=label, config=model.config, judge_nll=report.pop("generative_nll"),
                novel_judge_nll=report.pop("novel_generative_nll"), own_nll=own_nll(model, out.tokens, pool),
                examples=names[:12], **report)


def table(rows, test_nll, train_nll):
    cells = [[f"`{r['model']}`", f"{r['judge_nll']:.3f}", f"{r['novel_judge_nll']:.3f}", f"{r['own_nll']:.3f}",
              f"{100 * r['novel']:.1f}%", f"{100 * r['unique']:.1f}%", f"{r['length_tv']:.3f}",
              " ".join(r["examples"][:6])] for r in rows]
    cells += [[f"{which} names", f"{nll:.3f}", "", "", "", "", "", ""]
              for which, nll in (("test", test_nll), ("training", train_nll))]
    return markdown_table(["samples of", "judge NLL", "novel NLL", "own NLL (entropy est.)", "novel", "unique",
                           "length TV", "names"], cells)


def main():
    p = OneLineParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="the models whose samples are judged (.npz, either kind)")
    p.add_argument("--judge", required=True, help="an AR model (.npz, scripts/train_ar.py) trained with another seed")
    p.add_argument("--num", type=positive_int, default=1000, help="names per model (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    add_workers_flag(p)
    args = p.parse_args()
    if args.json:
        check_json(args.json)
    judge, judge_meta, _ = load_checkpoint(args.judge, checkpoint.AR, "--judge")
    loaded = [(path, *load_checkpoint(path)[:2]) for path in args.checkpoints]
    for path, _, meta in loaded:
        check_judge(args.judge, judge_meta, path, meta)
    args.names = recorded_names(args.judge, judge_meta)
    data = load_data(args, L=judge.L)
    rows = []
    for path, model, _ in loaded:
        with worker_errors(), model_pool(model, workers(args.workers), rows=args.num) as pool:
            rows.append(judged_row(path, model, judge, data, args.num, args.seed, pool))
        print(f"{path}: judge NLL {rows[-1]['judge_nll']:.3f}, own NLL {rows[-1]['own_nll']:.3f}", flush=True)
    test_nll = generative_nll(judge, [decode(r) for r in data.test])
    train_nll = generative_nll(judge, data.train_names)
    print(f"\n## Samples under the judge ({args.judge}, nats/char; {args.num} names each, T = 1)\n")
    print(table(rows, test_nll, train_nll))
    if args.json:
        judge_seed = judge_meta["extra"].get("train", {}).get("seed")
        written = save_json(args.json, dict(judge=args.judge, judge_seed=judge_seed, num=args.num, seed=args.seed,
                                            rows=rows, test_nll=test_nll, train_nll=train_nll))
        print(f"\nwrote {written}")


if __name__ == "__main__":
    script_main(main)
