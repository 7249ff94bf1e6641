"""Which attention helps when data is scarce, with error bars, on two kinds
of task: English pronunciation (the CMU dictionary's g2p-seq2seq split,
test WER) and French and Spanish verb inflection (lemma + features -> form,
split by lemma; exact-match accuracy and mean Levenshtein distance), for
every attention kind of `attnkit train`, each cell trained with several
seeds.

Every cell has the same budget: at most `--steps` optimizer updates of 64
pairs (a budget that does not depend on the machine or its load, unlike
minutes). It trains in a fresh process with `attnkit.app.training.train` (the
dev error of the first `--max-valid` dev inputs picks the best epoch and
stops early), then decodes the whole test split greedily. An epoch runs at
least `--min-epoch-steps` updates (50), passing over a small training set
several times: 100 triples are two batches, too few to judge the dev set
after, and the patience would stop training after a dozen updates. A seed changes
the model's initialization and the order of the batches; the training data
of a size is the same for every seed. Cells already in the results file with
the same budget are kept, so an interrupted run continues and a new kind,
size or seed adds only its own cells:

    python benchmarks/low_resource.py --out benchmarks/results
    python benchmarks/low_resource.py --tasks inflection-fr --sizes 100 --seeds 0,1,2

writes `low-resource.json`, `low-resource.md` (per task: mean and standard
deviation over random seeds, a kind marked where it beats additive attention by
more than the spread) and `low-resource.png`.
"""

import argparse
import collections
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Every attention kind of `attnkit train` (tests check it against the
# models' lists), and additive attention with each sparse normalizer.
KINDS = (("rnn", "additive"), ("rnn", "dot"), ("rnn", "scaled"), ("rnn", "general"),
         ("rnn", "cosine"), ("rnn", "additive+sparsemax"), ("rnn", "additive+entmax15"),
         ("rnn", "monotonic"), ("rnn", "mocha"), ("rnn", "location"), ("rnn", "coverage"),
         ("transformer", "relative"), ("transformer", "t5"), ("transformer", "alibi"),
         ("transformer", "rotary"))
BASELINE = "rnn/additive"
# Each task's training sizes (None: every training word): the first ones
# with every seed, the rest with the first seed unless --sizes names them.
TASKS = {"cmudict": (1000, 4000, 16000, None),
         "inflection-fr": (100, 1000, 10000), "inflection-es": (100, 1000, 10000)}
SEEDED_SIZES = {"cmudict": (1000, 4000), "inflection-fr": (100, 1000),
                "inflection-es": (100, 1000)}
SEEDS = (0, 1, 2)
LANGUAGES = {"inflection-fr": "French", "inflection-es": "Spanish"}
UNITS = {"cmudict": "words", "inflection-fr": "triples", "inflection-es": "triples"}
OLD_RESULTS = "g2p-low-resource.json"  # cmudict cells of seed 0, before seeds
# Kinds whose model has changed since the old cells: T5's bias table now
# starts as ALiBi's distance penalty.
OLD_STALE = ("transformer/t5",)


def _key(task, model, attention, size, seed):
    return f"{task}/{model}/{attention}/{size or 'all'}/{seed}"


def _parse(key):
    """(task, kind, size, seed) of a results key."""
    task, model, attention, size, seed = key.split("/")
    return task, f"{model}/{attention}", size, int(seed)


def _data(task, size):
    """(train pairs, dev pairs, test pairs, target unit, source unit, how many
    training items)."""
    if task == "cmudict":
        from attnkit.datasets import cmudict

        data = cmudict.load_data(train_size=size, seed=0)
        return data.train, data.dev, data.test, "word", "char", len(data.train_words)
    from attnkit.datasets import inflection

    data = inflection.load_data(task.split("-")[1], train_size=size, seed=0)
    return (data.pairs("train"), data.pairs("dev"), data.pairs("test"), "char", "word",
            len(data.train))


def code_version():
    """The repository's commit the cells train with ("+changes" where
    attnkit's or the runner's files differ from it), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "attnkit",
                                  "benchmarks/low_resource.py"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if changed else "")


def worker(cell):
    import keras

    from attnkit.app import training
    from attnkit.app import metrics

    train, dev, test, target_unit, source_unit, items = _data(cell["task"], cell["size"])
    attention, _, normalizer = cell["attention"].partition("+")
    config = training.TrainConfig(
        model=cell["model"], attention=attention, normalizer=normalizer or "softmax",
        units=cell["units"], epochs=1000, max_steps=cell["steps"],
        min_epoch_steps=cell["min_epoch_steps"],
        max_valid=cell["max_valid"], source_unit=source_unit, target_unit=target_unit,
        seed=cell["seed"])
    result = training.train(train, dev, cell["out"], config, verbose=0,
                            log=lambda line: None)
    start = time.time()
    scores, _ = training.load(cell["out"]).evaluate(test)
    report = {"wer": scores["wer"], "per": scores["per"], "dev_wer": result["best"]["wer"],
              "best_epoch": result["best"]["epoch"], "epochs": result["epochs"],
              "steps_run": result["steps"], "train_seconds": result["seconds"],
              "stopped": result["stopped"], "test_seconds": time.time() - start,
              "train_items": items, "backend": keras.backend.backend(),
              "code": code_version()}
    if cell["task"] != "cmudict":  # character outputs: the error rates' edits are characters
        shared = metrics.shared_task_scores(scores)
        report.update(accuracy=shared["accuracy"], mean_distance=shared["mean_distance"])
    return report


def read_results(out):
    """The results in `out`, with the cells of the single-seed CMU dictionary
    table (written before seeds) as seed 0."""
    out = Path(out)
    path = out / "low-resource.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    old = out / OLD_RESULTS
    if old.is_file():
        for key, cell in json.loads(old.read_text()).items():
            model, attention, size = key.split("/")
            if f"{model}/{attention}" in OLD_STALE:
                continue
            results.setdefault(f"cmudict/{model}/{attention}/{size}/0",
                               {**cell, "train_items": cell.get("train_words")})
    return results


def worker_env(backend, environ=os.environ):
    """The cells' environment. Under JAX, the cells of a kind compile the same
    programs (every seed, every size of one task): they share `attnkit
    train`'s compilation cache (~/.cache/attnkit/jax;
    JAX_COMPILATION_CACHE_DIR picks another folder, empty turns it off),
    which compiles each program once and gives the same results."""
    from attnkit_cli import _environment

    env = dict(environ, KERAS_BACKEND=backend)
    if backend == "jax":
        env.update(_environment.compilation_cache_environment(env))
    return env


def _same_budget(done, args):
    """Whether a cell in the results trained as `args` would train it (a cell
    from before `min_epoch_steps` passed over its data once per epoch)."""
    if not done or done["steps"] != args.steps or done["units"] != args.units:
        return False
    batches = math.ceil(done["train_items"] / 64)
    passes = [max(1, math.ceil(n / batches))
              for n in (done.get("min_epoch_steps", 1), args.min_epoch_steps)]
    return passes[0] == passes[1]


def cells(tasks, kinds, sizes, seeds):
    """(task, model, attention, size, seed) of every cell to have, in order:
    the cells of the sizes with several seeds, one seed after another, then
    the other sizes' cells with the first seed only."""
    plan = []
    for seed in seeds:
        for task in tasks:
            for size in sizes or TASKS[task]:
                if seed != seeds[0] and not sizes and size not in SEEDED_SIZES[task]:
                    continue
                plan += [(task, model, attention, size, seed) for model, attention in kinds]
    return plan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000,
                        help="optimizer updates (batches of 64) per cell, at most")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--max-valid", type=int, default=500,
                        help="dev inputs decoded after every epoch")
    parser.add_argument("--min-epoch-steps", type=int, default=50,
                        help="updates per epoch at least: 100 triples make 2 batches, "
                             "too few to judge the dev set after")
    parser.add_argument("--tasks", help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    parser.add_argument("--kinds", help="model/attention,... (default: all of them)")
    parser.add_argument("--sizes", help="comma-separated training sizes or 'all' "
                                        "(default: each task's, see TASKS)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="comma-separated; sizes beyond SEEDED_SIZES get the first only")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="out/low-resource",
                        help="where the cells' models are kept")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: rewrite the table and the plot from --out's JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    tasks = list(TASKS) if not args.tasks else args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"--tasks takes {', '.join(TASKS)}; got {', '.join(unknown)}")
    kinds = KINDS if not args.kinds else [tuple(k.split("/")) for k in args.kinds.split(",")]
    sizes = None if not args.sizes else [
        None if s == "all" else int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "low-resource.json"
    results = read_results(out)
    todo = [] if args.report else cells(tasks, kinds, sizes, seeds)
    env = worker_env(args.backend)
    for task, model, attention, size, seed in todo:
        key = _key(task, model, attention, size, seed)
        if _same_budget(results.get(key), args):
            continue
        cell = {"task": task, "model": model, "attention": attention, "size": size,
                "seed": seed, "steps": args.steps, "units": args.units,
                "max_valid": args.max_valid, "min_epoch_steps": args.min_epoch_steps,
                "out": str(Path(args.work) / key.replace("/", "-"))}
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(cell)],
            env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
        results[key] = {**json.loads(line[len("RESULT "):]), "steps": args.steps,
                        "units": args.units, "max_valid": args.max_valid,
                        "min_epoch_steps": args.min_epoch_steps}
        path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        r = results[key]
        print(f"{key}: test error {100 * r['wer']:.2f}% ({r['steps_run']} steps, "
              f"{r['epochs']} epochs, {r['train_seconds'] / 60:.1f} min)", flush=True)
    (out / "low-resource.md").write_text(markdown(results, args.out))
    plot(results, out / "low-resource.png")
    return 0


def summary(values):
    """(mean, sample standard deviation or None for one value, n)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd, n


def beats(ours, baseline):
    """Whether `ours` (mean, sd, n) of an error is below `baseline`'s by more
    than the spread: both have 2+ seeds and the intervals mean ± sd do not
    overlap (ours' mean + sd < the baseline's mean - sd)."""
    if ours[1] is None or baseline[1] is None:
        return False
    return ours[0] + ours[1] < baseline[0] - baseline[1]


def loses(ours, baseline):
    """Whether `ours` is above `baseline` by more than the spread (the
    mirror of `beats`)."""
    return beats(baseline, ours)


def _mark(kind, stat, baseline):
    """"better" or "worse" where `kind`'s (mean, sd, n) differs from the
    baseline's by more than the spread, else None."""
    if baseline is None or kind == BASELINE:
        return None
    return "better" if beats(stat, baseline) else "worse" if loses(stat, baseline) else None


def _columns(results, task):
    sizes = {_parse(k)[2] for k in results if _parse(k)[0] == task}
    return sorted((s for s in sizes if s != "all"), key=int) + (["all"] if "all" in sizes
                                                                  else [])


def _size(column):
    return column if column == "all" else f"{int(column):,}"


def _kinds(results):
    """The kinds in `results`, in `KINDS` order, then any others."""
    order = {f"{model}/{attention}": i for i, (model, attention) in enumerate(KINDS)}
    kinds = {_parse(key)[1] for key in results}
    return sorted(kinds, key=lambda kind: (order.get(kind, len(order)), kind))


def table(results, task, field="wer"):
    """{(kind, size): (mean, sd, n)} of `field` (a fraction) across random seeds."""
    values = {}
    for key, r in results.items():
        t, kind, size, _ = _parse(key)
        if t == task and field in r:
            values.setdefault((kind, size), []).append(r[field])
    return {cell: summary(v) for cell, v in values.items()}


def _format(stat):
    mean, sd, n = stat
    return f"{100 * mean:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}") + f" ({n})"


def markdown(results, out="benchmarks/results"):
    """The tables of `results` (the folder `out` in their rerun line)."""
    from attnkit.datasets import inflection
    from benchmarks.attention._report import machine

    budgets = sorted({r["steps"] for r in results.values()})
    lines = [
        "# Attention with little data: test error by attention kind",
        "",
        f"Machine: {machine()}.",
        "",
        f"Each cell trained for at most {', '.join(str(b) for b in budgets)} updates of 64 "
        "pairs on the first n training items of a seeded shuffle (the same items for every "
        "seed), keeping the epoch best on the dev error of the first "
        f"{', '.join(sorted({str(r['max_valid']) for r in results.values()}))} dev inputs "
        "and stopping after 4 epochs without improvement; the test split decoded greedily. "
        "RNN: bidirectional GRU encoder and attention GRU decoder; Transformer: 2 layers, "
        f"4 heads; {', '.join(sorted({str(r['units']) for r in results.values()}))} units. "
        "A cell: mean ± standard deviation across random seeds (how many in brackets); lower is "
        f"better. **Bold**: below `{BASELINE.replace('/', ' ')}` by more than the spread "
        "(mean + sd under its mean - sd, both with 2 or more seeds); _italic_: above it by "
        "more than the spread.",
        "",
        "Code: " + ", ".join(f"{code} ({count} cells)" for code, count in sorted(
            collections.Counter(r.get("code") or "not recorded"
                                for r in results.values()).items())) + ".",
    ]
    tasks = [t for t in TASKS if any(_parse(k)[0] == t for k in results)]
    for task in tasks:
        columns = _columns(results, task)
        stats = table(results, task)
        title = ("CMU dictionary pronunciation, test WER % (12,604 words)" if task == "cmudict"
                 else f"{LANGUAGES[task]} verb inflection, test error % "
                      f"(100 - exact-match accuracy on {inflection.EVALUATION_SIZE:,} test "
                      "triples)")
        lines += ["", f"## {title}", "",
                  "| attention | " + " | ".join(f"{_size(c)} {UNITS[task]}" for c in columns) + " |",
                  "| --- |" + " ---: |" * len(columns)]
        for kind in _kinds(results):
            row = []
            for column in columns:
                stat = stats.get((kind, column))
                if stat is None:
                    row.append("")
                    continue
                text = _format(stat)
                mark = _mark(kind, stat, stats.get((BASELINE, column)))
                row.append({"better": f"**{text}**", "worse": f"_{text}_"}.get(mark, text))
            if any(row):
                lines.append(f"| {kind.replace('/', ' ').replace('+', ', ')} | "
                             + " | ".join(row) + " |")
        if task != "cmudict":
            distances = table(results, task, "mean_distance")
            lines += ["", "Mean Levenshtein distance to the form (mean ± sd over seeds):", "",
                      "| attention | " + " | ".join(f"{_size(c)} {UNITS[task]}" for c in columns)
                      + " |", "| --- |" + " ---: |" * len(columns)]
            for kind in _kinds(results):
                row = [("" if (kind, c) not in distances else
                        "{:.2f}".format(distances[(kind, c)][0])
                        + ("" if distances[(kind, c)][1] is None
                           else " ± {:.2f}".format(distances[(kind, c)][1])))
                       for c in columns]
                if any(row):
                    lines.append(f"| {kind.replace('/', ' ').replace('+', ', ')} | "
                                 + " | ".join(row) + " |")
    lines += ["", "Rerun: `python benchmarks/low_resource.py --steps "
              f"{budgets[-1]} --out {out}` (cells already there are kept).", ""]
    return "\n".join(lines)


def plot(results, path):
    """One panel per task and training size: each kind's seeds (dots) and
    their mean ± sd (bar), additive attention's mean ± sd shaded; a kind
    below it by more than the spread in green (the table's bold), above it
    by more than the spread in red (italic)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    tasks = [t for t in TASKS if any(_parse(k)[0] == t for k in results)]
    rows = [[(task, c) for c in _columns(results, task)] for task in tasks]
    if len(rows) == 3 and len(rows[1]) + len(rows[2]) <= 4:  # the two inflection
        rows = [rows[0], rows[1] + rows[2]]                   # tasks share a row
    width = max(len(row) for row in rows)
    kinds = _kinds(results)
    task_stats = {task: table(results, task) for task in tasks}
    height = len(rows) * max(2.0, 0.32 * len(kinds) + 0.6)
    fig, axes = plt.subplots(len(rows), width, figsize=(min(9.9, 1.2 + 2.2 * width), height),
                             squeeze=False, sharey=True)
    for r, row in enumerate(rows):
        for ax in axes[r][len(row):]:
            ax.set_visible(False)
        for ax, (task, column) in zip(axes[r], row):
            stats = task_stats[task]
            seeds = {}
            for key, cell in results.items():
                t, kind, size, _ = _parse(key)
                if t == task and size == column:
                    seeds.setdefault(kind, []).append(100 * cell["wer"])
            baseline = stats.get((BASELINE, column))
            if baseline and baseline[1] is not None:
                ax.axvspan(100 * (baseline[0] - baseline[1]), 100 * (baseline[0] + baseline[1]),
                           color="0.85", zorder=0)
            for y, kind in enumerate(kinds):
                if (kind, column) not in stats:
                    continue
                mean, sd, _ = stats[(kind, column)]
                color = "0.2" if kind == BASELINE else {
                    "better": "tab:green", "worse": "tab:red"}.get(
                        _mark(kind, stats[(kind, column)], baseline), "tab:blue")
                ax.plot(seeds[kind], [y] * len(seeds[kind]), "o", color=color, alpha=0.35,
                        markersize=4)
                ax.errorbar([100 * mean], [y], xerr=[100 * (sd or 0)], fmt="|",
                            color=color, markersize=12, capsize=3, elinewidth=1.5)
            ax.set_title(f"{task}, {_size(column)} {UNITS[task]}", fontsize=9)
            ax.grid(True, axis="x", alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.set_xlabel("test error % (greedy)", fontsize=8)
        axes[r][0].set_yticks(range(len(kinds)))
        axes[r][0].set_yticklabels([k.replace("/", " ").replace("+", ", ") for k in kinds],
                                   fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
