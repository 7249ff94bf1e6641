"""The `attnkit` command: `demo` trains a date reader; `train` and `evaluate`
do the same for any pairs (a TSV file, or a built-in data set: `cmudict`,
`dates`); `translate` uses a trained model.

This package parses the command line without importing keras or a backend,
so `--help`, `--version` and option errors answer at once; the commands
themselves are in `attnkit_cli.commands`. Errors (bad options, missing or
corrupt models, unreadable or empty input, a missing backend) print one
line `attnkit: error: ...` and exit 2, never a traceback.
"""

import argparse
import sys

from attnkit_cli import _environment

# The models' own lists (attnkit.models), repeated so that `--help` and
# option errors come before keras is imported; a test keeps them equal.
RNN_ATTENTION = ("additive", "dot", "scaled", "general", "cosine", "monotonic", "mocha",
                 "location", "coverage")
TRANSFORMER_ATTENTION = ("relative", "t5", "alibi", "rotary")
DEFAULT_EPOCHS = {"rnn": 5, "transformer": 10}
ATTENTION_HELP = (f"rnn: {', '.join(RNN_ATTENTION)}; transformer: "
                  f"{', '.join(TRANSFORMER_ATTENTION)} (default: {RNN_ATTENTION[0]} for rnn, "
                  f"{TRANSFORMER_ATTENTION[0]} (Shaw) for transformer)")


class CommandError(Exception):
    """A user error: reported on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows `(default: ...)` for every option with a default value."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default is not None and action.default is not False \
            and action.default is not argparse.SUPPRESS
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Version(argparse.Action):
    """`--version`: the version line is built only when it is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_environment.version_line())
        parser.exit()


def _positive(kind):
    """An argparse type: a positive `kind`, or a one-line error."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _add_beam_options(parser):
    parser.add_argument("--beam", type=_positive(int), default=1,
                        help="beam width; 1 is greedy decoding")
    parser.add_argument("--length-penalty", type=_non_negative, default=0.0,
                        help="beam search: GNMT's alpha (e.g. 0.6), favours longer outputs")
    parser.add_argument("--coverage-penalty", type=_non_negative, default=0.0,
                        help="beam search: GNMT's beta (e.g. 0.2), penalises unattended input")


def _demo_parser(sub):
    demo = sub.add_parser("demo", help="learn to read dates in five languages",
                          formatter_class=_HelpFormatter)
    demo.add_argument("--model", default="rnn", choices=["rnn", "transformer"],
                      help="the encoder-decoder")
    demo.add_argument("--attention", choices=RNN_ATTENTION + TRANSFORMER_ATTENTION,
                      metavar="KIND", help=ATTENTION_HELP)
    demo.add_argument("--epochs", type=_positive(int),
                      help=f"passes over the training pairs (default: "
                           f"{DEFAULT_EPOCHS['rnn']} for rnn, "
                           f"{DEFAULT_EPOCHS['transformer']} for transformer)")
    demo.add_argument("--train", type=_positive(int), default=10000, help="training pairs")
    demo.add_argument("--test", type=_positive(int), default=2000, help="held-out pairs")
    demo.add_argument("--units", type=_positive(int), default=64, help="model width")
    demo.add_argument("--seed", type=int, default=0, help="seeds the data and the weights")
    demo.add_argument("--out", default="out/demo",
                      help="folder for model.keras, model.vocab.json and attention.png")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the model a former run left in --out")


def _train_parser(sub):
    train = sub.add_parser("train", help="train a seq2seq model on pairs (TSV or built-in)",
                           formatter_class=_HelpFormatter)
    train.add_argument("--data", required=True,
                       help="a UTF-8 file of input<TAB>output lines, or cmudict, dates, "
                            "inflection-fr or inflection-es")
    train.add_argument("--valid", help="dev pairs (default: the built-in set's dev split, "
                                       "or 5%% of a file's inputs held out)")
    train.add_argument("--train-size", type=_positive(int),
                       help="cmudict: the first N training words of a seeded shuffle; "
                            "dates: N pairs; inflection-*: the first N training triples "
                            "of a seeded shuffle (default: all of cmudict, 20000 dates, "
                            "10000 triples)")
    train.add_argument("--model", default="rnn", choices=["rnn", "transformer"],
                       help="the encoder-decoder")
    train.add_argument("--attention", choices=RNN_ATTENTION + TRANSFORMER_ATTENTION,
                       metavar="KIND", help=ATTENTION_HELP)
    train.add_argument("--normalizer", default="softmax",
                       choices=["softmax", "sparsemax", "entmax15"],
                       help="of the attention weights: sparse maps give exact zeros")
    train.add_argument("--source-unit", choices=["char", "word"],
                       help="inputs as characters or whitespace-separated tokens "
                            "(default: word for inflection-*, else char)")
    train.add_argument("--target-unit", choices=["char", "word"],
                       help="outputs likewise (default: word for cmudict, else char)")
    train.add_argument("--units", type=_positive(int), default=128,
                       help="model width (GRU units, or the Transformer's d_model)")
    train.add_argument("--layers", type=_positive(int), default=2,
                       help="transformer: encoder and decoder blocks")
    train.add_argument("--heads", type=_positive(int), default=4,
                       help="transformer: attention heads")
    train.add_argument("--dropout", type=_fraction, default=0.1, help="transformer: dropout")
    train.add_argument("--epochs", type=_positive(int), default=30,
                       help="at most this many epochs (passes over the training pairs)")
    train.add_argument("--min-epoch-steps", type=_positive(int), default=1,
                       help="updates per epoch at least (one dev evaluation each): an "
                            "epoch passes over few training pairs several times; try 50 "
                            "for a few hundred pairs, which patience would otherwise "
                            "stop after a handful of updates")
    train.add_argument("--batch-size", type=_positive(int), default=64,
                       help="pairs per update")
    train.add_argument("--learning-rate", type=_positive(float),
                       help="Adam's initial rate (default: 0.002 for rnn, 0.001 for "
                            "transformer)")
    train.add_argument("--label-smoothing", type=_fraction, default=0.1,
                       help="of the cross-entropy")
    train.add_argument("--coverage-loss", type=_non_negative, default=0.0,
                       help="weight of See et al.'s coverage loss on the alignments")
    train.add_argument("--patience", type=_positive(int), default=4,
                       help="stop after this many epochs without a better dev WER")
    train.add_argument("--average-epochs", type=_positive(int), default=1, metavar="K",
                       help="checkpoint averaging: evaluate and keep the mean of the last K "
                            "epochs' weights (default 1: the trained weights)")
    train.add_argument("--max-valid", type=_positive(int), default=2000,
                       help="dev inputs decoded after each epoch")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds the weights, the batches and a held-out dev split")
    train.add_argument("--time-budget", type=_positive(float),
                       help="stop after this many minutes (default: no limit)")
    train.add_argument("--max-steps", type=_positive(int),
                       help="stop after this many optimizer updates, a budget that does not "
                            "depend on the machine (default: no limit)")
    train.add_argument("--schedule", default="plateau", choices=["plateau", "linear"],
                       help="learning rate: halved after an epoch without dev improvement "
                            "(plateau), or falling linearly to 1%% of it over --max-steps "
                            "or the epochs (linear)")
    train.add_argument("--out", required=True,
                       help="folder for the best model (model.keras, model.vocab.json) "
                            "and what --resume needs (backup/, state.json)")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the training saved in --out")
    resume.add_argument("--overwrite", action="store_true",
                        help="start again in an --out that holds a trained model")
    train.add_argument("--verbose", type=int, choices=[0, 1, 2],
                       help="0 quiet, 1 progress bar, 2 one line per epoch (default: 1 "
                            "on a terminal, 2 when the output goes to a file or pipe)")


def _evaluate_parser(sub):
    evaluate = sub.add_parser("evaluate", help="error rates of a trained model on pairs",
                              formatter_class=_HelpFormatter)
    evaluate.add_argument("--model", required=True, action="append",
                          help="a folder from train (or its model.keras); repeat it "
                               "(--model A --model B) to decode several as one ensemble")
    evaluate.add_argument("--data", required=True,
                          help="a UTF-8 file of input<TAB>output lines, or cmudict, dates, "
                            "inflection-fr or inflection-es")
    evaluate.add_argument("--split", default="test", choices=["test", "dev"],
                          help="of a built-in data set")
    _add_beam_options(evaluate)
    evaluate.add_argument("--predictions",
                          help="write input<TAB>prediction lines to this file "
                               "(default: none written)")


def _translate_parser(sub):
    translate = sub.add_parser("translate", help="outputs of a trained model, one per line",
                               formatter_class=_HelpFormatter)
    translate.add_argument("--model", required=True, action="append",
                           help="a folder from train, or a model.keras from demo or train; "
                                "repeat it (--model A --model B) for an ensemble")
    translate.add_argument("--input", help="a UTF-8 file of inputs, one per line "
                                           "(default: the arguments, or stdin)")
    _add_beam_options(translate)
    translate.add_argument("--plot", help="write the attention heatmap of one input to this "
                                          "image file (default: no plot)")
    translate.add_argument("text", nargs="*",
                           help="inputs (default: --input, or stdin, answered line by line "
                                "as the lines arrive)")


def _export_parser(sub):
    export = sub.add_parser(
        "export", help="write a trained model as a TensorFlow SavedModel: strings in, "
                       "translations out", formatter_class=_HelpFormatter)
    export.add_argument("--model", required=True, action="append",
                        help="a folder from train, or a model.keras from demo or train; "
                             "repeat it (--model A --model B) for an ensemble")
    export.add_argument("--out", required=True,
                        help="the SavedModel folder to write (tf.saved_model.load reads it)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace what --out holds (default: refuse a folder that is "
                             "not empty)")
    _add_beam_options(export)


def parser():
    """The `attnkit` argument parser (imports nothing beyond the standard library)."""
    top = _Parser(prog="attnkit", description="The attention toolkit for Keras 3.",
                  formatter_class=_HelpFormatter)
    top.add_argument("--version", action=_Version,
                     help="print attnkit's, keras's and the backend's versions")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser,
                             metavar="{demo,train,evaluate,translate,export}")
    _demo_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _translate_parser(sub)
    _export_parser(sub)
    return top


def main(argv=None):
    """Runs `attnkit ARGS`; returns the exit status (2 for a user error)."""
    try:
        args = parser().parse_args(argv)
        problem = _environment.backend_problem()
        if problem:
            raise CommandError(problem)
        if args.command == "export" and _environment.configured_backend()[0] != "tensorflow":
            return _environment.rerun_under_tensorflow(sys.argv[1:] if argv is None else argv)
        _environment.use_compilation_cache()
        from attnkit_cli import commands

        return commands.run(args)
    except CommandError as error:
        print(f"attnkit: error: {error}", file=sys.stderr)
        return 2
