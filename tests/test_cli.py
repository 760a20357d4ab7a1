"""diffusion/cli.py and the scripts built on it: no silent wrong model, no lost run.

Checkpoints record their kind and data; a run never replaces a checkpoint that is there (one line, exit 2, the
file byte for byte unchanged); every tool checks the kind it loads and evaluates on the names the checkpoint
records; outputs are checked before training, and a failed final save is rescued; Ctrl-C is one line, exit 130;
whatever value a trainer flag is given, it parses or exits 2. The tests that run scripts/ are marked `scripts`.
"""
import contextlib
import glob
import io
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import tinygrad_lite as tl
from diffusion import checkpoint, cli
from diffusion.cli import trainer_parser
from diffusion.data import DEFAULT_NAMES, SPLIT_RULE, load_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--steps", "4", "--batch-size", "16", "--log-every", "2"]


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(r, code=2):
    """The script failed with `code`, one 'error: ...' line on stderr and no traceback; returns the line."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A names file of 300 names and, trained on it for a few steps, a denoiser and an AR model."""
    folder = tmp_path_factory.mktemp("runs")
    names = folder / "names300.txt"
    with open(DEFAULT_NAMES) as f:
        names.write_text("".join(f.readlines()[:300]))
    for script, out in (("scripts/train.py", "transformer.npz"), ("scripts/train_ar.py", "ar.npz")):
        r = run_script(script, *TINY, "--names", str(names), "--num-samples", "0", "--out", str(folder / out))
        assert r.returncode == 0, r.stderr
    return folder


def snapshot(folder):
    """Every file under `folder` with its bytes: to show a refused run wrote nothing."""
    return {p: open(os.path.join(d, p), "rb").read() for d, _, files in os.walk(folder) for p in files}


# ----------------------------------------------------------------------------- 1. kind, data, no overwrite
@pytest.mark.scripts
def test_checkpoint_records_its_kind_and_data(runs):
    meta = checkpoint.read_meta(str(runs / "transformer.npz"))
    data = meta["extra"]["data"]
    assert meta["config"]["kind"] == "transformer"
    assert data == dict(names=str(runs / "names300.txt"), sha256=load_names(str(runs / "names300.txt")).sha256,
                        split=SPLIT_RULE, L=16)
    assert checkpoint.read_meta(str(runs / "ar.npz"))["config"]["kind"] == "ar_transformer"


@pytest.mark.scripts
@pytest.mark.parametrize("script, other", [("scripts/train.py", "ar.npz"), ("scripts/train_ar.py", "transformer.npz"),
                                           ("scripts/train_minimal.py", "transformer.npz")])
def test_resume_of_another_kind_is_refused_and_writes_nothing(runs, script, other):
    before = snapshot(runs)
    line = one_line_error(run_script(script, "--resume", str(runs / other)))
    assert "this script trains a" in line and "--resume" in line
    assert snapshot(runs) == before


@pytest.mark.scripts
def test_a_fresh_run_never_replaces_a_checkpoint(runs, tmp_path):
    before = snapshot(runs)
    line = one_line_error(run_script("scripts/train_ar.py", *TINY, "--names", str(runs / "names300.txt"),
                                     "--out", str(runs / "transformer.npz")))
    assert "already holds a Transformer denoiser ('transformer')" in line and "--overwrite" in line
    assert snapshot(runs) == before
    # --overwrite replaces it: the user said so
    target = tmp_path / "m.npz"
    target.write_bytes((runs / "transformer.npz").read_bytes())
    r = run_script("scripts/train_ar.py", *TINY, "--names", str(runs / "names300.txt"), "--num-samples", "0",
                   "--out", str(target), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert checkpoint.read_meta(str(target))["config"]["kind"] == "ar_transformer"


def interrupted(source, target, step):
    """Finished checkpoint `source` as a Ctrl-C at `step` would have left it: that step, and an optimizer state to
    resume from (a fresh AdamW's; a finished run's file keeps none)."""
    model, meta, _ = checkpoint.load(str(source))
    checkpoint.save(str(target), model, tl.optim.AdamW(model.parameters()), step, meta["extra"])
    return str(target)


def rewrite_meta(source, target, meta):
    with np.load(source) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(target, **arrays)
    return str(target)


@pytest.mark.scripts
def test_a_finished_run_keeps_its_weights_alone(runs):
    """No Adam moments, no average: it cannot be resumed, and they would triple the file (tests/test_checkpoint
    shows a mid-run checkpoint keeps both)."""
    for name in ("transformer.npz", "ar.npz"):
        with np.load(runs / name) as f:
            assert f.files and all(k.startswith("model/") or k == "meta" for k in f.files), f.files


@pytest.mark.scripts
def test_resume_continues_in_place_and_a_finished_run_is_not_resumed(runs, tmp_path):
    line = one_line_error(run_script("scripts/train_ar.py", "--resume", str(runs / "ar.npz")))
    assert "has finished its 4 steps" in line
    half = interrupted(runs / "ar.npz", tmp_path / "half.npz", 2)
    r = run_script("scripts/train_ar.py", "--resume", half, "--num-samples", "0")
    assert r.returncode == 0, r.stderr
    assert "trained 2 steps" in r.stdout and f"saved {half}" in r.stdout
    assert checkpoint.read_meta(half)["step"] == 4 and os.listdir(tmp_path) == ["half.npz"]


@pytest.mark.scripts
def test_a_run_that_stopped_early_is_not_resumed(runs, tmp_path):
    """Its checkpoint holds the best validated weights but the optimizer (and average) of the last step: a resume
    would continue from weights that were never the trained ones."""
    meta = checkpoint.read_meta(str(runs / "ar.npz"))
    meta["step"], meta["extra"]["stopped_early"] = 2, True
    stopped = rewrite_meta(runs / "ar.npz", tmp_path / "stopped.npz", meta)
    line = one_line_error(run_script("scripts/train_ar.py", "--resume", stopped))
    assert "stopped early at step 2" in line and "nothing to resume" in line


@pytest.mark.scripts
def test_resume_keeps_its_own_data(runs, tmp_path):
    half = interrupted(runs / "transformer.npz", tmp_path / "half.npz", 2)
    line = one_line_error(run_script("scripts/train.py", "--resume", half, "--names", DEFAULT_NAMES))
    assert "keeps its data" in line
    assert "keeps it" in one_line_error(run_script("scripts/train.py", "--resume", half, "--L", "12"))


# ----------------------------------------------------------------------------- 2. every tool checks the kind
@pytest.mark.scripts
def test_sample_takes_either_kind(runs):
    r = run_script("scripts/sample.py", "--checkpoint", str(runs / "ar.npz"), "--num", "6", "--template", "ma*")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert len(names) == 6 and all(n.startswith("ma") for n in names)
    r = run_script("scripts/sample.py", "--checkpoint", str(runs / "transformer.npz"), "--num", "6", "--template",
                   "ma*")
    assert r.returncode == 0 and all(n.startswith("ma") for n in r.stdout.split()), r.stderr


@pytest.mark.scripts
def test_workers_flag_errors_are_one_line(runs):
    """More workers than cores, or (training) than rows in a batch; a bad sampler option found in a worker."""
    many = str(os.cpu_count() + 1)
    for script in ("scripts/evaluate.py", "scripts/sample.py", "scripts/sampler_table.py"):
        assert "cores" in one_line_error(run_script(script, "--checkpoint", str(runs / "transformer.npz"),
                                                    "--workers", many))
    assert "more than --batch-size 1" in one_line_error(run_script("scripts/train.py", "--batch-size", "1",
                                                                   "--workers", "2", "--names", str(runs / "names300.txt"),
                                                                   "--out", str(runs / "never.npz")))
    line = one_line_error(run_script("scripts/sample.py", "--checkpoint", str(runs / "transformer.npz"), "--num",
                                     "300", "--workers", "2", "--top-p", "2"))
    assert "--top-p must be in (0, 1]" in line and not os.path.exists(runs / "never.npz")


@pytest.mark.scripts
@pytest.mark.parametrize("flags, says", [(["--template", "m__a"], "fixed prefix"), (["--template", "*a"], "prefix"),
                                         (["--order", "margin"], "--order is an option of the masked sampler"),
                                         (["--steps", "4"], "--steps"), (["--edit", "emma", "--positions", "1"],
                                                                         "--edit"),
                                         (["--forward", "emma"], "--forward")])
def test_sample_refuses_what_an_ar_model_cannot_do(runs, flags, says):
    assert says in one_line_error(run_script("scripts/sample.py", "--checkpoint", str(runs / "ar.npz"), *flags))


@pytest.mark.scripts
def test_tools_that_need_one_kind_say_so(runs):
    line = one_line_error(run_script("scripts/sampler_table.py", "--checkpoint", str(runs / "ar.npz")))
    assert "holds an AR Transformer" in line and "--ar-checkpoint" in line
    for script, flag in (("scripts/sampler_table.py", "--judge"), ("scripts/evaluate.py", "--ar-checkpoint"),
                         ("scripts/compare.py", "--ar-checkpoint"), ("scripts/compare.py", "--judge"),
                         ("scripts/judge.py", "--judge")):
        args = {"scripts/compare.py": ["--diffusion-checkpoint", str(runs / "transformer.npz")],
                "scripts/judge.py": [str(runs / "ar.npz")]}.get(script, ["--checkpoint", str(runs / "transformer.npz")])
        line = one_line_error(run_script(script, *args, flag, str(runs / "transformer.npz")))
        assert "holds a Transformer denoiser" in line and flag in line


@pytest.mark.scripts
def test_tools_use_the_average_of_a_mid_run_ema_checkpoint_and_a_resume_the_trained_weights(runs, tmp_path, capsys):
    """Only mid-run: a finished file written with its average (as runs before weights-only files were) keeps the
    weights it ended with, the best validated ones with --eval-every."""
    model, meta, _ = checkpoint.load(str(runs / "transformer.npz"))
    ema = tl.optim.ExponentialMovingAverage(model.parameters(), 0.99)
    trained = {k: v.copy() for k, v in model.state_dict().items()}
    for p in model.parameters():                                   # the average drifts away from the weights
        p.data += 1.0
    ema.update()
    model.load_state_dict(trained)
    path = str(tmp_path / "mid.npz")
    checkpoint.save(path, model, tl.optim.AdamW(model.parameters()), 2, meta["extra"], ema)
    used, _, _ = cli.load_checkpoint(path)
    assert "using its moving average" in capsys.readouterr().err
    for (name, w), s in zip(used.named_parameters(), ema.shadow):
        assert np.array_equal(w.data, s) and not np.array_equal(s, trained[name]), name
    resumed, _, _ = cli.read_checkpoint(path)
    assert all(np.array_equal(v, trained[k]) for k, v in resumed.state_dict().items())
    assert capsys.readouterr().err == ""
    finished = str(tmp_path / "finished.npz")
    checkpoint.save(finished, model, tl.optim.AdamW(model.parameters()), meta["extra"]["train"]["steps"],
                    meta["extra"], ema)
    used, _, _ = cli.load_checkpoint(finished)
    assert all(np.array_equal(v, trained[k]) for k, v in used.state_dict().items())
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def judge(runs):
    """An AR model trained as runs/ar.npz was, but with seed 1: an independent judge of both models."""
    path = runs / "judge.npz"
    r = run_script("scripts/train_ar.py", *TINY, "--seed", "1", "--names", str(runs / "names300.txt"),
                   "--num-samples", "0", "--out", str(path))
    assert r.returncode == 0, r.stderr
    return path


@pytest.mark.scripts
def test_judge_scores_every_models_samples_and_the_test_and_training_names(runs, judge, tmp_path):
    out = tmp_path / "judged.json"
    models = [str(runs / "transformer.npz"), str(runs / "ar.npz")]
    r = run_script("scripts/judge.py", "--judge", str(judge), *models, "--num", "40", "--json", str(out))
    assert r.returncode == 0, r.stderr
    judged = json.loads(out.read_text())
    assert [row["model"] for row in judged["rows"]] == models and judged["judge_seed"] == 1
    assert all(0 < row["judge_nll"] < 5 and 0 < row["own_nll"] < 5 and 0 <= row["novel"] <= 1
               and (row["novel"] == 0 or 0 < row["novel_judge_nll"] < 5) for row in judged["rows"])
    # the test names' row is the judge's own exact test NLL, which its trainer saved in the checkpoint
    assert judged["test_nll"] == pytest.approx(checkpoint.read_meta(str(judge))["extra"]["test"]["nll"], rel=1e-5)
    assert "| samples of | judge NLL | novel NLL | own NLL (entropy est.) |" in r.stdout
    assert "| training names | " in r.stdout and 0 < judged["train_nll"] < 5


@pytest.mark.scripts
def test_a_judge_never_scores_itself_or_an_ar_model_of_its_seed(runs, judge, tmp_path):
    line = one_line_error(run_script("scripts/judge.py", "--judge", str(judge), str(runs / "ar.npz"), str(judge)))
    assert "is the judge itself" in line
    twin = tmp_path / "twin.npz"                                  # another file, the same seed as the judge
    twin.write_bytes(judge.read_bytes())
    line = one_line_error(run_script("scripts/sampler_table.py", "--checkpoint", str(runs / "transformer.npz"),
                                     "--judge", str(judge), "--ar-checkpoint", str(twin)))
    assert "is an AR model trained with the judge's seed 1" in line
    line = one_line_error(run_script("scripts/compare.py", "--diffusion-checkpoint", str(runs / "transformer.npz"),
                                     "--judge", str(runs / "ar.npz"), "--seed", "0"))
    assert "trained with seed 0, as the AR model trained here would be" in line
    line = one_line_error(run_script("scripts/sampler_table.py", "--checkpoint", str(runs / "transformer.npz"),
                                     "--ar-checkpoint", str(runs / "ar.npz")))
    assert "needs --judge" in line


@pytest.mark.scripts
def test_evaluate_scores_an_ar_checkpoint(runs):
    r = run_script("scripts/evaluate.py", "--checkpoint", str(runs / "ar.npz"), "--num-samples", "20")
    assert r.returncode == 0, r.stderr
    assert "test NLL (exact)" in r.stdout and "own NLL" in r.stdout
    line = one_line_error(run_script("scripts/evaluate.py", "--checkpoint", str(runs / "ar.npz"), "--iw-orders", "4"))
    assert "--iw-orders bounds a denoiser's NLL" in line and "holds an AR model" in line


# ----------------------------------------------------------------------------- 3. the recorded names file
@pytest.mark.scripts
def test_evaluate_uses_the_recorded_names_and_says_when_they_change(runs, tmp_path):
    r = run_script("scripts/evaluate.py", "--checkpoint", str(runs / "transformer.npz"), "--num-samples", "10")
    assert r.returncode == 0, r.stderr
    assert f"names: 300 from {runs / 'names300.txt'}" in r.stdout and "note:" not in r.stderr
    other = tmp_path / "names.txt"
    other.write_text((runs / "names300.txt").read_text() + "zed\n")
    r = run_script("scripts/evaluate.py", "--checkpoint", str(runs / "transformer.npz"), "--num-samples", "10",
                   "--names", str(other))
    assert r.returncode == 0 and r.stderr.count("note:") == 1 and "not on" in r.stderr, r.stderr
    # the recorded file changed, or is gone: one line, exit 2
    moved = other
    meta = checkpoint.read_meta(str(runs / "transformer.npz"))
    meta["extra"]["data"]["names"] = str(moved)
    changed = rewrite_meta(runs / "transformer.npz", tmp_path / "changed.npz", meta)
    assert "has changed since" in one_line_error(run_script("scripts/evaluate.py", "--checkpoint", changed))
    meta["extra"]["data"]["names"] = str(tmp_path / "gone.txt")
    gone = rewrite_meta(runs / "transformer.npz", tmp_path / "gone.npz", meta)
    assert "is gone" in one_line_error(run_script("scripts/sampler_table.py", "--checkpoint", gone))


def test_a_moved_checkpoint_finds_names_txt_by_its_contents(tmp_path, capsys):
    meta = dict(extra=dict(data=dict(names="/elsewhere/names.txt", sha256=load_names(DEFAULT_NAMES).sha256)))
    assert cli.recorded_names("m.npz", meta) == DEFAULT_NAMES
    assert "has its contents" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4. outputs checked first
@pytest.mark.scripts
@pytest.mark.parametrize("flags, says", [
    (lambda d: ["--out", str(d)], "is a folder"),
    (lambda d: ["--out", str(d / "names300.txt" / "m.npz")], "is a file, not a folder"),
    (lambda d: ["--out", str(d / "new.npz"), "--json", str(d)], "--json"),
    (lambda d: ["--out", str(d / "names300.txt")], "not a checkpoint"),
    (lambda d: ["--out", str(d / "new.npz"), "--json", str(d / "ar.npz")], "figures never replace a model"),
    (lambda d: ["--out", str(d / "new.npz"), "--json", str(d / "new.npz")], "also the --out checkpoint"),
])
def test_bad_outputs_stop_before_training(runs, flags, says):
    before = snapshot(runs)
    r = run_script("scripts/train.py", *TINY, *flags(runs))
    assert says in one_line_error(r) and "step" not in r.stdout
    assert snapshot(runs) == before


@pytest.mark.scripts
def test_each_trainer_has_its_feed_forward_width_and_the_flag_reaches_the_model(runs, tmp_path):
    """train.py's denoiser narrows the blocks' feed-forward to 1 x dim, train_ar.py keeps GPT-2's 4 x dim (each its
    best on the validation split); --mlp-ratio builds and saves what it says."""
    assert checkpoint.read_meta(str(runs / "transformer.npz"))["config"]["mlp_ratio"] == 1
    assert checkpoint.read_meta(str(runs / "ar.npz"))["config"]["mlp_ratio"] == 4
    out = tmp_path / "m.npz"
    r = run_script("scripts/train.py", *TINY, "--names", str(runs / "names300.txt"), "--num-samples", "0",
                   "--mlp-ratio", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    model = checkpoint.load(str(out))[0]
    assert model.config["mlp_ratio"] == 3 and model.blocks[0].mlp.fc.weight.shape == (3 * 64, 64)


@pytest.mark.scripts
def test_output_folders_are_created(runs, tmp_path):
    out, js = tmp_path / "a" / "b" / "m.npz", tmp_path / "c" / "figures.json"
    r = run_script("scripts/train_ar.py", *TINY, "--names", str(runs / "names300.txt"), "--num-samples", "0",
                   "--out", str(out), "--json", str(js))
    assert r.returncode == 0, r.stderr
    assert out.exists() and json.loads(js.read_text())["model"]["kind"] == "ar_transformer"


def test_a_failed_save_is_rescued(tmp_path, capsys):
    written = []

    def write(path):
        if path == str(tmp_path / "m.npz"):
            raise OSError(28, "No space left on device")
        written.append(path)
    path = cli.save_or_rescue(str(tmp_path / "m.npz"), write)
    assert written == [path] and path != str(tmp_path / "m.npz") and os.path.basename(path).endswith("m.npz")
    assert f"saved to {path} instead" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 5. --L has a range
@pytest.mark.scripts
def test_sequence_length_has_a_range_with_a_reason(runs):
    assert "at most 64" in one_line_error(run_script("scripts/train.py", "--L", "1000"))
    line = one_line_error(run_script("scripts/train.py", "--L", "40", "--names", str(runs / "names300.txt")))
    assert "far above the longest name" in line


# ----------------------------------------------------------------------------- 6. rough edges
@pytest.mark.scripts
def test_flag_errors_are_one_line_with_a_pointer_to_help():
    for script in ("scripts/train.py", "scripts/evaluate.py", "scripts/sample.py", "scripts/sampler_table.py",
                   "scripts/compare.py"):
        assert one_line_error(run_script(script, "--no-such-flag")).endswith("(see --help)")


@pytest.mark.scripts
def test_num_samples_0_trains_and_does_not_sample(runs):
    r = run_script("scripts/train_minimal.py", *TINY, "--names", str(runs / "names300.txt"), "--num-samples", "0",
                   "--out", str(runs / "no_samples.npz"))
    assert r.returncode == 0 and "saved" in r.stdout and "T=" not in r.stdout, r.stderr
    os.remove(runs / "no_samples.npz")


@pytest.mark.scripts
def test_ctrl_c_while_sampling_is_one_line_and_exit_130(runs, tmp_path):
    p = subprocess.Popen([sys.executable, "scripts/train_ar.py", *TINY, "--names", str(runs / "names300.txt"),
                          "--num-samples", "200000", "--out", str(tmp_path / "m.npz")], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("saved"):                      # trained and saved: now it samples
            p.send_signal(signal.SIGINT)
            break
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip() == f"interrupted (Ctrl-C); {tmp_path / 'm.npz'} holds step 4"


@pytest.mark.scripts
def test_ctrl_c_while_evaluating_is_one_line_and_exit_130(runs):
    p = subprocess.Popen([sys.executable, "scripts/evaluate.py", "--checkpoint", str(runs / "transformer.npz"),
                          "--names", DEFAULT_NAMES], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for line in p.stdout:
        if line.startswith("model:"):                     # the test split is being scored
            p.send_signal(signal.SIGINT)
            break
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C)"


@pytest.mark.scripts
def test_non_ascii_names_are_shown_as_text(tmp_path):
    path = tmp_path / "n.txt"
    path.write_bytes("anna\nJosé\n".encode())
    line = one_line_error(run_script("scripts/train.py", "--names", str(path)))
    assert "'José'" in line and "\\x" not in line


# ----------------------------------------------------------------------------- 7. one checkpoint convention
DEFAULT_OUTS = {"train.py": "runs/transformer.npz", "train_ar.py": "runs/ar.npz", "train_minimal.py": "runs/mlp.npz",
                "train_pure.py": "runs/skip_mlp.npz"}


def test_every_trainer_writes_the_conventional_path():
    for script, out in DEFAULT_OUTS.items():
        source = open(os.path.join(ROOT, "scripts", script)).read()
        assert f'out="{out}"' in source and f"save {out}" in source, script
    assert cli.trainer_parser("x").parse_args([]).out is None          # resolved per script and --resume


def commands(text):
    """The shell commands of a document or docstring, joined across backslash line ends."""
    return re.findall(r"python (scripts/\w+\.py[^\n`#\\]*(?:\\\n[^\n`#\\]*)*)", text)


@pytest.mark.parametrize("doc", ["README.md", "docs/diffusion.md", "scripts/sample.py", "scripts/evaluate.py",
                                 "scripts/sampler_table.py", "scripts/train.py", "scripts/train_ar.py",
                                 "scripts/compare.py"])
def test_documented_commands_read_checkpoints_an_earlier_command_writes(doc):
    """Every checkpoint a documented command reads (--checkpoint, --resume, ...) is a trainer's default path or an
    --out of a command shown before it, or a model that ships in models/; a command without --checkpoint reads
    runs/transformer.npz."""
    shipped = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "models", "**", "*.npz"), recursive=True)}
    written = set(DEFAULT_OUTS.values()) | shipped
    for command in commands(open(os.path.join(ROOT, doc)).read()):
        for path in re.findall(r"--(?:\w+-)?checkpoint (\S+)|--resume (\S+)", command):
            path = "".join(path)
            assert path in written, f"{doc}: {command!r} reads {path}, which no earlier command writes"
        written.update(re.findall(r"--out (\S+\.npz)", command))
        written.update(f"{prefix}_{k}.npz" for prefix in re.findall(r"compare\.py.*--out (\S+)", command)
                       for k in ("ar", "diffusion"))


# ----------------------------------------------------------------------------- 8. flag values
@given(flag=st.sampled_from(["--steps", "--batch-size", "--lr", "--L", "--warmup", "--weight-decay", "--k-power"]),
       value=st.text(max_size=8) | st.integers(-5, 5).map(str) | st.floats(allow_nan=True).map(str))
@example(flag="--lr", value="nan")
@example(flag="--lr", value="inf")
@example(flag="--steps", value="1e3")
def test_cli_values_parse_or_exit_2(flag, value):
    """Whatever the user types: either a valid, in-range value comes back, or argparse exits with code 2
    (after printing its one-line 'error: argument ...' message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = trainer_parser("test", k_power=-0.5).parse_args([flag, value])
    except SystemExit as e:
        assert e.code == 2 and "error: argument" in err.getvalue()
        return
    parsed = getattr(args, flag[2:].replace("-", "_"))
    if flag in ("--steps", "--batch-size", "--L", "--lr"):
        assert parsed > 0
    elif flag == "--k-power":
        assert -4 <= parsed <= 4
    else:
        assert parsed >= 0


def test_only_the_denoisers_trainers_have_k_power():
    assert trainer_parser("x").parse_args([]).__dict__.get("k_power", "absent") == "absent"
    assert trainer_parser("x", k_power=-0.5).parse_args([]).k_power is None          # resolved by cli.k_power


@pytest.mark.parametrize("flags, k_power", [(["--objective", "exact_k"], -0.5), (["--objective", "nelbo"], 0.0),
                                            (["--objective", "exact_k", "--k-power", "0"], 0.0),
                                            (["--objective", "simple", "--k-power", "0"], 0.0),
                                            (["--objective", "nelbo", "--k-power", "-1"], None)])
def test_k_power_is_the_scripts_default_for_exact_k_and_refused_with_another_objective(flags, k_power, capsys):
    args = trainer_parser("test", k_power=-0.5).parse_args(flags)
    if k_power is None:
        with pytest.raises(SystemExit) as e:
            cli.k_power(args)
        assert e.value.code == 2 and "--k-power shapes the mask counts of --objective exact_k" in capsys.readouterr().err
    else:
        cli.k_power(args)
        assert args.k_power == k_power


@pytest.mark.scripts
def test_compare_checks_its_flags_before_training(runs):
    assert "--num-samples must be at least 1" in one_line_error(run_script("scripts/compare.py", "--num-samples", "0"))
    line = one_line_error(run_script("scripts/compare.py", "--diffusion-checkpoint", str(runs / "transformer.npz"),
                                     "--L", "12"))
    assert "differs from the given checkpoint's L=16" in line
    line = one_line_error(run_script("scripts/compare.py", "--dim", "66", "--heads", "4", "--names",
                                     str(runs / "names300.txt"), "--out", str(runs / "never")))
    assert "dim 66 is not divisible by num_heads 4" in line
