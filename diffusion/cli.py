"""What the scripts share: argument parsing with range checks, checkpoints checked for their kind and their data,
outputs checked before training, and the trainers' run itself (load data -> build model -> train (optionally with
validation and early stopping) -> test likelihood -> checkpoint -> samples and a temperature sweep), for the
denoisers and the AR baseline alike.

Bad input ends with one line on stderr and exit code 2, never a traceback; Ctrl-C anywhere ends with one line
and exit code 130 (the training loop saves first).

Checkpoints: each trainer writes runs/<model>.npz by default (runs/transformer.npz, runs/ar.npz, runs/mlp.npz,
runs/skip_mlp.npz). A run never replaces a file that is already there: it stops before training and says what
the file holds; --overwrite replaces it, --resume FILE continues FILE in place.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile

import tinygrad_lite as tl
from tinygrad_lite.malloc import keep_freed_memory
from tinygrad_lite.parallel import ModelPool, WorkerError, available_cores

from . import checkpoint
from .autoregressive import ar_prepare, is_autoregressive, next_token_loss, row_nll
from .chunks import chunk_bounds
from .data import DEFAULT_NAMES, NamesData, NamesFileError, chars_per_name
from .evaluation import format_likelihood, likelihood_figures, sample_quality
from .likelihood import nelbo, unigram_nll
from .loss import OBJECTIVES, masked_loss, prepare as prepare_noise
from .metrics import format_report
from .schedule import SCHEDULES, get_schedule
from .trainer import Objective, TrainConfig, TrainingStopped, train

SWEEP = (0.5, 0.8, 1.0, 1.5)
TRAINERS = {"transformer": "scripts/train.py", "ar_transformer": "scripts/train_ar.py",
            "mlp": "scripts/train_minimal.py", "skip_mlp": "scripts/train_pure.py"}      # model kind -> its trainer
DEFAULT_L = 16
DEFAULT_CHECKPOINT = "runs/transformer.npz"   # scripts/train.py's --out: what sample, evaluate and bench read
MAX_L = 64    # a name is a short row: attention costs grow as L^2 and the MLPs' weights with L
MAX_WORKERS = 8   # the default --workers is the cores available, at most this: a step of 64 names splits only so far


def _number(kind, low, inclusive=False, what="a number"):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {low}")
        return value
    return parse


def fraction(text):
    """A rate in [0, 1), e.g. --dropout."""
    value = _number(float, 0.0, inclusive=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be < 1")
    return value


def mask_count_power(text):
    """--k-power, in [-4, 4]: the row weights 1/(k q(k)) ∝ k^-(1+P) span a factor of about L^|1+P|, and beyond
    that range a few rows of a batch would carry all of its loss."""
    value = _number(float, -math.inf)(text)
    if abs(value) > 4:
        raise argparse.ArgumentTypeError(f"{text} must be between -4 and 4")
    return value


positive_int = _number(int, 0, what="a whole number")
whole_number = _number(int, 0, inclusive=True, what="a whole number")
positive_float = _number(float, 0.0)
nonnegative_float = _number(float, 0.0, inclusive=True)


def comma_list(kind, what, low=None):
    """An argparse type: 'a,b,c' -> [kind(a), kind(b), kind(c)], at least one value, each >= low if given."""
    def parse(text):
        try:
            values = [kind(p) for p in text.split(",") if p.strip()]
        except ValueError:
            values = []
        if not values or (low is not None and min(values) < low):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}")
        return values
    return parse


def sequence_length(text):
    """--L: 1..MAX_L (a run also checks it against the data's longest name: see prepare)."""
    value = positive_int(text)
    if value > MAX_L:
        raise argparse.ArgumentTypeError(f"{text} must be at most {MAX_L}: names are short, and attention costs "
                                         f"grow as L^2")
    return value


def fail(message):
    """One clear line on stderr, exit code 2 (as argparse does for bad flags)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def note(message):
    print(f"note: {message}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line on stderr (exit 2) instead of its usage block."""

    def error(self, message):
        fail(f"{message} (see --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each flag's default, but no "(default: None)": such a flag's help says what it does without it."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def script_main(main):
    """Run a script's main() as the program: with the allocator setting that keeps freed memory for reuse
    (tinygrad_lite.malloc: process-wide, so the program's choice; bench shows what it buys), and Ctrl-C anywhere
    ending it with one line and exit code 130, not a traceback (the training loop handles its own Ctrl-C
    first: it saves, then says how to resume)."""
    keep_freed_memory()
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


def trainer_parser(description, **defaults):
    """argparse for a trainer; `defaults` overrides TrainConfig's defaults and adds model flags' defaults."""
    d = {**TrainConfig().__dict__, "out": "runs/model.npz", "num_samples": 1000, "sample_steps": None, **defaults}
    p = OneLineParser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="training steps")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"], help="names per step")
    p.add_argument("--lr", type=positive_float, default=d["lr"], help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d["weight_decay"])
    p.add_argument("--warmup", type=whole_number, default=d["warmup"], help="linear warmup steps, then cosine decay")
    p.add_argument("--grad-clip", type=positive_float, default=d["grad_clip"], help="max global gradient norm")
    p.add_argument("--min-lr-ratio", type=nonnegative_float, default=d["min_lr_ratio"],
                   help="final learning rate as a fraction of --lr")
    p.add_argument("--seed", type=int, default=d["seed"], help="seeds init, batches, noise and sampling")
    p.add_argument("--objective", choices=OBJECTIVES, default=d["objective"],
                   help="'nelbo': the ELBO-weighted loss; 'simple': plain masked cross-entropy")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=d["schedule"], help="noise schedule")
    p.add_argument("--names", default=None, help=f"names file, one per line (default {DEFAULT_NAMES}; "
                   "a resumed run keeps its own)")
    p.add_argument("--L", type=sequence_length, default=None,
                   help=f"sequence length, at most {MAX_L} (default {DEFAULT_L}; longer names are dropped)")
    p.add_argument("--out", default=None, help=f"checkpoint path (.npz; default {d['out']}, or with --resume the "
                   "resumed file); an existing file is never replaced without --overwrite")
    p.set_defaults(default_out=d["out"])
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    p.add_argument("--num-samples", type=whole_number, default=d["num_samples"],
                   help="names to generate after training (0: none)")
    p.add_argument("--sample-steps", type=positive_int, default=d["sample_steps"], help="sampler steps (default L)")
    p.add_argument("--log-every", type=positive_int, default=d["log_every"])
    p.add_argument("--json", default=None, help="also write the figures printed at the end to this JSON file")
    p.add_argument("--save-every", type=whole_number, default=0,
                   help="also save the checkpoint every N steps (0: only at the end or on Ctrl-C)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint, in place (its saved settings and data win over the "
                        "flags)")
    add_workers_flag(p, "processes computing each step's gradient, a shard of the batch each (1: in this "
                        "process), then the test and the samples, in chunks on worker processes (the same "
                        "figures for any number)")
    p.add_argument("--eval-every", type=whole_number, default=d["eval_every"],
                   help="score the validation split every N steps, keep the best weights (0: off)")
    p.add_argument("--patience", type=whole_number, default=d["patience"],
                   help="with --eval-every: stop after N validations without improvement (0: never stop early)")
    p.add_argument("--ema", type=fraction, default=d["ema"],
                   help="decay of a moving average of the weights (e.g. 0.999): validated, kept and saved (0: off)")
    if "dim" in d:
        p.add_argument("--dim", type=positive_int, default=d["dim"], help="the Transformer's width")
        p.add_argument("--layers", type=positive_int, default=d["layers"], help="the Transformer's blocks")
        p.add_argument("--heads", type=positive_int, default=d["heads"], help="attention heads (they divide --dim)")
        p.add_argument("--mlp-ratio", type=positive_int, default=d["mlp_ratio"],
                       help="each block's feed-forward width, in multiples of --dim (GPT-2's is 4)")
    if "dropout" in d:
        p.add_argument("--dropout", type=fraction, default=d["dropout"],
                       help="dropout rate in the Transformer blocks")
    if "k_power" in defaults:                    # the denoiser's trainers (TrainConfig's own field is in d for all)
        p.add_argument("--k-power", type=mask_count_power, default=None,
                       help=f"objective exact_k: draw the number of masks k from q(k) ∝ k^P, weighting rows by "
                            f"1/(k q(k)); 0 is uniform (default {d['k_power']:g} with exact_k)")
        p.set_defaults(default_k_power=d["k_power"])
    if "time_input" in d:
        p.add_argument("--time-input", action="store_true", default=d["time_input"],
                       help="condition the denoiser on t (needs --objective nelbo or simple)")
    return p


def add_workers_flag(p, what="worker processes sampling and evaluating, in chunks (the same results for any number)"):
    p.add_argument("--workers", type=positive_int, default=None,
                   help=f"{what} (default: the cores available, at most {MAX_WORKERS})")


def workers(asked, batch_size=None):
    """--workers: as asked, or by default the cores available, at most MAX_WORKERS. Never more than the cores
    available, and for training at most batch_size (each worker takes one row of the batch at least): more
    asked is one line, exit 2."""
    if asked is None:
        return max(1, min(available_cores(), MAX_WORKERS, batch_size or MAX_WORKERS))
    if asked > available_cores():
        fail(f"--workers {asked} is more than the {available_cores()} cores this process may use")
    if batch_size is not None and asked > batch_size:
        fail(f"--workers {asked} is more than --batch-size {batch_size}: each worker takes one row of the batch at "
             f"least")
    return asked


def model_pool(model, count, rows=None):
    """The worker processes sampling and evaluation spread their chunks over (chunks.py): a ModelPool of `count`
    processes holding `model` (at most one per chunk when the work is `rows` rows), each with this program's
    allocator setting. One worker process even for count=1: workers run BLAS on one thread, and this process
    may run it on several, which rounds a matrix product differently; so every figure is computed the same
    way, and the names and figures are the same bits for any --workers."""
    if rows == 0:
        return contextlib.nullcontext(None)                       # nothing to do: no process to start
    if rows is not None:
        count = max(1, min(count, len(chunk_bounds(rows))))
    return ModelPool(model, checkpoint.build_model, {"config": model.config}, count, initializer=keep_freed_memory)


def worker_failed(error, path=None):
    """A worker process that died or raised (a WorkerError) ends the program: one line naming it and what
    happened (and what `path`, the run's checkpoint, holds), exit 1."""
    print(f"error: {error}" + (f"; {saved_state(path)}" if path else ""), file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def worker_errors(path=None):
    """worker_failed for a WorkerError raised in the block."""
    try:
        yield
    except WorkerError as e:
        worker_failed(e, path)


# ----------------------------------------------------------------------------- outputs: checked before training
def check_writable(path, flag):
    """Make `path`'s folder and make sure a file can be written there; otherwise one line and exit 2."""
    if os.path.isdir(path):
        fail(f"{flag} {path} is a folder; give a file path")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        fail(f"{flag} {path} is not writable")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        fail(f"{flag} {path} cannot be written: {existing} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")   # what checkpoint.save will do there
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        fail(f"{flag} {path} cannot be written ({e.strerror or e})")


def check_json(path, out=None):
    """--json: writable, and neither a checkpoint nor the run's own --out (figures never replace a model)."""
    check_writable(path, "--json")
    if out and os.path.abspath(path) == os.path.abspath(out):
        fail(f"--json {path} is also the --out checkpoint; give the figures a file of their own")
    if os.path.exists(path):
        try:
            meta = checkpoint.read_meta(path)
        except checkpoint.CheckpointError:
            return                                                # an earlier figures file: replaced
        fail(f"--json {path} holds {checkpoint.describe(meta)}; figures never replace a model: give them another file")


def check_free(path, flag="--out", overwrite=False, resumed=None):
    """A run may write `path` only if nothing is there, it is the checkpoint being resumed, or --overwrite."""
    check_writable(path, flag)
    if not os.path.exists(path) or overwrite or (resumed and os.path.samefile(path, resumed)):
        return
    try:
        what = checkpoint.describe(checkpoint.read_meta(path))
    except checkpoint.CheckpointError:
        what = "a file that is not a checkpoint"
    fail(f"{path} already holds {what}; pass another {flag}, or --overwrite to replace it")


def saved_state(path):
    """What `path` holds now, for the last line of an interrupted run."""
    try:
        return f"{path} holds step {checkpoint.read_meta(path)['step']}"
    except checkpoint.CheckpointError:
        return "nothing was saved"


def save_or_rescue(path, write):
    """write(path); if that fails after all (disk full, folder removed), write to a fallback file in the temp
    folder instead and say where: a trained run is never lost. Returns the path written."""
    try:
        write(path)
        return path
    except OSError as e:
        rescue = os.path.join(tempfile.gettempdir(), f"rescued-{os.getpid()}-{os.path.basename(path)}")
        write(rescue)
        print(f"error: could not write {path} ({e.strerror or e}); saved to {rescue} instead", file=sys.stderr)
        return rescue


# ----------------------------------------------------------------------------- checkpoints: their kind and data
def read_checkpoint(path):
    """checkpoint.load(path): (model with the trained weights, meta, training state), or one line on stderr and
    exit 2. What a resumed run starts from."""
    try:
        return checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        fail(str(e))


def load_checkpoint(path, kinds=None, use=""):
    """read_checkpoint, for a tool that samples or scores the model: a mid-run checkpoint of an --ema run holds
    the trained weights and their moving average; the model gets the average, the weights training would end with
    unless a later validation keeps an earlier best (a finished run's file holds only the weights it ended with).
    kinds: the model kinds the caller can use (None: any); `use` says what for, in the message. Returns (model,
    meta, training state)."""
    model, meta, training = read_checkpoint(path)
    if kinds is not None and model.config["kind"] not in kinds:
        fail(f"{path} holds {checkpoint.describe(meta)}; {use or 'this tool'} needs "
             f"{' or '.join(checkpoint.NAMES[k] for k in kinds)}")
    extra = meta["extra"]
    mid_run = meta["step"] < extra.get("train", {}).get("steps", 0) and not extra.get("stopped_early")
    if training["ema"] and mid_run:           # a finished file's weights are already the ones kept (or the best)
        average = tl.optim.ExponentialMovingAverage(model.parameters())
        try:
            average.load_state_dict(training["ema"])
        except (KeyError, ValueError) as e:
            fail(f"{path}: its moving average does not fit the model ({type(e).__name__}: {e})")
        average.copy_to()
        note(f"{path} is a mid-run checkpoint (step {meta['step']}): using its moving average of the weights")
    return model, meta, training


def _same_contents(path, sha256):
    """Whether the file at `path` has these contents (NamesReport.sha256 is the hash of the file's bytes)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == sha256
    except OSError:
        return False


def recorded_names(path, meta, names=None):
    """The names file to evaluate checkpoint `path` on: the one it records (or the project's names.txt if that
    file is gone but names.txt has its contents). Another --names, a recorded file that changed or is gone, or a
    checkpoint that records none, is said in one line (a file that changed or is gone without --names: exit 2)."""
    data = meta.get("extra", {}).get("data")
    if data is None:
        note(f"{path} does not record its names file; evaluating on {names or DEFAULT_NAMES}")
        return names or DEFAULT_NAMES
    if names is not None:
        if not _same_contents(names, data["sha256"]):
            note(f"evaluating on {names}, not on {data['names']} that {path} was trained on: its test names may "
                 f"have been training names")
        return names
    for candidate in (data["names"], DEFAULT_NAMES):
        if _same_contents(candidate, data["sha256"]):
            if candidate != data["names"]:
                note(f"{data['names']} (recorded in {path}) is gone or changed; {candidate} has its contents")
            return candidate
    what = "has changed since" if os.path.exists(data["names"]) else "is gone"
    fail(f"{data['names']}, the names file {path} was trained on, {what}; pass --names FILE to evaluate on "
         f"another file")


def _seed(meta):
    return meta["extra"].get("train", {}).get("seed")


def check_judge(judge_path, judge_meta, path, meta):
    """A judge (an AR model scoring samples, scripts/judge.py) for the model in checkpoint `path`: one line, exit 2,
    for a judge that is the model it would judge or an AR model started from the same seed,
    or for a model of other names or another L."""
    if os.path.realpath(path) == os.path.realpath(judge_path):
        fail(f"{path} is the judge itself: a model scoring its own samples measures its entropy, not their "
             f"quality; train a judge with another seed (python scripts/train_ar.py --seed 1 --out runs/judge.npz)")
    if meta["config"]["kind"] in checkpoint.AR and _seed(judge_meta) is not None and _seed(meta) == _seed(judge_meta):
        fail(f"{path} is an AR model trained with the judge's seed {_seed(meta)} (the same initial weights and "
             f"batches): an independent judge needs another --seed")
    data, judge_data = meta["extra"].get("data"), judge_meta["extra"].get("data")
    if data and judge_data and data["sha256"] != judge_data["sha256"]:
        fail(f"{path} was trained on {data['names']}, the judge on {judge_data['names']}: judge models of "
             f"the same names")
    if meta["config"]["L"] != judge_meta["config"]["L"]:
        fail(f"{path} has L={meta['config']['L']}, the judge L={judge_meta['config']['L']}; they must match")


def load_data(args, L=None):
    try:
        data = NamesData.load(args.names, L=L or args.L)
    except NamesFileError as e:
        fail(str(e))
    r = data.report
    print(f"names: {len(r.names)} from {args.names}" + (f" ({r.summary()})" if r.summary() else ""))
    dropped = sum(data.dropped.values())
    print(f"split: train {len(data.train)}, validation {len(data.val)}, test {len(data.test)}; "
          f"L={data.L}" + (f", {dropped} names longer than {data.L} letters dropped" if dropped else
                           ", no name dropped"))
    return data


def report_samples(model, data, args, temperatures=SWEEP, show=20, ar_model=None, pool=None):
    """Print names and their quality figures at each temperature (either kind of model; the generative NLL
    too when an AR model is given); returns the figures as a list of dicts (none with --num-samples 0).
    pool: a model_pool of `model` to sample on, or None."""
    steps = args.sample_steps or model.L
    if steps > model.L:
        fail(f"--sample-steps must be at most L={model.L}, got {steps}")
    rows = []
    for temperature in temperatures if args.num_samples else ():
        row = sample_quality(model, data, temperature, args.num_samples, steps, args.seed, ar_model, pool)
        names = row["examples"]
        print(f"T={temperature:<4} {format_report(row)}  ({row['network_calls']} network calls, "
              f"{row['seconds']:.2f}s for {args.num_samples})  e.g. {' '.join(names[:8])}")
        if temperature == 1.0 and show:
            print("  samples at T=1.0:", " ".join(names[8:8 + show]))
        rows.append(row)
    return rows


def _resume(args, kind):
    """Model, TrainConfig, start step and training state (checkpoint.load's) from the checkpoint of an
    interrupted run of this trainer's `kind`; sets args.names and args.L to the run's own data (another --names
    or --L: exit 2)."""
    model, meta, training = read_checkpoint(args.resume)
    if model.config["kind"] != kind:
        other = TRAINERS.get(model.config["kind"], "its own trainer")
        fail(f"{args.resume} holds {checkpoint.describe(meta)}; this script trains {checkpoint.NAMES[kind]} "
             f"(to continue that run: python {other} --resume {args.resume})")
    saved = meta["extra"].get("train")
    if saved is None or "engine_rng" not in meta["extra"]:
        fail(f"{args.resume}: this checkpoint has no training state to resume from")
    if meta["extra"].get("stopped_early"):
        fail(f"{args.resume} stopped early at step {meta['step']} (its weights are the best validated ones, not the "
             f"last trained); nothing to resume (a longer run is a new run: another --out)")
    if meta["step"] >= saved["steps"]:
        fail(f"{args.resume} has finished its {saved['steps']} steps; nothing to resume (a longer run is a new run: "
             f"--steps N with another --out)")
    if not training["optimizer"]:
        fail(f"{args.resume}: this checkpoint has no optimizer state to resume from (one written before attention's "
             f"key projection lost its bias still samples and evaluates, but cannot be resumed)")
    if args.L not in (None, model.L):
        fail(f"{args.resume} was trained with L={model.L}; a resumed run keeps it (drop --L)")
    recorded = meta["extra"].get("data")
    if recorded and args.names and not _same_contents(args.names, recorded["sha256"]):
        fail(f"{args.resume} was trained on {recorded['names']}, and {args.names} differs; a resumed run keeps "
             f"its data (drop --names)")
    args.names = args.names or (recorded_names(args.resume, meta) if recorded else DEFAULT_NAMES)
    args.L = model.L
    tl.random.set_state(meta["extra"]["engine_rng"])
    print(f"resuming {args.resume} at step {meta['step']} of {saved['steps']}")
    # the run so far (a checkpoint from before it was saved has none: the curves then start here)
    progress = dict(meta["extra"].get("progress") or {}, best_weights=training["best"] or None)
    return model, TrainConfig(**saved), meta["step"], dict(training, progress=progress)


def check_length(data):
    """L must hold the data's longest name (longer names are dropped, and said) and not be far above it: the
    extra positions would only ever hold PAD, at the cost of compute and weights."""
    most = max(DEFAULT_L, 2 * data.longest)
    if data.L > most:
        fail(f"--L {data.L} is far above the longest name ({data.longest} letters): positions past it only ever "
             f"hold PAD; use --L between {data.longest} and {most}")


def k_power(args):
    """Resolve --k-power for a fresh run of a trainer that has it: the script's default with objective exact_k,
    0 otherwise; given with another objective, one line (it would be silently ignored)."""
    if not hasattr(args, "k_power"):
        return
    if args.k_power is None:
        args.k_power = args.default_k_power if args.objective == "exact_k" else 0.0
    elif args.objective != "exact_k" and args.k_power != 0:
        fail(f"--k-power shapes the mask counts of --objective exact_k, not of {args.objective}")


def prepare(args, make_model, kind):
    """Data, then the model and its TrainConfig: fresh (seeded) or resumed from --resume (same kind only), with
    the outputs checked before any training. Returns (data, model, cfg, start_step, training state)."""
    if args.resume:
        model, cfg, start_step, training = _resume(args, kind)
        args.out = args.out or args.resume                           # resume continues in place
    else:
        args.names, args.L, args.out = args.names or DEFAULT_NAMES, args.L or DEFAULT_L, args.out or args.default_out
    check_free(args.out, "--out", args.overwrite, resumed=args.resume)
    if args.json:
        check_json(args.json, args.out)
    data = load_data(args)
    check_length(data)
    if not args.resume:
        tl.manual_seed(args.seed)
        try:
            model = make_model(args)
        except ValueError as e:                                     # e.g. --dim not divisible by --heads
            fail(str(e))
        k_power(args)
        cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})
        start_step, training = 0, {}
    if cfg.batch_size > len(data.train):
        fail(f"--batch-size {cfg.batch_size} is larger than the {len(data.train)} training names")
    args.workers = workers(args.workers, cfg.batch_size)
    if getattr(model, "time_input", False) and cfg.objective == "exact_k":
        fail("objective exact_k needs a denoiser without time input; use --objective nelbo with --time-input")
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters; "
          f"{args.workers} process{'es' if args.workers > 1 else ''} per step")
    return data, model, cfg, start_step, training



def fit(args, model, cfg, data, objective, start_step=0, training=None, validate=None, metric="nelbo"):
    """Train with periodic/interrupt saves to args.out, on args.workers processes. Ctrl-C: save, print how to
    resume, exit 130; a non-finite loss or a worker process that died or raised: one line, exit 1 (the last
    checkpoint stays). validate(model) -> validation nats/char enables early stopping when
    cfg.eval_every > 0 (the model ends with its best weights). training: checkpoint.load's training state to
    resume from, or None. Returns (train result, save_finished) where save_finished(**figures) writes the
    checkpoint again with extra figures (to a printed fallback file if args.out cannot be written after all,
    which then becomes args.out).

    Mid-run checkpoints carry what a resume needs: Adam's two moments, the average's state and the run so far with
    its best validated weights, up to five times the weights. A finished run cannot be resumed (a longer run is a
    new run), so its file keeps the weights alone: the ones training ended with (the average, or the best
    validated)."""
    if cfg.eval_every and validate is not None and not len(data.val):
        fail("--eval-every needs a validation split, and this names file has none")

    ended = {}                  # set once training returns: an early stop is recorded in every later save

    def save(step, optimizer, ema, progress=None, **figures):
        """progress (trainer.train's, mid-run): the curves, time and best weights so far, for a resume to go on."""
        best = progress["best_weights"] if progress else None
        if progress:
            figures["progress"] = {k: v for k, v in progress.items() if k != "best_weights"}
        extra = dict(train=cfg.__dict__, data=data.record(), engine_rng=tl.random.get_state(), **ended, **figures)
        args.out = save_or_rescue(args.out, lambda path: checkpoint.save(path, model, optimizer, step, extra, ema,
                                                                          best))
    training = training or {}
    args.workers = workers(args.workers, cfg.batch_size)          # compare.py reaches here without prepare()
    same_flags = "" if args.workers == workers(None, cfg.batch_size) else f" --workers {args.workers}"
    same_flags += f" --save-every {args.save_every}" if args.save_every else ""   # not in the file: say it again
    try:
        with worker_errors(args.out):
            result = train(model, data.train, cfg, objective, start_step=start_step,
                           optimizer_state=training.get("optimizer"), ema_state=training.get("ema"), save=save,
                           save_every=args.save_every, metric=metric, validate=validate, workers=args.workers,
                           worker_init=keep_freed_memory, progress=training.get("progress"))
    except TrainingStopped as e:
        if not e.interrupted:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        script = TRAINERS[model.config["kind"]]                  # compare.py trains too, but resumes nothing
        print(f"\ninterrupted: saved step {e.step} to {args.out}\nresume with: python {script} --resume {args.out}"
              f"{same_flags}", file=sys.stderr)
        sys.exit(130)
    ended.update(stopped_early=result["stopped_early"])

    def save_finished(**figures):
        save(result["last_step"], None, None, **figures)
    save_finished()                                       # the weights kept (the best), before testing
    earlier = (training.get("progress") or {}).get("seconds", 0.0)          # a resumed run's time before it
    print(f"trained {result['last_step'] - start_step} steps in {result['seconds'] - earlier:.1f}s" +
          (f" ({result['seconds']:.1f}s since step 1)" if earlier else ""))
    if result["best_step"] is not None:
        print(f"best validation {metric} {result['best_validation']:.4f} nats/char at step {result['best_step']} "
              f"(kept those weights{'; stopped early' if result['stopped_early'] else ''})")
    return result, save_finished


def objective(model, cfg, data):
    """(Objective, validate, metric) for training `model`: next-token NLL for the AR model, the diffusion loss
    (cfg.objective, cfg.schedule) for a denoiser. validate scores data.val in nats/char: the exact NLL (AR) or
    the NELBO from the same two mask draws every time (so successive figures compare fairly)."""
    if is_autoregressive(model):
        def validate(model):
            return float(row_nll(model, data.val).sum() / chars_per_name(data.val).sum())
        return Objective(ar_prepare, next_token_loss), validate, "nll"
    schedule = get_schedule(cfg.schedule)

    def noise(model, x0, rng):
        return prepare_noise(model, x0, schedule, rng, cfg.objective, cfg.k_power)

    def validate(model):
        return nelbo(model, data.val, schedule, seed=cfg.seed, min_repeats=2, max_repeats=2)["nelbo"]
    return Objective(noise, masked_loss), validate, "nelbo"


def train_and_test(args, data, model, cfg, start_step=0, training=None, orders=(), iw_orders=0,
                   reference=None):
    """Train either kind of model (fit), score the test split (evaluation.likelihood_figures: the AR NLL, or the
    NELBO, the fixed-`orders` likelihoods of a denoiser and with iw_orders > 0 its bound over that many random
    orders; with `reference`, another model's per-name test NLLs, each figure's paired gap to them), save the
    checkpoint with the figures and the validation curve. Returns dict(result, likelihood, unigram, test)."""
    loss, validate, metric = objective(model, cfg, data)
    result, save_finished = fit(args, model, cfg, data, loss, start_step, training, validate, metric)
    with worker_errors(args.out), model_pool(model, args.workers, rows=len(data.test)) as pool:
        figures = likelihood_figures(model, data.test, seed=cfg.seed, schedule=get_schedule(cfg.schedule),
                                     orders=orders, iw_orders=iw_orders, pool=pool, reference=reference)
    unigram = unigram_nll(data.train, data.test)
    print("\n".join(format_likelihood(figures)) + f"\nunigram baseline {unigram:.4f} nats/char")
    main = figures.get("nll") or figures["nelbo"]
    test = dict(nll=main["nll"], se=main["se"]) if "nll" in figures else \
        dict(nelbo=main["nll"], se=main["se"], repeats=main["repeats"], method=main["method"])
    save_finished(test=test, likelihood=figures, validation=result["validation"], best_step=result["best_step"])
    print(f"saved {args.out}")
    return dict(result=result, likelihood=figures, unigram=unigram, test=test)


def save_json(path, figures):
    """json.dump(figures) to `path`, or to a printed fallback file if that fails (save_or_rescue). Returns the
    path written."""
    def write(target):
        with open(target, "w") as f:
            json.dump(figures, f, indent=1)
    return save_or_rescue(path, write)


def write_json(path, model, cfg, trained, **more):
    """The figures of a run as JSON (for the README tables)."""
    result = trained["result"]
    return save_json(path, dict(model=model.config, parameters=model.num_parameters(), train=cfg.__dict__,
                                train_seconds=result["seconds"], history=result["history"],
                                validation=result["validation"], best_step=result["best_step"], test=trained["test"],
                                likelihood=trained["likelihood"], unigram=trained["unigram"], **more))


def run(description, make_model, kind, **defaults):
    """The whole main job for one model (a denoiser or the AR baseline of model kind `kind`). make_model(args)
    builds it. Returns (model, data, args)."""
    args = trainer_parser(description, **defaults).parse_args()
    data, model, cfg, start_step, training = prepare(args, make_model, kind)
    try:
        trained = train_and_test(args, data, model, cfg, start_step, training)
        with worker_errors(args.out), model_pool(model, args.workers, rows=args.num_samples) as pool:
            sweep = report_samples(model, data, args, ar_model=model if is_autoregressive(model) else None,
                                   pool=pool)
    except KeyboardInterrupt:                     # a second Ctrl-C in training, or one while testing or sampling
        print(f"\ninterrupted (Ctrl-C); {saved_state(args.out)}", file=sys.stderr)
        sys.exit(130)
    if args.json:
        write_json(args.json, model, cfg, trained, sweep=sweep)
    return model, data, args
