"""Seq2seq training throughput: attnkit's RNN models against the same model
written with plain keras layers, side by side on every backend.

The plain keras model is what keras can express: a bidirectional GRU
encoder, a GRU decoder over the whole target, then
`keras.layers.AdditiveAttention` from every decoder output to the encoder
outputs, `tanh(W_c [context; h])` and the logits. attnkit builds the same
model with `AttentionDecoder(style="luong", input_feeding=False)` (its
additive attention also learns the query and key projections of Bahdanau
et al., which keras's does not), and the model `attnkit train` uses by
default: Bahdanau attention from the previous state inside the recurrence.

All three train with the same loss and optimizer on the same length-bucketed
batches of the CMU dictionary's training pairs, through `fit`, as the
trainer does. One process per backend; the models alternate within it after
a warm-up pass (which compiles every batch shape); medians of `--repeats`.

    python benchmarks/seq2seq_throughput.py --out benchmarks/results

writes `seq2seq-throughput.md` (pairs per second, and keras / attnkit).
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

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = ("keras GRU + AdditiveAttention", "attnkit Luong (same model)",
          "attnkit Bahdanau (attnkit train's)")


def build(name, source_size, target_size, units):
    import keras

    import attnkit
    from attnkit.models import build_rnn_seq2seq

    if name.startswith("attnkit Bahdanau"):
        model = build_rnn_seq2seq(source_size, target_size, units=units)
        return keras.Model(model.inputs, model.outputs[0])
    layers = keras.layers
    source = keras.Input((None,), dtype="int32")
    target_in = keras.Input((None,), dtype="int32")
    embedded = layers.Embedding(source_size, 64, mask_zero=True)(source)
    memory, forward, backward = layers.Bidirectional(
        layers.GRU(units, return_sequences=True, return_state=True))(embedded)
    state = layers.Dense(2 * units, activation="tanh")(
        layers.Concatenate()([forward, backward]))
    target_embedded = layers.Embedding(target_size, 64)(target_in)
    if name.startswith("keras"):
        hidden = layers.GRU(2 * units, return_sequences=True)(
            target_embedded, initial_state=[state])
        context = layers.AdditiveAttention()([hidden, memory])  # reads memory's mask
        outputs = layers.Dense(2 * units, activation="tanh", use_bias=False)(
            layers.Concatenate()([context, hidden]))
    else:
        decoder = attnkit.layers.AttentionDecoder(
            layers.GRUCell(2 * units), attnkit.layers.AdditiveAttention(units),
            style="luong", input_feeding=False)
        outputs, _ = decoder(target_embedded, memory, initial_state=[state])
    return keras.Model([source, target_in], layers.Dense(target_size)(outputs))


def worker(config):
    import keras

    from attnkit.app import training
    from benchmarks.attention._harness import time_side_by_side
    from attnkit.datasets import cmudict
    from attnkit.app.vocabulary import Vocabulary

    pairs = cmudict.load_data(train_size=config["words"], seed=0).train
    source_vocab = Vocabulary.from_texts([s for s, _ in pairs], unit="char")
    target_vocab = Vocabulary.from_texts([t for _, t in pairs], unit="word")
    source = [source_vocab.encode(s) for s, _ in pairs]
    target = [target_vocab.encode(t, add_start_end=True) for _, t in pairs]
    # attnkit's RNN decoder unrolls over a static target length: on TensorFlow
    # (where keras turns batch shapes into one tf.data signature) every model
    # gets the same fixed target width, as `attnkit train` gives it there.
    width = "longest" if keras.backend.backend() == "tensorflow" else None
    batches = training.BucketedBatches(source, target, config["batch_size"], seed=0,
                                       target_width=width)
    rows = sum(len(b) for b in batches.batches)
    runners = {}
    for name in MODELS:
        keras.utils.set_random_seed(0)
        model = build(name, len(source_vocab), len(target_vocab), config["units"])
        model.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0),
                      training.SmoothedSequenceLoss(0.1))
        runners[name] = (lambda m: lambda: m.fit(batches, epochs=1, verbose=0))(model)
    seconds = time_side_by_side(runners, repeats=config["repeats"], warmup=1)
    return {name: {"seconds": s, "pairs_per_s": rows / s} for name, s in seconds.items()} | {
        "pairs": rows, "batches": len(batches)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--words", type=int, default=3000,
                        help="training words of the CMU dictionary (a seeded subset)")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    config = {"words": args.words, "units": args.units, "batch_size": args.batch_size,
              "repeats": args.repeats}
    results = {}
    for backend in args.backends.split(","):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(config)],
            env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
        results[backend] = json.loads(line[len("RESULT "):])
        print(f"{backend}: {time.time() - start:.0f} s", flush=True)
    text = report(results, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seq2seq-throughput.md").write_text(text)
    print(text)
    return 0


def report(results, config):
    from benchmarks.attention._report import machine

    lines = [
        "# Seq2seq training throughput: attnkit against plain keras",
        "",
        f"Machine: {machine()}.",
        "",
        f"`fit` over {next(iter(results.values()))['batches']} length-bucketed batches of "
        f"{config['batch_size']} CMU dictionary pairs ({config['words']} training words), "
        f"encoder GRU {config['units']} units each way, decoder GRU {2 * config['units']}; "
        f"median of {config['repeats']} passes, the models alternating after a warm-up "
        "pass. Pairs per second (higher is better); the ratio is attnkit's pairs/s over "
        "keras's.",
        "",
        "| backend | " + " | ".join(MODELS) + " | same model: attnkit / keras |",
        "| --- |" + " ---: |" * (len(MODELS) + 1),
    ]
    for backend, r in results.items():
        cells = [f"{r[name]['pairs_per_s']:.0f}" for name in MODELS]
        ratio = r[MODELS[1]]["pairs_per_s"] / r[MODELS[0]]["pairs_per_s"]
        lines.append(f"| {backend} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    lines += ["", "Rerun: `python benchmarks/seq2seq_throughput.py --out benchmarks/results`.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
