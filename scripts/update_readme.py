"""Regenerate the generated sections of README.md, docs/results.md and docs/diffusion.md from the project's own
scripts (no hand-pasted figures).

    python scripts/update_readme.py             # train the default models and the AR (~20 min), rewrite everything
    python scripts/update_readme.py --files     # only the file table with line counts (instant)
    python scripts/update_readme.py --check     # change nothing; exit 1 if the file table is stale
    python scripts/update_readme.py --bench     # also rerun scripts/bench.py for the speed table (~3 min)
    python scripts/update_readme.py --shipped   # only the sections of the models in models/ (no training)

Sections live between <!-- generated:NAME --> and <!-- /generated:NAME --> markers, each in one of PAGES.
Training runs write
their checkpoints and figures (JSON) to runs/readme/, a folder of their own that each regeneration overwrites (runs/
is kept out of git); --reuse formats existing JSON again without retraining.
"""
import argparse
import ast
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = [README, os.path.join(ROOT, "docs", "results.md"), os.path.join(ROOT, "docs", "diffusion.md")]
RUNS = os.path.join(ROOT, "runs", "readme")        # this script's own runs (the README's commands use runs/)
JUDGE = os.path.join("runs", "readme", "judge.npz")  # the AR model, seed 1, scoring samples (relative: it is printed)
SHIPPED_JUDGE = os.path.join("models", "judge.npz")  # the stronger shipped judge (20,000 steps, seed 1)
TRAINERS = [("train_minimal", "2-layer MLP"), ("train_pure", "3-layer MLP + skip"), ("train", "Transformer (default)")]
OBJECTIVES = [("exact_k", "exact_k, q(k) ∝ k^-0.5 (default)"), ("exact_k_uniform", "exact_k, uniform k"),
              ("nelbo", "nelbo, cosine schedule"),
              ("nelbo_linear", "nelbo, linear schedule"),
              ("simple", "simple"), ("time_input", "nelbo, cosine, with time input")]


def file_table():
    """Markdown table: every .py of the three packages with its line count and docstring's first line."""
    rows = ["| file | lines | what it is |", "|---|---:|---|"]
    total = {}
    for folder in ("tinygrad_lite", "diffusion", "scripts"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if not name.endswith(".py"):
                continue
            path = os.path.join(ROOT, folder, name)
            with open(path) as f:
                source = f.read()
            lines = source.count("\n")
            paragraph = (ast.get_docstring(ast.parse(source)) or "").strip().split("\n\n")[0]
            what = re.split(r"(?<=\.)\s", " ".join(paragraph.split()))[0]   # its first sentence
            if name == "__init__.py" and not what:
                continue
            rows.append(f"| `{folder}/{name}` | {lines} | {what} |")
            total[folder] = total.get(folder, 0) + lines
    rows.append("| **total** | " + ", ".join(f"{k} {v}" for k, v in total.items()) + " | |")
    return "\n".join(rows)


def replace_section(text, name, body):
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"update_readme: README.md has no section '{name}'")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def run_trainer(script, json_path, *flags):
    print(f"running scripts/{script}.py {' '.join(flags)} ...", flush=True)
    out = json_path.replace(".json", ".npz")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"{script}.py"), "--json", json_path,
                    "--out", out, "--overwrite", "--log-every", "100", *flags], check=True)
    print(f"scripts/{script}.py took {time.perf_counter() - t0:.0f} s wall", flush=True)


def objective_flags(name):
    return {"exact_k_uniform": ["--objective", "exact_k", "--k-power", "0"],
            "nelbo_linear": ["--objective", "nelbo", "--schedule", "linear"],
            "time_input": ["--objective", "nelbo", "--time-input"]}.get(name, ["--objective", name])


def objectives_table(runs):
    rows = ["| objective | test NELBO (nats/char) | train time | training NELBO every 1,000 steps |",
            "|---|---:|---:|---|"]
    for label, r in runs:
        curve = ", ".join(f"{v:.3f}" for step, v in r["history"] if step % 1000 == 0)
        rows.append(f"| {label} | **{r['test']['nelbo']:.3f}** ± {r['test']['se']:.3f} | "
                    f"{r['train_seconds']:.0f} s | {curve} |")
    return "\n".join(rows)


def compare_section(ar, diffusion, json_path, tables=("Test likelihood", "Samples", "Diffusion quality",
                                                      "Learning curves"), flags=()):
    """scripts/compare.py on two checkpoints (and its `flags`), their samples scored by the judge: the tables it
    prints whose titles start as in `tables`."""
    print(f"running scripts/compare.py on {ar} and {diffusion} ...", flush=True)
    out = subprocess.run([sys.executable, os.path.join("scripts", "compare.py"), "--ar-checkpoint", ar,
                          "--diffusion-checkpoint", diffusion, "--judge", JUDGE, "--json", json_path, *flags],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout     # paths print relative
    sections = []
    for chunk in out.split("\n## ")[1:]:                     # "<title>\n\n<table>\n..."
        title, body = chunk.split("\n", 1)
        if title.startswith(tables):
            lines = [line for line in body.strip("\n").splitlines() if not line.startswith(("==", "wrote "))]
            sections.append(f"**{title}**\n\n" + "\n".join(lines))
    return "\n\n".join(sections)


def contrast_table(path):
    """The classic words-only contrast of AR and diffusion, each row with its measured figures from compare.py's
    JSON (default budget): calls, likelihood, diversity, length and the few-steps weak spot (speed: bench.py's
    table, measured in one run)."""
    sys.path.insert(0, ROOT)
    from diffusion.evaluation import markdown_table
    with open(path) as f:
        c = json.load(f)
    temp = c["settings"]["sweep_temperature"]
    ar, dif = (next(q for q in c["samples"][k] if q["temperature"] == temp) for k in ("AR", "diffusion"))
    by_s = {q["steps"]: q for q in c["sampling_steps"]["diffusion"]}
    lo, hi = by_s[min(by_s)], by_s[max(by_s)]

    def at_s(key, fmt):                            # "<figure> at S = 16, <figure> at S = 1"
        return f"{hi[key]:{fmt}} at S = {hi['steps']}, {lo[key]:{fmt}} at S = {lo['steps']}"
    lik = {k: v["likelihood"] for k, v in c["info"].items()}
    exact, nelbo = lik["AR"]["nll"]["nll"], lik["diffusion"]["nelbo"]["nll"]
    best = min(f["nll"] for k, f in lik["diffusion"].items() if k != "nelbo")
    rows = [
        ["generation order", "fixed: left to right, one token per step", "any order: the most confident blanks first"],
        [f"network calls a name goes through (T={temp:g})", f"one per token: {ar['network_calls']}",
         f"S steps, chosen at sampling time: {at_s('network_calls', 'd')}"],
        ["what the network sees", "only the tokens to the left (causal mask)",
         "the whole row, blanks included (bidirectional)"],
        ["training signal per name", "every position, every step",
         "only the masked positions, a random fraction of the row"],
        ["test likelihood (nats/char)", f"exact: {exact:.3f}", f"an upper bound: NELBO {nelbo:.3f}; the best "
         f"fixed-order sampler's exact NLL {best:.3f} ({100 * (best / exact - 1):+.1f}% vs the AR)"],
        [f"samples at T={temp:g}: novel, unique", f"{100 * ar['novel']:.1f}%, {100 * ar['unique']:.1f}%",
         f"{100 * dif['novel']:.1f}%, {100 * dif['unique']:.1f}%"],
        ["length", f"stops when it writes the end token (length TV {ar['length_tv']:.3f})",
         f"a fixed canvas of L; the length is drawn first, from the model (length TV {dif['length_tv']:.3f})"],
        ["filling a gap (`ma_ia`)", "needs retraining or tricks", "native: mask the gap and run the sampler"],
        ["typical weak spot", "cannot revise an early mistake", "tokens revealed in the same step are drawn "
         f"independently: generative NLL {at_s('generative_nll', '.2f')}"],
    ]
    return markdown_table(["", "autoregressive (makemore, nanoGPT)", "masked diffusion (this project)"], rows)


def sampler_section():
    """scripts/sampler_table.py on the default model, scored by the judge: each variant's generative NLL at
    S = 2, 4, 8, 16 and its diversity at S = 16, beside the AR's samples and the test names; then the default
    sampler's own-distribution figure, the floor under its generative NLL."""
    print("running scripts/sampler_table.py ...", flush=True)
    path = os.path.join(RUNS, "sampler_table.json")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sampler_table.py"), "--checkpoint",
                    os.path.join(RUNS, "train.npz"), "--ar-checkpoint", os.path.join(RUNS, "train_ar.npz"),
                    "--judge", JUDGE, "--json", path], check=True, capture_output=True, cwd=ROOT)
    with open(path) as f:
        table = json.load(f)
    rows, own = table["rows"], table["own_distribution"]
    if own is None:
        raise SystemExit("update_readme: sampler_table.py gave no own-distribution figure (it needs the max_prob "
                         "variant at S = L and temperature 1)")
    out = ["| sampler | generative NLL at S = 2, 4, 8, 16 | novel | unique | length TV | calls a name | what it is |",
           "|---|---|---:|---:|---:|---:|---|"]
    for ref in rows[:2]:
        out.append(f"| {ref['variant']} | {ref['generative_nll']:.3f} | {100 * ref['novel']:.1f}% | "
                   f"{100 * ref['unique']:.1f}% | {ref['length_tv']:.3f} | {ref['calls']:.1f} | reference |")
    for name in dict.fromkeys(r["variant"] for r in rows[2:]):          # the variants, in the script's order
        cells = [r for r in rows if r["variant"] == name]
        last, nll, what = cells[-1], ", ".join(f"{r['generative_nll']:.3f}" for r in cells), cells[-1]["about"]
        out.append(f"| `{name}` | {nll} | {100 * last['novel']:.1f}% | "
                   f"{100 * last['unique']:.1f}% | {last['length_tv']:.3f} | {last['calls']:.1f} | {what} |")
    out.append("\n" + textwrap.fill(
        f"The default sampler's own distribution q (`max_prob` at S = L = {table['L']}): its samples score "
        f"**{own['samples']:.3f}** nats/char under q, an estimate of q's entropy, and the test names "
        f"{own['test']:.3f}. Any model's expected NLL of samples drawn from q is at least q's entropy (Gibbs' "
        f"inequality), so the default sampler's generative NLL cannot fall below about {own['samples']:.2f}; "
        f"the AR's samples score {rows[0]['generative_nll']:.3f}.", width=110))
    return "\n".join(out)


def judged_section(checkpoints):
    """scripts/judge.py with the shipped judge (models/judge.npz, an AR model trained with seed 1) on each
    checkpoint that exists: its samples' NLL under the judge (all of them, and the novel ones) beside their entropy
    estimate and diversity, then the test and training names' NLL under the judge."""
    present = [c for c in checkpoints if os.path.exists(os.path.join(ROOT, c))]
    print(f"running scripts/judge.py on {', '.join(present)} ...", flush=True)
    out = subprocess.run([sys.executable, os.path.join("scripts", "judge.py"), "--judge", SHIPPED_JUDGE, *present,
                          "--json", os.path.join(RUNS, "judged.json")],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout      # paths print relative
    with open(os.path.join(RUNS, "judged.json")) as f:
        rows = json.load(f)["rows"]
    table = out.split("\n## ", 1)[1].split("\n", 1)[1].split("\nwrote ", 1)[0].strip()

    def gaps(key):
        best_ar = min(r[key] for r in rows if r["config"]["kind"] == "ar_transformer")
        return ", ".join(f"`{r['model']}` {r[key] - best_ar:+.3f}" for r in rows
                         if r["config"]["kind"] != "ar_transformer")
    return table + (f"\n\nEach denoiser's judge NLL minus the lowest of the AR models': {gaps('judge_nll')} "
                    f"nats/char; over the novel samples only: {gaps('novel_judge_nll')}.")


def tune_section(path):
    """scripts/tune.py --show: the table of its committed sweep (not rerun here: it is many trainings)."""
    out = subprocess.run([sys.executable, os.path.join("scripts", "tune.py"), "--json", path, "--show"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return out.split("\n## ", 1)[1].split("\n", 1)[1].strip()


def pictures_section():
    """The forward process on 'maria' and one reverse trajectory of the default model (runs/readme/train.npz)."""
    sys.path.insert(0, ROOT)
    from diffusion import checkpoint
    from diffusion.sampler import sample
    from diffusion.schedule import CosineSchedule
    from diffusion.visualize import forward_view, reverse_view
    model = checkpoint.load(os.path.join(RUNS, "train.npz"))[0]
    forward = forward_view("maria", CosineSchedule(), model.L, times=(0.0, 0.25, 0.5, 0.75, 1.0), seed=1)
    reverse = reverse_view(sample(model, 1, steps=6, seed=3, keep_trajectory=True), rows=1)
    return ("```\nforward process: each position masked with probability mask_rate(t)\n" + "\n".join(forward) +
            "\n\nreverse process: the default Transformer, S = 6 steps (step 0 draws the length)\n" +
            "\n".join(line for line in reverse if line.strip()) + "\n```")


def schedule_plot():
    """alpha(t) of both schedules, and their ELBO weights w(t) (clipped at 20: both grow without bound as t -> 0)."""
    sys.path.insert(0, ROOT)
    import numpy as np
    from diffusion.charts import line_plot
    from diffusion.schedule import CosineSchedule, LinearSchedule
    cosine, linear = CosineSchedule(), LinearSchedule()
    t = np.linspace(0.0, 1.0, 401)
    alpha = line_plot(t, {"cosine alpha(t)": cosine.alpha(t), "linear alpha(t) = 1 - t": linear.alpha(t)},
                      height=10)
    t = t[4:]                                                # from t = 0.01
    weight = line_plot(t, {"cosine w(t)": cosine.weight(t), "linear w(t) = 1/t": linear.weight(t)}, height=10,
                       y_range=(0, 20))
    return "```\n" + "\n".join(alpha) + "\n\n" + "\n".join(weight) + "\n```"


def curves_plot(diffusion_run, ar_json):
    """The training curves (mean training figure per 100 steps) of the default Transformer denoiser and the AR
    baseline, from their JSON (the shorter run's curve stops at its last step)."""
    sys.path.insert(0, ROOT)
    from diffusion.charts import line_plot
    with open(ar_json) as f:
        ar_run = json.load(f)
    steps = [step for step, _ in max(diffusion_run["history"], ar_run["history"], key=len)]
    curves = {"diffusion: training NELBO": [v for _, v in diffusion_run["history"]],
              "AR: training NLL": [v for _, v in ar_run["history"]]}
    return "```\n" + "\n".join(line_plot(steps, curves, height=12)) + "\n```\n\nnats/char against the step " \
        f"(each point the mean over the {steps[0]} steps before it)."


def lengths_section(num=1000, steps=4):
    """Length histograms: the test names, the default sampler (length drawn first) and the plain confidence
    order (length="joint"), 1,000 names each from the default model (runs/readme/train.npz) at S = 4, where
    a step reveals several positions at once."""
    sys.path.insert(0, ROOT)
    import numpy as np
    from diffusion import checkpoint
    from diffusion.charts import histogram
    from diffusion.data import NamesData, decode
    from diffusion.evaluation import sample_chunked
    model = checkpoint.load(os.path.join(RUNS, "train.npz"))[0]
    test = [decode(row) for row in NamesData.load().test]
    drawn = {"test names": test,
             "length first (default)": [decode(r) for r in sample_chunked(model, num, seed=0, steps=steps).tokens],
             "plain confidence order": [decode(r) for r in sample_chunked(model, num, seed=0, steps=steps,
                                                                          length="joint").tokens]}
    bins = list(range(1, 13)) + ["13+"]
    series = {}
    for label, names in drawn.items():
        counts = np.bincount(np.minimum([len(n) for n in names], 13), minlength=14)[1:]
        series[label] = counts / max(len(names), 1)
    return "```\n" + "\n".join(histogram(bins, series, width=18)) + "\n```"


def unmasking_section():
    """Two names from the default model (runs/readme/train.npz) revealed step by step, S = 8."""
    sys.path.insert(0, ROOT)
    from diffusion import checkpoint
    from diffusion.sampler import sample
    from diffusion.visualize import reverse_view
    model = checkpoint.load(os.path.join(RUNS, "train.npz"))[0]
    view = reverse_view(sample(model, 2, steps=8, seed=5, keep_trajectory=True), rows=2)
    return "```\n" + "\n".join(line for line in view if line.strip()) + "\n```"


def refresh_long_samples(path):
    """The long run is not retrained here; its samples are drawn again from its checkpoint with the current sampler,
    so a sampler change reaches this table without retraining. Rewrites the JSON's sweep."""
    sys.path.insert(0, ROOT)
    from diffusion import checkpoint
    from diffusion.cli import SWEEP
    from diffusion.data import NamesData
    from diffusion.evaluation import sample_quality
    with open(path) as f:
        run = json.load(f)
    model = checkpoint.load(path.replace(".json", ".npz"))[0]
    run["sweep"] = [sample_quality(model, NamesData.load(), t, 1000, model.L, run["train"]["seed"]) for t in SWEEP]
    with open(path, "w") as f:
        json.dump(run, f, indent=1)
    return run


def long_table(r):
    t1 = next(s for s in r["sweep"] if s["temperature"] == 1.0)
    curve = ", ".join(f"{step // 1000}k: {v:.3f}" for step, v in r["history"] if step % 5000 == 0)
    return (f"| steps x batch | objective | train time | test NELBO (nats/char) | novel | unique | length TV |\n"
            f"|---:|---|---:|---:|---:|---:|---:|\n"
            f"| {r['train']['steps']} x {r['train']['batch_size']} | {r['train']['objective']} | "
            f"{r['train_seconds'] / 60:.0f} min | "
            f"**{r['test']['nelbo']:.3f}** ± {r['test']['se']:.3f} | {100 * t1['novel']:.1f}% | "
            f"{100 * t1['unique']:.1f}% | {t1['length_tv']:.3f} |\n\nTraining NELBO along the way: {curve}. "
            f"Names at T=1.0: {' '.join(t1['examples'][:12])}")


def results_table(runs):
    rows = ["| model | parameters | steps x batch | train time | test NELBO (nats/char) | novel | unique | "
            "length TV | samples at T=1.0 |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (script, label), r in runs:
        t1 = next(s for s in r["sweep"] if s["temperature"] == 1.0)
        rows.append(f"| {label} (`scripts/{script}.py`) | {r['parameters']:,} | {r['train']['steps']} x "
                    f"{r['train']['batch_size']} | {r['train_seconds']:.0f} s | **{r['test']['nelbo']:.3f}** ± "
                    f"{r['test']['se']:.3f} | {100 * t1['novel']:.1f}% | {100 * t1['unique']:.1f}% | "
                    f"{t1['length_tv']:.3f} | {' '.join(t1['examples'][:6])} |")
    unigram = runs[0][1]["unigram"]
    rows.append(f"| unigram baseline (letter frequencies) | 27 | - | - | {unigram:.3f} | | | | |")
    return "\n".join(rows) + f"\n\nMeasured on {platform.machine()} with {os.cpu_count()} cores, Python " \
                             f"{platform.python_version()}."


def sweep_table(run):
    rows = ["| temperature | novel | unique | length TV | mean length | names |", "|---:|---:|---:|---:|---:|---|"]
    for s in run["sweep"]:
        rows.append(f"| {s['temperature']} | {100 * s['novel']:.1f}% | {100 * s['unique']:.1f}% | "
                    f"{s['length_tv']:.3f} | {s['mean_length']:.2f} | {' '.join(s['examples'][:10])} |")
    return "\n".join(rows)


def bench_table():
    """The speed table, exactly as scripts/bench.py prints it (run on a quiet machine)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--checkpoint",
                          os.path.join(RUNS, "train.npz")], check=True,
                         capture_output=True, text=True).stdout
    machine, table = out.split("\n", 1)
    return f"{table.strip()}\n\n{machine.replace('machine: ', 'Measured on: ')}."


def shipped(*files):
    """Whether every one of `files` (paths under models/) ships in this checkout."""
    return all(os.path.exists(os.path.join(ROOT, "models", f)) for f in files)


CROSSOVER = [("long60k/ar", "long60k/compare.json"), ("long60k/diffusion", "long60k/compare.json"),
             ("wide/ar", "wide/compare.json"), ("wide/diffusion", "wide/compare.json"),
             ("crossover/ar", None), ("crossover/diffusion", "crossover/compare.json"),
             ("width192/diffusion", "width192/compare.json"), ("long200k/diffusion", "long200k/compare.json"),
             ("judge", None)]


# the denoisers past 60,000 steps or past width 128, each with the random orders K of its bound on the test names
# (K x L network passes a name): 32, and 128 for the run that reached the AR bar at 32, to tell which side it is on
LONGEST = {"crossover": 32, "width192": 32, "long200k": 128}


def shipped_runs():
    """(name, figures JSON, compare.json path or None) of each long run shipped in models/, in CROSSOVER's order."""
    for name, compare in CROSSOVER:
        path = os.path.join(ROOT, "models", f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                yield name, json.load(f), compare


def crossover_section():
    """The shipped long runs side by side (models/*.json, and the fixed-order exact NLLs and random-order bound that
    compare.py wrote beside them): each model's compute, its best validation figure and its test figure, and
    whether diffusion's tightest bounds have gone below the best AR test NLL (by how much, and with the paired se
    of that gap when compare.py measured it against that same AR)."""
    rows, ars, bounds, iws = [], [], [], []
    for name, r, compare in shipped_runs():
        t, m, ar = r["train"], r["model"], r["model"]["kind"] == "ar_transformer"
        test, bound, iw = (r["test"]["nll"] if ar else r["test"]["nelbo"]), None, None
        if not ar and compare and shipped(compare):
            with open(os.path.join(ROOT, "models", compare)) as f:
                c = json.load(f)
            figures, against = c["info"]["diffusion"]["likelihood"], c["settings"]["ar_checkpoint"]
            bound = min((v for k, v in figures.items() if k not in ("nelbo", "random_orders")), key=lambda v: v["nll"])
            iw = figures.get("random_orders")
            bounds.append((name, bound, against))
            iws += [(name, iw, against)] if iw is not None else []
        best_val = min(v for _, v in r["validation"])
        ars += [(test, name)] if ar else []
        regular = ", ".join(f"{label} {t[key] if key in t else m[key]:g}" for key, label in
                            (("dropout", "dropout"), ("weight_decay", "weight decay"), ("ema", "ema"))
                            if (t.get(key) or m.get(key)))
        file = f"models/{name}.npz" if shipped(f"{name}.npz") else f"models/{name}.json"  # or only its figures
        exact = "-" if bound is None else f"{bound['nll']:.4f}"
        over_orders = "-" if iw is None else f"{iw['nll']:.4f} (K = {iw['orders']})"
        rows.append(f"| `{file}` | {'AR' if ar else 'diffusion'} | {m['dim']} | {r['parameters']:,} | "
                    f"{t['steps']:,} x {t['batch_size']} | {r['train_seconds'] / 60:.0f} min | {regular or '-'} | "
                    f"{best_val:.4f} at {r['best_step']:,} | **{test:.4f}** | {exact} | {over_orders} |")
    table = ["| model | kind | width | parameters | steps x batch | train time | regularization | best validation "
             "(step) | test NLL / NELBO | tightest exact bound | random-order bound (orders) |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|", *rows]
    if not (ars and bounds):
        return "\n".join(table)

    def lowest(runs):                                        # the (name, figure, AR compared with) lowest figure
        return min(runs, key=lambda run: run[1]["nll"], default=None)
    best_ar, (name, bound, against), best_iw = min(ars), lowest(bounds), lowest(iws)
    ar_words = f"the best AR test NLL ({best_ar[0]:.4f}, `models/{best_ar[1]}.npz`)"
    verdict = (f"The tightest exact diffusion bound ({bound['nll']:.4f}, `models/{name}.npz`) is "
               + versus_ar(bound, against, best_ar, ar_words))
    if best_iw is not None:
        name, iw, against = best_iw
        verdict += (f" The tightest bound on a denoiser's own NLL, over {iw['orders']} random orders of "
                    f"`models/{name}.npz` ({iw['nll']:.4f}), is " + versus_ar(iw, against, best_ar, "it"))
    return "\n\n".join(["\n".join(table), textwrap.fill(verdict, width=110), crossover_curves()])


def versus_ar(figure, against, best_ar, ar_words):
    """'above <ar_words> by .. nats/char (+..%): no crossover at this compute.' (or below it: the crossover is
    reached) for a diffusion figure. When compare.py paired the figure with that same AR (`against`: the AR
    checkpoint it was given), the gap's paired se is given too, and a gap within twice it is called level."""
    ar, gap = best_ar[0], figure["nll"] - best_ar[0]
    same_ar = os.path.realpath(os.path.join(ROOT, against)) == os.path.realpath(
        os.path.join(ROOT, "models", f"{best_ar[1]}.npz"))
    se = figure["gap"]["se"] if same_ar and "gap" in figure else None
    verdict = "the crossover is reached" if gap < 0 else "no crossover at this compute"
    if se is not None and abs(gap) < 2 * se:
        verdict = "level with it, within twice the paired se"
    paired = "" if se is None else f", paired se {se:.4f}"
    return f"{'below' if gap < 0 else 'above'} {ar_words} by {abs(gap):.4f} nats/char ({100 * gap / ar:+.1f}%" \
        f"{paired}): {verdict}."


def crossover_curves():
    """Validation figures of the shipped long runs every 5,000 steps (nats/char; blank where a run had stopped;
    each run's batch size is in the table above)."""
    runs = {name: dict(r["validation"]) for name, r, _ in shipped_runs()}
    steps = sorted({s for curve in runs.values() for s in curve if s % 5000 == 0})
    rows = [f"| {s:,} | " + " | ".join(f"{runs[n][s]:.4f}" if s in runs[n] else "" for n in runs) + " |"
            for s in steps]
    return "\n".join([f"| validation at step | {' | '.join(f'`{n}`' for n in runs)} |",
                      "|---:|" + "---:|" * len(runs), *rows])


def shipped_commands():
    """The trainer command of each shipped model, rebuilt from its JSON: every setting a script sets itself is
    spelled out, so the command still makes that model when the scripts' defaults change."""
    sys.path.insert(0, ROOT)
    from diffusion.trainer import TrainConfig
    defaults, lines = TrainConfig(), []
    for name, r, _ in shipped_runs():
        t, m, ar = r["train"], r["model"], r["model"]["kind"] == "ar_transformer"
        always = ["steps", "batch_size", "lr", "weight_decay", "ema", "seed", "eval_every", "patience"] + \
            ([] if ar else ["objective", "k_power"])
        flags = [(k, t.get(k, getattr(defaults, k))) for k in always]
        flags += [(k, t[k]) for k in ("warmup", "min_lr_ratio", "grad_clip", "schedule")
                  if t.get(k, getattr(defaults, k)) != getattr(defaults, k)]
        flags += [(k, m[k]) for k in ("dim", "layers", "heads", "dropout")] + [("mlp_ratio", m.get("mlp_ratio", 4))]
        words = [f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                 for k, v in flags] + ["--save-every 1000", f"--out models/{name}.npz", f"--json models/{name}.json"]
        units = [f"python\0scripts/{'train_ar' if ar else 'train'}.py"] + [w.replace(" ", "\0") for w in words]
        wrapped = textwrap.wrap(" ".join(units), width=100, break_on_hyphens=False)     # a flag keeps its value
        lines.append(" \\\n    ".join(wrapped).replace("\0", " "))
    return "```bash\n" + "\n".join(lines) + "\n```"


def shipped_sections(put):
    """The sections made from the models that ship in models/ (never retrained here): the 60,000-step pair, the
    width-128 runs, the width-192 run, the 200,000-step run, the tuning sweeps and the judged samples."""
    if shipped("long60k/ar.npz", "long60k/diffusion.npz"):
        put("compare_long60k", compare_section(
            "models/long60k/ar.npz", "models/long60k/diffusion.npz", "models/long60k/compare.json",
            ("Training", "Test likelihood", "Learning curves")))
    if shipped("wide/diffusion.npz"):                    # against the AR of the same width once it is shipped
        put("compare_wide", compare_section(
            "models/wide/ar.npz" if shipped("wide/ar.npz") else "models/long60k/ar.npz", "models/wide/diffusion.npz",
            "models/wide/compare.json",
            ("Training", "Test likelihood", "Samples", "Learning curves")))
    for run, orders in LONGEST.items():          # the longest denoisers against the AR bar, with the bound over orders
        if shipped("wide/ar.npz", f"{run}/diffusion.json"):  # the JSON is written when the run ends, not mid-run
            put(f"compare_{run}", compare_section(
                "models/wide/ar.npz", f"models/{run}/diffusion.npz", f"models/{run}/compare.json",
                ("Training", "Test likelihood", "Importance-weighted", "Samples", "Learning curves"),
                ("--iw-orders", str(orders))))
    put("crossover", crossover_section())
    put("shipped_commands", shipped_commands())
    if shipped("tune/default.json", "tune/ar.json"):
        put("tune", tune_section("models/tune/default.json"))
        put("tune_ar", tune_section("models/tune/ar.json"))
    if shipped("judge.npz"):
        put("judged", judged_section(["runs/readme/train.npz", "runs/readme/train_ar.npz",
                                      "models/long60k/diffusion.npz", "models/long60k/ar.npz",
                                      "models/wide/diffusion.npz", "models/wide/ar.npz",
                                      *[f"models/{run}/diffusion.npz" for run in LONGEST
                                        if shipped(f"{run}/diffusion.json")]]))      # not a run still under way


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", action="store_true", help="only regenerate the file table")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the file table is stale")
    p.add_argument("--reuse", action="store_true", help="format the JSON already in runs/readme/ instead of training")
    p.add_argument("--bench", action="store_true", help="also rerun scripts/bench.py for the speed table")
    p.add_argument("--shipped", action="store_true", help="only the file table and the sections of models/")
    args = p.parse_args()
    pages = {}
    for path in PAGES:
        with open(path) as f:
            pages[path] = f.read()
    text = pages[README]
    if args.check:
        stale = replace_section(text, "files", file_table()) != text
        sys.exit("README.md's file table is stale: run python scripts/update_readme.py --files" if stale else 0)

    def put(name, body):
        """Write section `name` on the page that has its markers."""
        for path, page in pages.items():
            if f"<!-- generated:{name} -->" in page:
                pages[path] = replace_section(page, name, body)
                return
        raise SystemExit(f"update_readme: no page has a section '{name}'")
    put("files", file_table())
    if not (args.files or args.shipped):
        os.makedirs(RUNS, exist_ok=True)
        runs = []
        for script, label in TRAINERS:
            path = os.path.join(RUNS, f"{script}.json")
            if not args.reuse:
                run_trainer(script, path)
            with open(path) as f:
                runs.append(((script, label), json.load(f)))
        put("results", results_table(runs))
        put("temperature", sweep_table(runs[-1][1]))
        objective_runs = []
        for name, label in OBJECTIVES:
            path = os.path.join(RUNS, "train.json" if name == "exact_k" else f"objective_{name}.json")
            if not args.reuse and name != "exact_k":
                run_trainer("train", path, *objective_flags(name), "--num-samples", "100")
            with open(path) as f:
                objective_runs.append((label, json.load(f)))
        put("objectives", objectives_table(objective_runs))
        if not args.reuse:
            run_trainer("train_ar", os.path.join(RUNS, "train_ar.json"))
            run_trainer("train_ar", os.path.join(RUNS, "judge.json"), "--seed", "1", "--num-samples", "0")
        put("compare", compare_section("runs/readme/train_ar.npz", "runs/readme/train.npz",
                                                                "runs/readme/compare.json"))
        put("contrast", contrast_table(os.path.join(RUNS, "compare.json")))
        put("pictures", pictures_section())
        put("schedule_plot", schedule_plot())
        put("curves", curves_plot(runs[-1][1], os.path.join(RUNS, "train_ar.json")))
        put("lengths", lengths_section())
        put("unmasking", unmasking_section())
        put("sampler", sampler_section())
        # the 20,000- and 60,000-step runs (the README gives their commands): formatted, never retrained here
        have = lambda folder, *files: all(os.path.exists(os.path.join(ROOT, "runs", folder, f))  # noqa: E731
                                          for f in files)
        if have("long", "diffusion.npz", "diffusion.json"):
            put("long", long_table(refresh_long_samples(
                os.path.join(ROOT, "runs", "long", "diffusion.json"))))
        if have("long", "ar.npz", "diffusion.npz"):
            put("compare_long", compare_section(
                "runs/long/ar.npz", "runs/long/diffusion.npz", "runs/long/compare.json",
                ("Training", "Test likelihood", "Samples", "Diffusion quality", "Learning curves")))
        shipped_sections(put)
    elif args.shipped:
        shipped_sections(put)
    if args.bench:
        print("running scripts/bench.py ...", flush=True)
        put("bench", bench_table())
    for path, page in pages.items():
        with open(path, "w") as f:
            f.write(page)
    print("README.md, docs/results.md and docs/diffusion.md updated")


if __name__ == "__main__":
    main()
