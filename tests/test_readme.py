"""The README stays true: its file table matches the code, the generated sections of its pages are filled in,
and every command it shows runs, in the order shown, on a copy of the checkout (its Python snippets run in
tests/test_docs.py, with the docs')."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "docs/results.md", "docs/diffusion.md"]       # where update_readme.py writes
README = open(os.path.join(ROOT, "README.md")).read()


def section(name):
    for page in PAGES:
        match = re.search(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->",
                          open(os.path.join(ROOT, page)).read(), re.S)
        if match:
            return match.group(1).strip()
    raise AssertionError(f"no page has a generated section {name!r}")


@pytest.mark.scripts
def test_file_table_matches_the_code():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "update_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["results", "temperature", "contrast", "compare", "compare_long", "compare_long60k",
                                  "objectives", "long", "bench", "sampler", "tune", "tune_ar", "judged",
                                  "compare_wide", "crossover", "compare_crossover",
                                  "compare_width192", "compare_long200k"])
def test_generated_sections_are_filled(name):
    body = section(name)
    assert body.startswith(("|", "**")) and body.count("\n") >= 2, \
        f"run python scripts/update_readme.py ({name} is empty)"


@pytest.mark.parametrize("name, says", [("pictures", "reverse process"), ("schedule_plot", "cosine alpha(t)"),
                                        ("curves", "AR: training NLL"), ("lengths", "plain confidence order"),
                                        ("unmasking", "revealed at")])
def test_pictures_are_generated(name, says):
    body = section(name)
    assert body.startswith("```") and says in body, f"run python scripts/update_readme.py ({name})"


def test_crossover_verdict_weighs_the_gap_by_its_paired_se(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "scripts"))
    from update_readme import versus_ar
    best_ar, bound = (1.87, "wide/ar"), dict(nll=1.8711, gap=dict(nll=0.0011, se=0.003))
    assert versus_ar(bound, "models/wide/ar.npz", best_ar, "it") == \
        "above it by 0.0011 nats/char (+0.1%, paired se 0.0030): level with it, within twice the paired se."
    assert versus_ar(dict(bound, nll=1.86), "./models/wide/ar.npz", best_ar, "it") == \
        "below it by 0.0100 nats/char (-0.5%, paired se 0.0030): the crossover is reached."
    assert versus_ar(dict(bound, nll=1.88), "models/wide/ar.npz", best_ar, "it").endswith(
        "(+0.5%, paired se 0.0030): no crossover at this compute.")
    # paired with another AR: that se is not this gap's, so none is given
    assert versus_ar(bound, "models/long60k/ar.npz", best_ar, "it") == \
        "above it by 0.0011 nats/char (+0.1%): no crossover at this compute."


def test_each_shipped_command_spells_out_its_models_shape():
    """The trainer commands rebuilt from models/*.json make those models even after the scripts' defaults change:
    every model setting is a flag with the JSON's value (a JSON without mlp_ratio predates it: GPT-2's 4)."""
    commands = [line for line in section("shipped_commands").replace("\\\n    ", " ").splitlines()
                if line.startswith("python scripts/")]
    assert commands
    for command in commands:
        words = command.split()[2:]
        flags = dict(zip(words[::2], words[1::2]))
        with open(os.path.join(ROOT, flags["--json"])) as f:
            model = json.load(f)["model"]
        for key in ("dim", "layers", "heads", "mlp_ratio"):
            assert flags["--" + key.replace("_", "-")] == str(model.get(key, 4)), (command, key)


# what each script needs to finish in seconds: a few steps, few names, a loose NELBO
SMALL = {"train.py": ["--steps", "20", "--num-samples", "20", "--log-every", "10"],
         "train_ar.py": ["--steps", "20", "--num-samples", "20", "--log-every", "10"],
         "evaluate.py": ["--num-samples", "50", "--target-se", "1"],
         "compare.py": ["--num-samples", "30"],
         "sampler_table.py": ["--num", "30", "--steps", "2,16", "--variants", "max_prob,random"],
         "judge.py": ["--num", "30"]}


def shown_commands():
    """The `python scripts/...` commands of the README's ```bash blocks, in order (the main job's included)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [re.sub(r"^.*?&& ", "", line) for line in lines if "python scripts/" in line]


@pytest.mark.scripts
def test_every_command_the_readme_shows_runs_in_order(tmp_path):
    """On a copy of the checkout's files (git's, as a fresh clone has them, no runs/), with small --steps."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    commands = shown_commands()
    assert commands[0] == "python scripts/train.py" and len(commands) >= 8, commands
    for command in commands:
        args = [a.strip('"') for a in command.split()[1:]]
        script = os.path.basename(args[0])
        r = subprocess.run([sys.executable, *args, *SMALL.get(script, [])], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, f"{command}\n{r.stderr[-2000:]}"
