"""Decoding speed: greedy and beam search through the compiled loops,
`attnkit translate` as a user runs it, and an exported SavedModel.

A model of `attnkit train --data cmudict`'s default shape (RNN, Bahdanau
attention, 128 units) with its weights as initialized: it decodes every
one of the 12,604 test words to the full length (an untrained model seldom
emits the end token), so the figures are a worst case for a trained model,
which stops once every word has ended. One process per backend:

- greedy words per second over the CMU dictionary's test words, beam 4 over
  the first 2,048, in batches of 256 (`Translator.translate`), the first
  pass (compilation included) and the median of the next ones;
- `attnkit translate --model M WORD`: wall time of the whole command minus
  that of `python -c "import keras"`: first runs, each with an empty cache
  folder (JAX keeps compiled programs there), alternated with `import
  keras`, median of 3; then the median of 3 runs with the cache; `attnkit --version`, median of 3;
- the stdin filter: per-line latency (write one line, read its answer),
  median over 20 lines once the model is loaded;
- the SavedModel from `attnkit export` (TensorFlow): a batch of 64 words.

    python benchmarks/decoding.py --out benchmarks/results

writes `decoding.md`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = ("tensorflow", "jax", "torch")
PYTHON = sys.executable
BEAM_WORDS = 2048  # beam search over the first words only


def _quiet_env(backend):
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONWARNINGS": "ignore"}


def make_model(folder):
    """A cmudict-shaped Translator saved in `folder`; the test words."""
    from attnkit.app import training
    from attnkit.datasets import cmudict
    from attnkit.app.vocabulary import Vocabulary

    data = cmudict.load_data()
    source = Vocabulary.from_texts([s for s, _ in data.train], unit="char")
    target = Vocabulary.from_texts([t for _, t in data.train], unit="word")
    config = training.TrainConfig(model="rnn").check()
    model = training.build_model(config, len(source), len(target))
    length = max(len(target.split(t)) for _, t in data.train)
    training.Translator(model, source, target, length).save(folder)
    words = sorted({s for s, _ in data.test if all(c in source.tokens for c in s)})
    return words


def in_process(folder, words, repeats):
    """Greedy and beam words/s on this process's backend."""
    from attnkit.app import training

    translator = training.load(folder)
    report = {}
    for name, beam, count in (("greedy", 1, len(words)), ("beam 4", 4, BEAM_WORDS)):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            translator.translate(words[:count], beam=beam)
            times.append(time.perf_counter() - start)
        report[name] = {"first_s": times[0], "words_per_s": count / statistics.median(times[1:])}
    return report


def command_seconds(args, backend, stdin=None, **env):
    start = time.perf_counter()
    subprocess.run(args, env={**_quiet_env(backend), **env}, capture_output=True, input=stdin,
                   text=True, check=True)
    return time.perf_counter() - start


def filter_latency(folder, backend, words):
    """Median seconds from writing one line to reading its answer."""
    process = subprocess.Popen([PYTHON, "-m", "attnkit_cli", "translate", "--model", folder],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=_quiet_env(backend), bufsize=1)
    latencies = []
    try:
        for i, word in enumerate(words[:21]):
            start = time.perf_counter()
            process.stdin.write(word + "\n")
            process.stdin.flush()
            process.stdout.readline()
            if i:  # the first line waits for the model to load and compile
                latencies.append(time.perf_counter() - start)
    finally:
        process.stdin.close()
        process.wait(timeout=120)
    return statistics.median(latencies)


def export_batch_seconds(folder, export_dir, words):
    subprocess.run([PYTHON, "-m", "attnkit_cli", "export", "--model", folder, "--out",
                    export_dir], env=_quiet_env("tensorflow"), capture_output=True, check=True)
    script = (
        "import sys, time, json, statistics\n"
        "import tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "batch = tf.constant(json.loads(sys.argv[2]))\n"
        "m.serve(batch)\n"
        "times = []\n"
        "for _ in range(5):\n"
        "    t = time.perf_counter(); m.serve(batch); times.append(time.perf_counter() - t)\n"
        "print(statistics.median(times))\n")
    out = subprocess.run([PYTHON, "-c", script, export_dir, json.dumps(words[:64])],
                         env=_quiet_env("tensorflow"), capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        folder, words_path = json.loads(args.worker)
        words = json.loads(Path(words_path).read_text())
        print("REPORT " + json.dumps(in_process(folder, words, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "model")
        os.makedirs(folder)
        words = make_model(folder)
        words_path = os.path.join(tmp, "words.json")
        Path(words_path).write_text(json.dumps(words))
        rows = {}
        for backend in args.backends:
            run = subprocess.run([PYTHON, __file__, "--repeats", str(args.repeats), "--worker",
                                  json.dumps([folder, words_path])], env=_quiet_env(backend),
                                 capture_output=True, text=True, check=True)
            row = json.loads(run.stdout.split("REPORT ", 1)[1])
            # First runs, each with an empty cache folder (JAX keeps compiled
            # programs there), alternated with `import keras` (which alone
            # varies by seconds on this machine), then runs with the cache.
            translate = [PYTHON, "-m", "attnkit_cli", "translate", "--model", folder, words[0]]
            imports, colds = [], []
            for i in range(3):
                imports.append(command_seconds([PYTHON, "-c", "import keras"], backend))
                colds.append(command_seconds(translate, backend,
                                             XDG_CACHE_HOME=os.path.join(tmp, f"{backend}{i}")))
            imports, cold = statistics.median(imports), statistics.median(colds)
            whole = statistics.median(
                command_seconds(translate, backend, XDG_CACHE_HOME=os.path.join(tmp, f"{backend}0"))
                for _ in range(3))
            row["translate_s"], row["import_keras_s"] = whole, imports
            row["translate_cold_s"] = cold
            row["version_s"] = statistics.median(
                command_seconds([PYTHON, "-m", "attnkit_cli", "--version"], backend)
                for _ in range(3))
            row["filter_line_s"] = filter_latency(folder, backend, words)
            rows[backend] = row
            print(backend, row, flush=True)
        export_s = export_batch_seconds(folder, os.path.join(tmp, "served"), words)
    write(Path(args.out), rows, export_s, len(words))


def write(out, rows, export_s, count):
    import platform

    lines = [
        "# Decoding speed",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
        f"A model of `attnkit train --data cmudict`'s default shape (RNN, Bahdanau, 128 "
        f"units), weights as initialized, so every one of the {count:,} test words decodes "
        "to the full length (a worst case: a trained model stops when every word has "
        "ended). Batches of 256; beam search over the first 2,048 words.",
        "",
        "| backend | greedy words/s | greedy first pass (s) | beam 4 words/s | "
        "`attnkit translate WORD` above `import keras` (s): first run, then | "
        "filter, per line (ms) | `--version` (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, row in rows.items():
        lines.append(
            f"| {backend} | {row['greedy']['words_per_s']:,.0f} | {row['greedy']['first_s']:.1f} "
            f"| {row['beam 4']['words_per_s']:,.0f} | "
            f"{row['translate_cold_s'] - row['import_keras_s']:.2f}, then "
            f"{row['translate_s'] - row['import_keras_s']:.2f} (whole command "
            f"{row['translate_s']:.1f}, `import keras` {row['import_keras_s']:.1f}) | "
            f"{1000 * row['filter_line_s']:.0f} | {row['version_s']:.2f} |")
    lines += ["", f"SavedModel from `attnkit export`, a batch of 64 words: "
              f"{1000 * export_s:.0f} ms (median of 5, TensorFlow alone).", "",
              "Rerun: `python benchmarks/decoding.py --out benchmarks/results`."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoding.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
