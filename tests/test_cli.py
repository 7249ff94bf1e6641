"""The `attnkit` command: in process through `attnkit.app.cli.main`, and a few
smoke tests of the installed command in a fresh interpreter (what needs
one: imports, start-up, a missing backend)."""

import json
import os
import shutil
import subprocess
import sys
import time

import keras
import pytest

from attnkit.app import cli
from attnkit.app import training
from attnkit_cli import _environment
from attnkit_cli.commands import exact_match_percent
from tests.helpers import reversal_pairs
from tests.helpers import run_cli


def subprocess_cli(*args, env=None, timeout=600):
    """The installed command in a fresh interpreter."""
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONWARNINGS": "ignore",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "attnkit_cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def one_error_line(run, message):
    """The run failed with exit 2 and one `attnkit: error:` line holding `message`."""
    assert run.code == 2, (run.code, run.err[-2000:])
    errors = [line for line in run.err.splitlines() if line.startswith("attnkit: error:")]
    assert len(errors) == 1 and message in errors[0], run.err[-2000:]
    assert "Traceback" not in run.err


# --- the demo and translate ------------------------------------------------


def test_transformer_demo_and_translate(transformer_demo):
    out, stdout = transformer_demo
    assert "transformer model, relative attention" in stdout
    assert sum(line.startswith("exact match: ") for line in stdout.splitlines()) == 1
    run = run_cli("translate", "--model", str(out / "model.keras"), "1er mai 2020")
    assert run.code == 0, run.err[-3000:]
    assert set(run.out.strip()) <= set("0123456789-")


def test_demo_end_to_end_on_a_tiny_setting(demo):
    out, stdout = demo
    lines = stdout.splitlines()
    match = [line for line in lines if line.startswith("exact match: ")]
    assert len(match) == 1
    percent, count = match[0][len("exact match: "):].split(" ")
    right, total = map(int, count.strip("()").split("/"))
    assert total == 20 and 0 <= right <= 20
    assert percent == exact_match_percent(right, total)
    assert any(line.startswith("input") and "expected" in line and "predicted" in line
               for line in lines)
    for name in ("model.keras", "model.vocab.json", "attention.png"):
        assert (out / name).stat().st_size > 0


def test_exact_match_is_rounded_down():
    assert exact_match_percent(1999, 2000) == "99.9%"
    assert exact_match_percent(2000, 2000) == "100.0%"
    assert exact_match_percent(1959, 2000) == "97.9%"


def test_translate_prints_one_line_and_plots(demo, tmp_path):
    out, _ = demo
    plot = tmp_path / "one.png"
    run = run_cli("translate", "--model", str(out / "model.keras"), "--plot", str(plot),
                  "3 de marzo de 2021")
    assert run.code == 0, run.err[-3000:]
    assert len(run.out.strip().splitlines()) == 1
    assert set(run.out.strip()) <= set("0123456789-")
    assert plot.stat().st_size > 0


def test_the_installed_command_translates_in_a_fresh_process(demo, tmp_path, monkeypatch):
    """The one end-to-end run of the command as a user types it; on JAX it
    keeps its compiled programs in the user's cache folder."""
    out, _ = demo
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    run = subprocess_cli("translate", "--model", str(out), "1er mai 2020",
                         env={"XDG_CACHE_HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    cached = list((tmp_path / "attnkit" / "jax").glob("*"))
    assert bool(cached) == (keras.backend.backend() == "jax")
    assert run.stdout.strip() == run_cli("translate", "--model", str(out),
                                         "1er mai 2020").out.strip()


@pytest.mark.parametrize("args, message", [
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    (["demo", "--epochs", "0"], "--epochs: must be positive"),
    (["demo", "--model", "transformer", "--attention", "additive"],
     "does not fit --model transformer"),
    (["translate", "--model", "/nonexistent/model.keras", "1 May 2020"], "no model file"),
    (["translate", "--model", "{demo}/model.keras", "   "], "empty"),
    (["translate", "--model", "{demo}/model.keras", "3 März ☃ 2021"], "outside the vocabulary"),
    (["translate", "--model", "{corrupt}", "1 May 2020"], "not a .keras archive (a zip file)"),
    (["translate", "--model", "{emptyzip}", "1 May 2020"], "lacks config.json, model.weights.h5"),
])
def test_bad_input_gives_one_error_line(args, message, demo, tmp_path):
    import zipfile

    out, _ = demo
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(b"not a zip file")
    (tmp_path / "model.vocab.json").write_text((out / "model.vocab.json").read_text())
    emptyzip = tmp_path / "empty" / "model.keras"
    emptyzip.parent.mkdir()
    with zipfile.ZipFile(emptyzip, "w") as archive:
        archive.writestr("metadata.json", "{}")
    (emptyzip.parent / "model.vocab.json").write_text((out / "model.vocab.json").read_text())
    args = [a.format(demo=out, corrupt=corrupt, emptyzip=emptyzip) for a in args]
    one_error_line(run_cli(*args), message)


def test_the_command_offers_every_attention_kind_of_the_models():
    import attnkit_cli
    from attnkit.models import rnn_seq2seq
    from attnkit.models import transformer_seq2seq

    assert attnkit_cli.RNN_ATTENTION == rnn_seq2seq.ATTENTION_KINDS
    assert attnkit_cli.TRANSFORMER_ATTENTION == transformer_seq2seq.POSITION_KINDS
    for command in ("demo", "train"):
        text = run_cli(command, "--help").out
        for kind in rnn_seq2seq.ATTENTION_KINDS + transformer_seq2seq.POSITION_KINDS:
            assert kind in text, (command, kind)


def test_version_names_attnkit_keras_and_the_backend():
    import attnkit

    run = run_cli("--version")
    assert run.code == 0, run.err[-2000:]
    assert run.out.strip() == (f"attnkit {attnkit.__version__} (keras {keras.__version__}, "
                               f"backend {keras.backend.backend()})")


def test_help_and_version_import_neither_keras_nor_a_backend():
    """A fresh interpreter answers `--help` and `--version` from the
    standard library alone, at once."""
    script = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "import attnkit_cli\n"
        "for args in (['--version'], ['--help'], ['train', '--help'], ['demo', '--help'],\n"
        "             ['evaluate', '--help'], ['translate', '--help']):\n"
        "    try:\n"
        "        attnkit_cli.main(args)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, args\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} &\n"
        "               {'keras', 'attnkit', 'numpy', 'tensorflow', 'jax', 'torch'})\n"
        "print('SECONDS', time.perf_counter() - start, 'HEAVY', heavy)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": keras.backend.backend()})
    assert run.returncode == 0, run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1].split()
    assert last[0] == "SECONDS" and last[2] == "HEAVY" and last[3:] == ["[]"], last
    assert float(last[1]) < 0.5
    start = time.perf_counter()
    version = subprocess_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("attnkit ")
    assert time.perf_counter() - start < 2.0  # the interpreter's start included


def test_every_option_has_help_and_says_its_default():
    parser = cli.parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for name, command in commands.items():
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = command._get_formatter()._get_help_string(action) % {
                "default": action.default}
            assert action.help, (name, action.option_strings)
            explained = "default" in text or action.required or action.const is True
            assert explained, (name, action.option_strings, text)


def test_missing_optional_dependency_is_named_before_any_work(tmp_path, monkeypatch):
    """Without matplotlib, `demo` stops at once and names the extra."""
    real = _environment.installed
    monkeypatch.setattr(_environment, "installed",
                        lambda module: module != "matplotlib" and real(module))
    start = time.perf_counter()
    run = run_cli("demo", "--out", str(tmp_path))
    one_error_line(run, "pip install 'attnkit[plot]'")
    assert time.perf_counter() - start < 10  # no training first


@pytest.mark.parametrize("setting, message", [
    (dict(), "keras's backend is tensorflow (from keras's default (KERAS_BACKEND is not set)), "
             "which is not installed; installed: "),
    (dict(KERAS_BACKEND="tensorflow"), "keras's backend is tensorflow (from KERAS_BACKEND)"),
    (dict(KERAS_BACKEND="mxnet"), "which keras does not know; set KERAS_BACKEND"),
])
def test_a_missing_backend_is_named_with_the_installed_ones(setting, message, tmp_path,
                                                            monkeypatch):
    """Only another backend installed and keras set to tensorflow: one line
    naming KERAS_BACKEND and what is installed, for every command."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no keras.json there
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    real = _environment.installed
    monkeypatch.setattr(_environment, "installed",
                        lambda module: module != "tensorflow" and real(module))
    for args in (["translate", "--model", "m", "x"], ["train", "--data", "dates", "--out", "o"],
                 ["evaluate", "--model", "m", "--data", "dates"], ["demo"]):
        run = run_cli(*args)
        one_error_line(run, message)
    if not setting:
        assert "set KERAS_BACKEND=jax" in run.err  # the first installed backend
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    one_error_line(run_cli("demo"), f"(from {tmp_path / 'keras.json'})")


def test_a_missing_backend_in_a_fresh_process(tmp_path):
    """The real thing: tensorflow hidden from a fresh interpreter whose
    keras is configured for it; `--help` works, a command names the fix."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    env = {"KERAS_BACKEND": "tensorflow", "KERAS_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = subprocess_cli("train", "--help", env=env)
    assert run.returncode == 0 and "--data" in run.stdout, run.stderr[-2000:]
    run = subprocess_cli("translate", "--model", str(tmp_path), "x", env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "keras's backend is tensorflow (from KERAS_BACKEND), which is not installed" \
        in run.stderr


# --- train, evaluate, translate on one's own pairs ----------------------------


@pytest.mark.slow
def test_commands_train_evaluate_and_translate(tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in reversal_pairs(300, 0)))
    out = tmp_path / "model"
    run = run_cli("train", "--data", str(data), "--target-unit", "word", "--units", "8",
                  "--epochs", "2", "--out", str(out))
    assert run.code == 0, run.err[-3000:]
    assert "best dev: WER" in run.out and (out / "model.keras").is_file()
    # Not a terminal: one line per epoch, no progress bar.
    assert "\u2501" not in run.out
    assert sum("loss:" in line for line in run.out.splitlines()) == 2
    test = tmp_path / "test.tsv"
    pairs = reversal_pairs(30, 5)
    test.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    run = run_cli("evaluate", "--model", str(out), "--data", str(test),
                  "--predictions", str(tmp_path / "pred.tsv"))
    assert run.code == 0, run.err[-3000:]
    written = [line.split("\t") for line in (tmp_path / "pred.tsv").read_text().splitlines()]
    refs = training.references(pairs)
    assert [s for s, _ in written] == list(refs)
    right = sum(p in refs[s] for s, p in written)
    assert f"{len(refs)} inputs: WER {100 * (1 - right / len(refs)):.2f}% ({right} right)" \
        in run.out
    inputs = [s for s, _ in written[:3]]
    (tmp_path / "in.txt").write_text("\n".join(inputs) + "\n")
    by_args = run_cli("translate", "--model", str(out), *inputs)
    by_file = run_cli("translate", "--model", str(out), "--input", str(tmp_path / "in.txt"))
    by_stdin = run_cli("translate", "--model", str(out), stdin="\n".join(inputs) + "\n")
    assert by_args.code == 0 and by_file.code == 0 and by_stdin.code == 0, by_args.err[-2000:]
    assert by_args.out.splitlines() == by_file.out.splitlines() == \
        by_stdin.out.splitlines() == [p for _, p in written[:3]]
    penalized = run_cli("translate", "--model", str(out), "--beam", "3",
                        "--length-penalty", "0.6", "--coverage-penalty", "0.2", *inputs)
    assert penalized.code == 0, penalized.err[-2000:]
    assert penalized.out.splitlines() == training.load(out).translate(
        inputs, beam=3, length_penalty=0.6, coverage_penalty=0.2)


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent.tsv", "--out", "{tmp}/x"], "no such file"),
    (["train", "--data", "{bad}", "--out", "{tmp}/x"], "expected `input<TAB>output`"),
    (["train", "--data", "{bad}", "--train-size", "5", "--out", "{tmp}/x"],
     "applies to cmudict"),
    (["train", "--data", "dates", "--epochs", "0", "--out", "{tmp}/x"],
     "--epochs: must be positive"),
    (["evaluate", "--model", "/nonexistent", "--data", "dates"], "no model file"),
    (["translate", "--model", "x", "--plot", "p.png", "--beam", "2", "abc"], "drop --beam"),
    (["translate", "--model", "x", "--length-penalty", "0.6", "abc"], "give --beam 2"),
    (["evaluate", "--model", "x", "--data", "dates", "--beam", "2", "--coverage-penalty",
      "-1"], "--coverage-penalty: must be >= 0"),
    (["train", "--data", "{latin1}", "--out", "{tmp}/x"],
     "latin1.tsv:2: not UTF-8 text (byte 0xe0 at column 1)"),
    (["translate", "--model", "x", "--input", "{mixed}"],
     "mixed.txt:3: not UTF-8 text (byte 0xe9 at column 6)"),
    (["train", "--data", "dates", "--out", "{file}"], "is a file; give a folder"),
    (["demo", "--out", "{file}"], "is a file; give a folder"),
    (["train", "--data", "dates", "--resume", "--out", "{tmp}/nothing"],
     "--resume: nothing to resume, {tmp}/nothing does not exist"),
    (["train", "--data", "dates", "--resume", "--out", "{tmp}"],
     "--resume: nothing to resume, {tmp} has no backup or state.json"),
    (["train", "--data", "dates", "--resume", "--overwrite", "--out", "{tmp}"],
     "not allowed with argument --resume"),
])
def test_command_errors_are_one_line(args, message, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one field\n")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("ab\tA B\n\u00e0 caf\u00e9\tK A F E\n".encode("latin-1"))
    mixed = tmp_path / "mixed.txt"  # UTF-8 lines, then one in Latin-1
    mixed.write_bytes("ab\n\u00e0 la\n\u00e0 caf".encode("utf-8") + b"\xe9\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    fill = dict(bad=bad, latin1=latin1, mixed=mixed, file=a_file, tmp=tmp_path)
    run = run_cli(*[a.format(**fill) for a in args])
    one_error_line(run, message.format(**fill))


def another_model(folder, out):
    """`folder`'s model with its output layer's weights reversed in order
    and scaled up (as confident as the trained one, and wrong), written to
    `out` with the same vocabularies: another model that can join it in an
    ensemble."""
    translator = training.load(folder)
    logits = translator.model.get_layer("logits")
    logits.kernel.assign(4.0 * keras.ops.flip(logits.kernel, axis=0))
    out.mkdir()
    translator.save(out)
    return out


def test_several_models_evaluate_and_translate_as_one_ensemble(trained, demo, tmp_path):
    """Two --model decode as `training.load(a, b)` (which differs from each
    model alone here), and an ensemble saved by `Translator.save` loads
    back as one; models with other vocabularies are refused in one line."""
    out, _ = trained
    other = another_model(out, tmp_path / "other")
    pairs = reversal_pairs(40, 5)
    inputs = list(training.references(pairs))
    both = training.load(out, other)
    want = both.translate(inputs, beam=2)
    alone = [training.load(folder).translate(inputs, beam=2) for folder in (out, other)]
    assert want != alone[0] and want != alone[1]
    test = tmp_path / "test.tsv"
    test.write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    run = run_cli("evaluate", "--model", str(out), "--model", str(other / "model.keras"),
                  "--data", str(test), "--beam", "2", "--predictions", str(tmp_path / "p.tsv"))
    assert run.code == 0, run.err[-2000:]
    written = [line.split("\t")[1] for line in (tmp_path / "p.tsv").read_text().splitlines()]
    assert written == want
    run = run_cli("translate", "--model", str(out), "--model", str(other), *inputs[:4])
    assert run.code == 0, run.err[-2000:]
    assert run.out.splitlines() == both.translate(inputs[:4])
    (tmp_path / "saved").mkdir()
    both.save(tmp_path / "saved")
    assert training.load(tmp_path / "saved").translate(inputs, beam=2) == want
    with pytest.raises(ValueError, match="2 translators but 1 names"):
        training.ensemble_translators([training.load(out), training.load(other)], ["a"])
    refused = run_cli("translate", "--model", str(out), "--model", str(demo[0]), "abc")
    one_error_line(refused, f"{demo[0] / 'model.keras'} has another source vocabulary than")


def test_translate_answers_each_line_of_stdin_as_it_arrives(trained, monkeypatch):
    """A filter: the answer to a line is out before the next line is read."""
    import contextlib
    import io

    out_dir = trained[0]
    inputs = [s for s, _ in reversal_pairs(3, 7)]
    expected = training.load(out_dir).translate(inputs)
    printed = io.StringIO()
    seen_before_reading = []

    class Arriving:  # a pipe that another program writes one line at a time
        def __init__(self):
            self.lines = [f"{text}\n".encode() for text in inputs]

        def read1(self, size):
            seen_before_reading.append(printed.getvalue().splitlines())
            return self.lines.pop(0) if self.lines else b""

    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": Arriving()})())
    with contextlib.redirect_stdout(printed):
        code = cli.main(["translate", "--model", str(out_dir)])
    assert code == 0
    assert printed.getvalue().splitlines() == expected
    # before the k-th read, the answers to the k-1 lines read so far
    assert seen_before_reading == [expected[:k] for k in range(len(inputs) + 1)]

    # a bad byte in a later read is named by its line in the whole stream
    stdin = Arriving()
    stdin.lines = [b"abc\n\n", b"d\xffe\n"]
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": stdin})())
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        code = cli.main(["translate", "--model", str(out_dir)])
    assert code == 2
    assert "stdin:3: not UTF-8 text (byte 0xff at column 2)" in errors.getvalue()


def test_stdin_lines_are_numbered_across_reads():
    from attnkit_cli.commands import _arriving_lines

    class Chunks:
        def __init__(self, chunks):
            self.chunks = list(chunks)

        def read1(self, size):
            return self.chunks.pop(0) if self.chunks else b""

    batches = list(_arriving_lines(Chunks([b"ab\ncd", b"e\nf\n", b"g"])))
    assert batches == [[b"ab\n"], [b"cde\n", b"f\n"], [b"g"]]
    assert [len(b) for b in _arriving_lines(Chunks([b"x\n" * 10]), most=4)] == [4, 4, 2]
    run = run_cli("translate", "--model", "missing", stdin=b"")
    one_error_line(run, "no model file at missing")


def test_stdin_that_is_not_utf8_names_its_line(trained):
    run = run_cli("translate", "--model", str(trained[0]), stdin=b"abc\n\xff\n")
    one_error_line(run, "stdin:2: not UTF-8 text (byte 0xff at column 1)")


def test_a_trained_out_is_not_overwritten_unless_asked(trained, tmp_path):
    out, _ = trained
    for name in training.RUN_FILES:
        if (out / name).is_dir():
            shutil.copytree(out / name, tmp_path / name)
        elif (out / name).exists():
            (tmp_path / name).write_bytes((out / name).read_bytes())

    def files():
        return {path: path.read_bytes() for path in tmp_path.rglob("*")
                if path.is_file() and path.relative_to(tmp_path).parts[0] in training.RUN_FILES}

    before = files()
    assert {path.name for path in before} >= {"model.keras", "state.json"}
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in reversal_pairs(60, 0)))
    run = run_cli("train", "--data", str(data), "--out", str(tmp_path), "--epochs", "1")
    one_error_line(run, "already holds a trained model")
    assert "give --resume to continue it, --overwrite to replace it" in run.err
    assert files() == before
    run = run_cli("train", "--data", str(data), "--out", str(tmp_path), "--epochs", "1",
                  "--units", "8", "--max-steps", "1", "--overwrite")
    assert run.code == 0, run.err[-2000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["steps"] == 1 and state["epoch"] == 1  # a new run, not the old one


@pytest.mark.slow
def test_the_progress_display_counts_the_steps_that_ran(tmp_path):
    """`--max-steps 2` stops within the first epoch: its line says 2 of
    its 4 steps, as state.json counts them."""
    data, valid = tmp_path / "pairs.tsv", tmp_path / "dev.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in reversal_pairs(128, 0)))
    valid.write_text("".join(f"{s}\t{t}\n" for s, t in reversal_pairs(8, 1)))
    run = run_cli("train", "--data", data, "--valid", valid, "--out", tmp_path / "run",
                  "--units", "8", "--batch-size", "32", "--max-steps", "2", "--verbose", "2")
    assert run.code == 0, run.err[-2000:]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["steps"] == 2
    lines = [line for line in run.out.splitlines() if "loss:" in line]
    assert len(lines) == 1 and lines[0].lstrip().startswith("2/4 "), run.out


def test_train_and_evaluate_need_no_package_beyond_a_backend(trained, tmp_path, monkeypatch):
    """The error rates are attnkit's own: no extra is needed for them."""
    monkeypatch.setitem(sys.modules, "rapidfuzz", None)  # any import of it fails
    test = tmp_path / "test.tsv"
    test.write_text("".join(f"{s}\t{t}\n" for s, t in reversal_pairs(10, 5)))
    run = run_cli("evaluate", "--model", str(trained[0]), "--data", str(test))
    assert run.code == 0 and "10 inputs: WER" in run.out, run.err[-2000:]


SERVE = r"""
import json, sys
class NoAttnkit:  # the export must serve without attnkit
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "attnkit":
            raise ImportError(name)
sys.meta_path.insert(0, NoAttnkit())
import tensorflow as tf
keras_before = {m for m in sys.modules if m.split(".")[0] == "keras"}
report = {}
for folder in sys.argv[2:]:
    loaded = tf.saved_model.load(folder)
    texts = tf.constant(json.loads(sys.argv[1]))
    report[folder] = [t.decode() for t in loaded.serve(texts).numpy()]
    default = loaded.signatures["serving_default"]
    report[folder + ":default"] = [t.decode() for t in next(iter(default(texts).values())).numpy()]
report["keras_imported"] = sorted({m for m in sys.modules if m.split(".")[0] == "keras"}
                                  - keras_before)
print("REPORT " + json.dumps(report))
"""


def test_export_writes_a_savedmodel_that_translates_without_attnkit(demo, tmp_path):
    """`attnkit export` (from any backend: it writes under TensorFlow) gives
    a SavedModel that a process without attnkit loads with
    tf.saved_model.load, and that answers as `attnkit translate` does,
    greedily and by beam search; text outside the vocabulary gets "". The
    beam search one is an ensemble of two models."""
    out, _ = demo
    texts = ["1er mai 2020", "MAY 2, 1943", "23-10-1938", "Freitag, 5. Juni 2026"]
    greedy, beam = tmp_path / "greedy", tmp_path / "beam"
    other = another_model(out, tmp_path / "other")
    for folder, options in ((greedy, []), (beam, ["--model", other, "--beam", "3",
                                                  "--length-penalty", "0.6"])):
        run = run_cli("export", "--model", out, "--out", folder, *options)
        assert run.code == 0, run.err[-3000:]
        assert f"wrote {folder}" in run.out
    want_greedy = run_cli("translate", "--model", out, *texts).out.split()
    want_beam = training.load(out, other).translate(texts, beam=3, length_penalty=0.6)
    served = subprocess.run([sys.executable, "-c", SERVE, json.dumps(texts + ["☃ 2020", ""]),
                             str(greedy), str(beam)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    report = json.loads(served.stdout.split("REPORT ", 1)[1])
    assert report[str(greedy)] == want_greedy + ["", ""]
    assert report[str(beam)] == want_beam + ["", ""]
    assert report[f"{greedy}:default"] == report[str(greedy)]
    assert report["keras_imported"] == []
    one_error_line(run_cli("export", "--model", out, "--out", greedy), "not empty")


def test_inflection_data_without_its_package_is_one_error_line(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlconjug3" else find_spec(name, *a))
    run = run_cli("train", "--data", "inflection-fr", "--out", str(tmp_path / "x"))
    one_error_line(run, "pip install --no-deps mlconjug3")


@pytest.mark.slow
def test_train_and_evaluate_on_inflection(tmp_path):
    """`--data inflection-es`: lemma characters and features in, characters
    out; evaluate adds the shared task's accuracy and mean distance."""
    out = tmp_path / "es"
    run = run_cli("train", "--data", "inflection-es", "--train-size", "100", "--units", "8",
                  "--epochs", "1", "--max-valid", "20", "--min-epoch-steps", "3",
                  "--average-epochs", "2", "--out", str(out))
    assert run.code == 0, run.err[-2000:]
    assert "100 training pairs, 1000 dev pairs" in run.out
    # 100 pairs make 2 batches of 64; at least 3 updates take 2 passes.
    assert json.loads((out / "state.json").read_text())["steps"] == 4
    assert (out / "averaged.npz").is_file()  # checkpoint averaging's window
    vocab = json.loads((out / "model.vocab.json").read_text())
    assert (vocab["source_unit"], vocab["target_unit"]) == ("word", "char")
    assert "IND" in vocab["source"] and "IND" not in vocab["target"]
    run = run_cli("evaluate", "--model", str(out), "--data", "inflection-es", "--split", "dev")
    assert run.code == 0, run.err[-2000:]
    lines = run.out.splitlines()
    assert lines[0].startswith("1000 inputs: WER ")
    wer = float(lines[0].split("WER ")[1].split("%")[0])
    accuracy = float(lines[1].split("accuracy ")[1].split("%")[0])
    assert abs(accuracy - (100 - wer)) < 0.006 and "mean Levenshtein distance" in lines[1]
