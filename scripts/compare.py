"""Autoregressive vs diffusion, trained here at matched size and steps or loaded: likelihood, sampling cost,
sample quality, and diffusion's quality versus its number of sampling steps.

    python scripts/compare.py --json runs/compare.json           # trains both (2000 steps of 128 each), then compares
    python scripts/compare.py --ar-checkpoint runs/ar.npz --diffusion-checkpoint runs/transformer.npz \
        --judge runs/judge.npz

Trained here, both models: the same Transformer (--dim 64, --layers 4, --heads 4, --mlp-ratio 4 by default), L=16
(causal for AR, bidirectional for diffusion); the same steps, batch, learning rate, weight decay, dropout and seed
(the diffusion objective is --objective, default exact_k); they validate every --eval-every steps (learning
curves; the best weights are kept) and are saved to OUT_ar.npz and OUT_diffusion.npz (--out is a prefix, default
runs/compare). Loaded, each keeps its own settings: the default trainers' models differ (scripts/train.py's
denoiser has a narrower feed-forward and more steps, each trainer's settings its best on the validation split in
about the same time). With --judge (an AR model trained with another seed, scripts/judge.py says why), the
samples of both are scored by it (generative NLL); the compared AR model never scores them: its own samples
would only measure its entropy.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinygrad_lite as tl  # noqa: E402
from diffusion.autoregressive import ARTransformer, row_nll  # noqa: E402
from diffusion import checkpoint  # noqa: E402
from diffusion.cli import (DEFAULT_L, check_free, check_json, check_judge, check_length, fail,  # noqa: E402
                           k_power, load_checkpoint, load_data, model_pool, recorded_names, save_json, script_main,
                           train_and_test, trainer_parser, whole_number, worker_errors, workers)
from diffusion.data import DEFAULT_NAMES  # noqa: E402
from diffusion.evaluation import (curves_table, likelihood_figures, likelihood_table, markdown_table,  # noqa: E402
                                sample_quality, samples_table)
from diffusion.models import TransformerDenoiser  # noqa: E402
from diffusion.orders import DECODING_ORDERS  # noqa: E402
from diffusion.trainer import TrainConfig  # noqa: E402

TEMPERATURES = (0.8, 1.0)
SAMPLING_STEPS = (1, 2, 4, 8, 16)
KINDS = {"AR": (checkpoint.AR, lambda args: ARTransformer(L=args.L, dim=args.dim, layers=args.layers, heads=args.heads,
                                                               dropout=args.dropout, mlp_ratio=args.mlp_ratio)),
         "diffusion": (checkpoint.DENOISERS,
                       lambda args: TransformerDenoiser(L=args.L, dim=args.dim, layers=args.layers, heads=args.heads,
                                                        dropout=args.dropout, mlp_ratio=args.mlp_ratio))}


def parse_args():
    p = trainer_parser(__doc__.splitlines()[0], steps=2000, batch_size=128, lr=3e-3, ema=0.999, objective="exact_k",
                       k_power=-0.5, dim=64, layers=4, heads=4, mlp_ratio=4, dropout=0.0, eval_every=500,
                       out="runs/compare")
    p.add_argument("--ar-checkpoint", default=None, help="use this AR model instead of training one")
    p.add_argument("--diffusion-checkpoint", default=None, help="use this denoiser instead of training one")
    p.add_argument("--sweep-temperature", type=float, default=1.0, help="temperature of the steps-S table")
    p.add_argument("--judge", default=None, help="an AR model trained with another seed, scoring the samples")
    p.add_argument("--iw-orders", type=whole_number, default=0, metavar="K",
                   help="also bound the denoiser's NLL by importance weighting over K uniformly random orders "
                        "(K x L network passes a test name; 0: skip)")
    args = p.parse_args()
    if args.num_samples == 0:
        fail("compare.py compares samples: --num-samples must be at least 1")
    if args.resume:
        fail("compare.py does not resume; train with scripts/train_ar.py or scripts/train.py --resume, then "
             "pass --ar-checkpoint / --diffusion-checkpoint")
    k_power(args)
    prefix = args.out or args.default_out
    args.out_prefix = prefix[:-4] if prefix.endswith(".npz") else prefix
    trains = not (args.ar_checkpoint and args.diffusion_checkpoint)
    args.workers = workers(args.workers, args.batch_size if trains else None)     # checked before any work
    return args


def load_given(args):
    """{kind: (model, meta, path)} for the checkpoints given (each checked for its kind), and the names file to
    use: the one they record (a second checkpoint trained on other data is said in one line)."""
    given = {}
    for kind, path in (("diffusion", args.diffusion_checkpoint), ("AR", args.ar_checkpoint)):
        if path:
            model, meta, _ = load_checkpoint(path, KINDS[kind][0], f"--{kind.lower()}-checkpoint")
            given[kind] = (model, meta, path)
    names = args.names
    for model, meta, path in given.values():
        names = recorded_names(path, meta, names)
    return given, names or DEFAULT_NAMES


def load_judge(args, given, data):
    """The --judge AR model (None without it), checked against every model it will score: never one of them, never
    an AR model of its seed (one given, or the one trained here with --seed), the same names and L."""
    if not args.judge:
        return None
    judge, judge_meta, _ = load_checkpoint(args.judge, checkpoint.AR, "--judge")
    for _, meta, path in given.values():
        check_judge(args.judge, judge_meta, path, meta)
    if "AR" not in given and os.path.realpath(args.judge) == os.path.realpath(out_path(args, "AR")):
        fail(f"--judge {args.judge} is where the AR model trained here would be saved; pass another --out")
    if "AR" not in given and judge_meta["extra"].get("train", {}).get("seed") == args.seed:
        fail(f"--judge {args.judge} was trained with seed {args.seed}, as the AR model trained here would be: an "
             f"independent judge needs another seed")
    recorded = judge_meta["extra"].get("data")
    if recorded and recorded["sha256"] != data.record()["sha256"]:
        fail(f"--judge {args.judge} was trained on {recorded['names']}, not on {args.names}: judge models of the "
             f"same names")
    if judge.L != data.L:
        fail(f"--judge {args.judge} has L={judge.L}, the models L={data.L}; they must match")
    return judge


def get_model(kind, given, args, data, reference=None):
    """(model, info) loaded from the given checkpoint, or trained here with the shared flags. info: train
    seconds, the validation curve [(step, nats/char)] and the test likelihood figures (with `reference`, the AR's
    per-name test NLLs, each figure's paired gap to them)."""
    if kind in given:
        model, meta, path = given[kind]
        if model.L != data.L:
            fail(f"{path}: the model has L={model.L}, but the other model has L={data.L}")
        print(f"{kind}: loaded {path} (step {meta['step']})")
        with worker_errors(), model_pool(model, args.workers, rows=len(data.test)) as pool:
            figures = likelihood_figures(model, data.test, seed=args.seed, iw_orders=args.iw_orders, pool=pool,
                                         reference=reference)
        extra = meta["extra"]
        return model, dict(checkpoint=path, train_seconds=None, steps=meta["step"], train=extra.get("train"),
                           best_step=extra.get("best_step"), validation=extra.get("validation", []),
                           likelihood=figures)
    print(f"\n== training {kind}")
    tl.manual_seed(args.seed)
    try:
        model = KINDS[kind][1](args)
    except ValueError as e:                                   # e.g. --dim not divisible by --heads
        fail(str(e))
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})
    args.out = out_path(args, kind)
    trained = train_and_test(args, data, model, cfg, orders=DECODING_ORDERS, iw_orders=args.iw_orders,
                             reference=reference)
    result = trained["result"]
    return model, dict(checkpoint=args.out, train_seconds=result["seconds"], steps=result["last_step"],
                       train=cfg.__dict__, best_step=result["best_step"], validation=result["validation"],
                       likelihood=trained["likelihood"])


def qualities(model, data, args, judge, settings):
    """sample_quality of `model` (scored by `judge`, an AR model, when not None) at each (temperature, steps) of
    `settings`, on --workers processes."""
    with worker_errors(), model_pool(model, args.workers, rows=args.num_samples) as pool:
        return [sample_quality(model, data, t, args.num_samples, s, args.seed, judge, pool) for t, s in settings]


def out_path(args, kind):
    return f"{args.out_prefix}_{'ar' if kind == 'AR' else 'diffusion'}.npz"


def training_table(models, info):
    """One row per model: its own training settings (a loaded checkpoint's, as saved) and where it ended."""
    rows = []
    for kind, m in models.items():
        cfg = info[kind]["train"] or {}                          # None: a checkpoint that did not save it
        seconds, best, ran = info[kind]["train_seconds"], info[kind].get("best_step"), info[kind]["steps"]
        planned = cfg.get("steps", ran)
        every, patience = cfg.get("eval_every", 0), cfg.get("patience", 0)
        validation = (f"every {every} steps, best kept" + (f", patience {patience}" if patience else "")
                      if every else "-")
        rows.append([kind, f"{m.num_parameters():,}", f"{ran}{'' if ran == planned else f' (of {planned})'} x "
                     f"{cfg.get('batch_size', '?')}", cfg.get("lr", "?"), cfg.get("weight_decay", "?"),
                     m.config.get("dropout", "?"), cfg.get("objective", "?") if kind == "diffusion" else "next token",
                     validation, best if best is not None else ran,
                     f"{seconds:.0f} s" if seconds is not None else f"loaded {info[kind]['checkpoint']}"])
    return markdown_table(["model", "parameters", "steps x batch", "lr", "weight decay", "dropout", "objective",
                           "validation", "weights kept (step)", "train time"], rows)


def main():
    args = parse_args()
    given, args.names = load_given(args)
    given_L = next((model.L for model, _, _ in given.values()), None)
    if args.L and given_L and args.L != given_L:
        fail(f"--L {args.L} differs from the given checkpoint's L={given_L}; both models must share it (drop --L)")
    args.L = given_L or args.L or DEFAULT_L
    for kind in ("AR", "diffusion"):
        if kind not in given:
            check_free(out_path(args, kind), "--out", args.overwrite)
    if args.json:
        check_json(args.json)
    data = load_data(args)
    check_length(data)
    judge = load_judge(args, given, data)
    models, info = {}, {}
    models["AR"], info["AR"] = get_model("AR", given, args, data)
    with worker_errors(), model_pool(models["AR"], args.workers, rows=len(data.test)) as pool:
        reference = row_nll(models["AR"], data.test, pool)        # the AR's per-name NLLs, to pair the figures with
    models["diffusion"], info["diffusion"] = get_model("diffusion", given, args, data, reference)
    print("\n== sampling", args.num_samples, "names per row")
    quality = {kind: qualities(m, data, args, judge, [(t, None) for t in TEMPERATURES]) for kind, m in models.items()}
    diffusion = models["diffusion"]
    by_steps = {"diffusion": qualities(diffusion, data, args, judge, [(args.sweep_temperature, s) for s in
                                                                     SAMPLING_STEPS if s <= diffusion.L])}
    by_steps["AR (reference)"] = [q for q in quality["AR"] if q["temperature"] == args.sweep_temperature]

    print("\n## Training\n")
    print(training_table(models, info))
    print("\n## Test likelihood (nats/char, letters + end token)\n")
    print(likelihood_table({k: v["likelihood"] for k, v in info.items()}))
    bound = info["diffusion"]["likelihood"].get("random_orders")
    if bound:
        print("\n## Importance-weighted bound versus random orders K (test, nats/char)\n")
        print(markdown_table(["orders K", "bound"], [[k, f"{b:.4f}"] for k, b in bound["bound_by_orders"]]))
    print(f"\n## Samples (gen NLL: under the judge, {args.judge})\n" if args.judge else
          "\n## Samples (no --judge: no generative NLL)\n")
    print(samples_table(quality))
    print(f"\n## Diffusion quality versus sampling steps S (T={args.sweep_temperature:g})\n")
    print(samples_table(by_steps))
    curves = {f"{k} validation {'NLL' if k == 'AR' else 'NELBO'}": v["validation"] for k, v in info.items()}
    if any(curves.values()):
        print("\n## Learning curves (validation, nats/char)\n")
        batches = {(v["train"] or {}).get("batch_size") for v in info.values()}   # epochs only if both share it
        batch = batches.pop() if len(batches) == 1 else None
        print(curves_table(curves, len(data.train) / batch if batch else None))
    if args.json:
        figures = dict(settings={k: v for k, v in vars(args).items()}, models={k: m.config for k, m in
                       models.items()}, parameters={k: m.num_parameters() for k, m in models.items()},
                       info=info, samples=quality, sampling_steps=by_steps)
        print(f"\nwrote {save_json(args.json, figures)}")


if __name__ == "__main__":
    script_main(main)
