"""Which attention helps when data is scarce: test WER on the CMU dictionary
(g2p-seq2seq split) after training on 1k, 4k, 16k and all training words,
for every attention kind of `attnkit train`, with the same budget per cell:
at most `--steps` optimizer updates of 64 pairs (a budget that does not
depend on the machine or its load, unlike minutes).

Every cell trains in a fresh process with `attnkit.training.train` (dev WER
on the first `--max-valid` dev words picks the best epoch and stops early),
then decodes the whole test split greedily. Cells already in the results
file with the same budget are kept, so an interrupted run continues and a
new attention kind adds only its own cells:

    python benchmarks/g2p_low_resource.py --steps 2000 --out benchmarks/results

writes `g2p-low-resource.json`, `g2p-low-resource.md` and
`g2p-low-resource.png` (WER against training words, one line per kind).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = (("rnn", "additive"), ("rnn", "dot"), ("rnn", "general"), ("rnn", "cosine"),
         ("rnn", "additive+sparsemax"), ("rnn", "additive+entmax15"),
         ("rnn", "monotonic"), ("rnn", "mocha"), ("rnn", "location"), ("rnn", "coverage"),
         ("transformer", "relative"), ("transformer", "t5"), ("transformer", "rotary"))
SIZES = (1000, 4000, 16000, None)  # None: every training word


def _key(model, attention, size):
    return f"{model}/{attention}/{size or 'all'}"


def worker(cell):
    import keras

    from attnkit import training
    from attnkit.datasets import cmudict

    data = cmudict.load_data(train_size=cell["size"], seed=0)
    attention, _, normalizer = cell["attention"].partition("+")
    config = training.TrainConfig(
        model=cell["model"], attention=attention, normalizer=normalizer or "softmax",
        units=cell["units"], epochs=1000, max_steps=cell["steps"],
        max_valid=cell["max_valid"], target_unit="word", seed=0)
    result = training.train(data.train, data.dev, cell["out"], config, verbose=0,
                            log=lambda line: None)
    start = time.time()
    scores, _ = training.load(cell["out"]).evaluate(data.test)
    return {"wer": scores["wer"], "per": scores["per"], "dev_wer": result["best"]["wer"],
            "best_epoch": result["best"]["epoch"], "epochs": result["epochs"],
            "steps_run": result["steps"],
            "train_seconds": result["seconds"], "stopped": result["stopped"],
            "test_seconds": time.time() - start, "train_words": len(data.train_words),
            "backend": keras.backend.backend()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000,
                        help="optimizer updates (batches of 64) per cell, at most")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--max-valid", type=int, default=500,
                        help="dev words decoded after every epoch")
    parser.add_argument("--kinds", help="model/attention,... (default: all of them)")
    parser.add_argument("--sizes", help="comma-separated word counts or 'all'")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="out/g2p-low-resource",
                        help="where the cells' models are kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    kinds = KINDS if not args.kinds else [tuple(k.split("/")) for k in args.kinds.split(",")]
    sizes = SIZES if not args.sizes else [
        None if s == "all" else int(s) for s in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "g2p-low-resource.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for size in sizes:
        for model, attention in kinds:
            key = _key(model, attention, size)
            done = results.get(key)
            if done and done["steps"] == args.steps and done["units"] == args.units:
                continue
            cell = {"model": model, "attention": attention, "size": size,
                    "steps": args.steps, "units": args.units, "max_valid": args.max_valid,
                    "out": str(Path(args.work) / key.replace("/", "-"))}
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(cell)],
                env=dict(os.environ, KERAS_BACKEND=args.backend), capture_output=True,
                text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
            results[key] = {**json.loads(line[len("RESULT "):]), "steps": args.steps,
                            "units": args.units, "max_valid": args.max_valid}
            path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            r = results[key]
            print(f"{key}: test WER {100 * r['wer']:.2f}% PER {100 * r['per']:.2f}% "
                  f"({r['steps_run']} steps, {r['epochs']} epochs, "
                  f"{r['train_seconds'] / 60:.1f} min)", flush=True)
    (out / "g2p-low-resource.md").write_text(markdown(results))
    plot(results, out / "g2p-low-resource.png")
    return 0


def _columns(results):
    sizes = sorted({int(k.rsplit("/", 1)[1]) for k in results if not k.endswith("/all")})
    return [str(s) for s in sizes] + (["all"] if any(k.endswith("/all") for k in results)
                                      else [])


def _kinds(results):
    """The kinds in `results`, in `KINDS` order, then any others."""
    order = {f"{model}/{attention}": i for i, (model, attention) in enumerate(KINDS)}
    kinds = {key.rsplit("/", 1)[0] for key in results}
    return sorted(kinds, key=lambda kind: (order.get(kind, len(order)), kind))


def markdown(results):
    from benchmarks.attention._report import machine

    columns = _columns(results)
    budgets = sorted({r["steps"] for r in results.values()})
    lines = [
        "# Pronunciation with little data: test WER by attention kind",
        "",
        f"Machine: {machine()}.",
        "",
        "CMU dictionary, g2p-seq2seq split (test: 12,604 words, greedy decoding). Each "
        f"cell trained for at most {', '.join(str(b) for b in budgets)} updates of 64 pairs "
        "on the first n training words of a seeded shuffle (every pronunciation of a word "
        "is a pair), keeping the epoch best on the dev WER of the first "
        f"{', '.join(sorted({str(r['max_valid']) for r in results.values()}))} dev words and "
        "stopping after 4 epochs without improvement. RNN: bidirectional GRU "
        "encoder and attention GRU decoder; Transformer: 2 layers, 4 heads; "
        f"{', '.join(sorted({str(r['units']) for r in results.values()}))} units. "
        "Test WER % (PER % in brackets); lower is better.",
        "",
        "| attention | " + " | ".join(f"{c} words" for c in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for kind in _kinds(results):
        cells = []
        for column in columns:
            r = results.get(f"{kind}/{column}")
            cells.append("" if r is None else f"{100 * r['wer']:.1f} ({100 * r['per']:.1f})")
        lines.append(f"| {kind.replace('/', ' ').replace('+', ', ')} | " + " | ".join(cells)
                     + " |")
    lines += ["", "Rerun: `python benchmarks/g2p_low_resource.py --steps "
              f"{budgets[-1]} --out benchmarks/results`.", ""]
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    words = {}
    for key, r in results.items():
        words[key.rsplit("/", 1)[1]] = r["train_words"]
    columns = _columns(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors  # 13 kinds: the default cycle repeats after 10
    for i, kind in enumerate(_kinds(results)):
        points = [(words[c], 100 * results[f"{kind}/{c}"]["wer"]) for c in columns
                  if f"{kind}/{c}" in results]
        transformer = kind.startswith("transformer")
        ax.plot(*zip(*points), marker="s" if transformer else "o", color=colors[i % 20],
                linestyle="--" if transformer else "-", label=kind.replace("/", " "))
    ax.set_xscale("log")
    ax.set_xlabel("training words")
    ax.set_ylabel("test WER % (greedy)")
    ax.set_title("CMU dictionary pronunciation: WER by attention and data size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
