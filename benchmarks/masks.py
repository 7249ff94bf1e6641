"""What a mask costs: attnkit against keras and PyTorch's FlexAttention,
side by side on every backend.

Masks: full, causal, a causal sliding window of 256 keys, 8 equal documents
(packed sequences, each attending within itself) and prefix-LM (the first
quarter of the keys seen by every query, the rest causally). Shapes: B=1,
T = S = L, N = 8 heads of H = 64, float32.

Competitors, alternated in one process per backend after a warm-up:
- `attnkit`: `attnkit.ops.attention` with its default path and the mask as
  attnkit takes it (`is_causal`, `sliding_window`, `segment_ids`,
  `mask_mod=prefix_lm_mask(L // 4)`);
- `keras`: `keras.ops.dot_product_attention` with the same mask as a dense
  `(1, 1, L, L)` boolean (what keras's `MultiHeadAttention` is given; it
  holds every score), skipped where it would hold more than 6 GiB;
- `flex` (PyTorch only): `torch.compile(flex_attention)` with the mask's
  `create_block_mask`; its first call (compilation) is reported apart. It
  has no backward on CPU (PyTorch 2.13): forward only.

Each figure is the median of `--repeats` timed calls, compiled as each
framework runs fastest (`jax.jit`, `tf.function`, PyTorch eager), forward
and forward + backward (w.r.t. q, k, v), with the resident memory each call
adds above the level before it (sampled). Then the layer: attnkit's
`MultiHeadAttention(use_causal_mask=True)` training step (forward +
backward w.r.t. the input and weights) against keras's at L = 4096, E = 512.

    python benchmarks/masks.py --out benchmarks/results

writes `masks.csv`, `masks.md` (tables and the targets) and `masks.png`.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: the repository root for `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = ("tensorflow", "jax", "torch")
MASKS = ("full", "causal", "window 256", "8 documents", "prefix-LM")
HEADS, HEAD_DIM, WINDOW, DOCUMENTS = 8, 64, 256, 8
KERAS_LIMIT = 6 * 2**30
FIELDS = ["backend", "mask", "length", "passes", "competitor", "ms", "first_s", "mib", "note"]


def _visible(mask, length):
    """NumPy (L, L) visibility of `mask` (True = may attend)."""
    import numpy as np

    q = np.arange(length)[:, None]
    k = np.arange(length)[None, :]
    if mask == "full":
        return np.ones((length, length), bool)
    if mask == "causal":
        return k <= q
    if mask == "window 256":
        return (k <= q) & (q - k < WINDOW)
    if mask == "8 documents":
        doc = np.arange(length) * DOCUMENTS // length
        return doc[:, None] == doc[None, :]
    return (k < length // 4) | (k <= q)


def attnkit_fn(mask, length):
    from keras import ops

    import attnkit

    kwargs = _attnkit_kwargs(mask, length)
    if "segment_ids" in kwargs:  # a tensor, as a model feeds it
        kwargs["segment_ids"] = ops.convert_to_tensor(kwargs["segment_ids"], "int32")
    return lambda q, k, v: attnkit.ops.attention(q, k, v, **kwargs)


def keras_fn(mask, length):
    from keras import ops

    if mask == "full":
        return lambda q, k, v: ops.dot_product_attention(q, k, v)
    dense = ops.convert_to_tensor(_visible(mask, length)[None, None])
    return lambda q, k, v: ops.dot_product_attention(q, k, v, mask=dense)


def flex_fn(mask, length):
    import torch
    from torch.nn.attention import flex_attention as fa

    def causal(b, h, q, k):
        return q >= k

    def window(b, h, q, k):
        return (q >= k) & (q - k < WINDOW)

    doc = torch.arange(length) * DOCUMENTS // length

    def documents(b, h, q, k):
        return doc[q] == doc[k]

    def prefix(b, h, q, k):
        return (k < length // 4) | (q >= k)

    mods = {"causal": causal, "window 256": window, "8 documents": documents,
            "prefix-LM": prefix}
    block_mask = None if mask == "full" else \
        fa.create_block_mask(mods[mask], 1, 1, length, length, device="cpu")
    compiled = torch.compile(fa.flex_attention)

    def run(q, k, v):
        out = compiled(*(x.transpose(1, 2) for x in (q, k, v)), block_mask=block_mask)
        return out.transpose(1, 2)

    return run


def _first_and_runner(fn, inputs, variables, backward):
    from benchmarks.attention import _harness

    start = time.perf_counter()
    run = _harness.runner(fn, inputs, variables, backward)
    run()
    return time.perf_counter() - start, run


def measure(backend, lengths, backward_lengths, repeats, emit, layer_length=4096,
            masks=MASKS):
    import keras
    import numpy as np
    from keras import ops

    from benchmarks.attention import _harness

    def tensor(shape, seed):
        return ops.convert_to_tensor(
            np.random.default_rng(seed).normal(size=shape).astype("float32"))

    for length in sorted(set(lengths) | set(backward_lengths)):
        q, k, v = (tensor((1, length, HEADS, HEAD_DIM), i) for i in range(3))
        for passes, timed in (("fwd", lengths), ("fwd+bwd", backward_lengths)):
            if length not in timed:
                continue
            backward = passes == "fwd+bwd"
            for mask in masks:
                fns = {"attnkit": attnkit_fn(mask, length)}
                copies = 6 if backward else 3
                if copies * HEADS * length * length * 4 <= KERAS_LIMIT:
                    fns["keras"] = keras_fn(mask, length)
                # FlexAttention has no backward on CPU, and its CPU kernel
                # holds about 6.7 GiB for documents and prefix-LM at L = 8192
                # (this machine has 24).
                if backend == "torch" and not backward and (
                        length <= 8192 or mask not in ("8 documents", "prefix-LM")):
                    fns["flex"] = flex_fn(mask, length)
                firsts, runners = {}, {}
                for name, fn in fns.items():
                    firsts[name], runners[name] = _first_and_runner(fn, [q, k, v], (),
                                                                    backward)
                times = _harness.time_side_by_side(
                    runners, repeats=repeats, warmup=0)
                for name, run in runners.items():
                    note = ""
                    if name == "attnkit":
                        import attnkit

                        explained = attnkit.ops.explain(
                            q, k, v, **_attnkit_kwargs(mask, length))
                        note = explained.implementation
                        if explained.computed_blocks is not None:
                            note += f", {100 * explained.computed_blocks:.0f}% of blocks"
                    emit(dict(backend=backend, mask=mask, length=length, passes=passes,
                              competitor=name, ms=times[name] * 1e3, first_s=firsts[name],
                              mib=_harness.steady_peak_mib(run), note=note))
    # The layer: a causal training step (E = 512).
    if not layer_length:
        return
    length = layer_length
    x = tensor((1, length, HEADS * HEAD_DIM), 5)
    import attnkit

    ours = attnkit.layers.MultiHeadAttention(HEADS, HEAD_DIM)
    theirs = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM)
    ours(x[:, :8], x[:, :8])
    theirs(x[:, :8], x[:, :8])
    theirs.set_weights(ours.get_weights())
    firsts, runners = {}, {}
    for name, layer in (("attnkit MHA", ours), ("keras MHA", theirs)):
        firsts[name], runners[name] = _first_and_runner(
            lambda x, layer=layer: layer(x, x, use_causal_mask=True), [x],
            layer.trainable_variables, True)
    times = _harness.time_side_by_side(runners, repeats=repeats, warmup=0)
    for name, run in runners.items():
        emit(dict(backend=backend, mask="causal (layer)", length=length, passes="train step",
                  competitor=name, ms=times[name] * 1e3, first_s=firsts[name],
                  mib=_harness.steady_peak_mib(run), note="E = 512"))


MEMORY_CASES = ("attnkit MHA", "attnkit MHA Shaw", "attnkit MHA T5", "attnkit MHA ALiBi",
                "keras MHA")


def first_call_memory(backend, competitor, mode, length, emit):
    """The resident memory the first causal training step of a layer adds
    (compilation included), in this fresh process: `mode` "compiled"
    (`tf.function` / `jax.jit`; PyTorch is eager either way) or "eager" (a
    `GradientTape` / `jax.grad` without them)."""
    import keras
    import numpy as np
    from keras import ops

    import attnkit
    from benchmarks.attention import _cases
    from benchmarks.attention import _harness

    x = ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(1, length, HEADS * HEAD_DIM)).astype("float32"))
    if competitor == "keras MHA":
        layer = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM)
    else:
        layer = attnkit.layers.MultiHeadAttention(
            HEADS, HEAD_DIM, position=_cases.POSITION_LAYERS[competitor]())
    layer(x[:, :8], x[:, :8])
    before = _harness.rss_peak_mib()
    start = time.perf_counter()
    run = _harness.runner(lambda x: layer(x, x, use_causal_mask=True), [x],
                          layer.trainable_variables, True, eager=mode == "eager")
    run()
    emit(dict(backend=backend, mask="causal (layer)", length=length,
              passes=f"first train step, {mode}", competitor=competitor,
              ms=(time.perf_counter() - start) * 1e3, first_s=time.perf_counter() - start,
              mib=_harness.rss_peak_mib() - before, note="E = 512"))


def _attnkit_kwargs(mask, length):
    import numpy as np

    import attnkit

    return {"full": {}, "causal": {"is_causal": True},
            "window 256": {"is_causal": True, "sliding_window": WINDOW},
            "8 documents": {"segment_ids": (np.arange(length) * DOCUMENTS // length)[None]},
            "prefix-LM": {"mask_mod": attnkit.ops.prefix_lm_mask(length // 4)}}[mask]


def _ms(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return float(found[0]["ms"]) if found else None


def targets(rows):
    """(target, backend, value, met) rows of the block-sparse targets."""
    out = []
    for b in sorted({r["backend"] for r in rows}):
        def ratio(num, den):
            return None if num is None or den is None else num / den

        for passes in ("fwd", "fwd+bwd"):
            r = ratio(_ms(rows, backend=b, mask="full", length=4096, passes=passes,
                          competitor="attnkit"),
                      _ms(rows, backend=b, mask="causal", length=4096, passes=passes,
                          competitor="attnkit"))
            out.append((f"causal >= 1.8x faster than full, L=4096, {passes}", b, r,
                        r is not None and r >= 1.8))
        r = ratio(_ms(rows, backend=b, mask="window 256", length=16384, passes="fwd",
                      competitor="attnkit"),
                  _ms(rows, backend=b, mask="window 256", length=4096, passes="fwd",
                      competitor="attnkit"))
        out.append(("window 256: L=16384 <= 4.5x its L=4096 time", b, r,
                    r is not None and r <= 4.5))
        r = ratio(_ms(rows, backend=b, mask="full", length=8192, passes="fwd",
                      competitor="attnkit"),
                  _ms(rows, backend=b, mask="8 documents", length=8192, passes="fwd",
                      competitor="attnkit"))
        out.append(("8 documents >= 5x faster than full, L=8192", b, r,
                    r is not None and r >= 5))
        r = ratio(_ms(rows, backend=b, mask="causal (layer)", passes="train step",
                      competitor="keras MHA"),
                  _ms(rows, backend=b, mask="causal (layer)", passes="train step",
                      competitor="attnkit MHA"))
        out.append(("MHA causal train step >= 1.5x keras's, L=4096", b, r,
                    r is not None and r >= 1.5))
    for b in sorted({r["backend"] for r in rows}):
        firsts = [float(r["mib"]) for r in rows if r["backend"] == b
                  and r["passes"].startswith("first") and r["competitor"] != "keras MHA"]
        worst = max(firsts) if firsts else None
        out.append(("MHA causal first train step, L=4096: <= 150 MiB (worst case)", b, worst,
                    worst is not None and worst <= 150))
    flex = {(r["mask"], int(r["length"]), r["passes"]): float(r["ms"])
            for r in rows if r["competitor"] == "flex"}
    window = flex.get(("window 256", 4096, "fwd"))
    for b in sorted({r["backend"] for r in rows}):
        mine = _ms(rows, backend=b, mask="window 256", length=4096, passes="fwd",
                   competitor="attnkit")
        r = None if mine is None or window is None else mine / window
        out.append(("window 256, L=4096: <= 1.5x FlexAttention's time", b, r,
                    r is not None and r <= 1.5))
    return out


def markdown(rows):
    timed = [r for r in rows if not r["passes"].startswith("first")]
    first = [r for r in rows if r["passes"].startswith("first")]
    lines = ["# What a mask costs", "",
             "B=1, N=8, H=64, float32; one process per backend, medians. ms: "
             "milliseconds per call; first: the first call in seconds "
             "(compilation included); ran: the path attnkit's default took and the share "
             "of block pairs it computed.", ""]
    lines += ["## Targets", "", "| target | backend | value | met |", "| --- | --- | ---: | --- |"]
    for name, b, value, met in targets(rows):
        shown = "-" if value is None else f"{value:.2f}"
        lines.append(f"| {name} | {b} | {shown} | {'yes' if met else 'no'} |")
    lines += ["", "## Every case", "",
              "| backend | mask | L | pass | competitor | ms | first (s) | ran |",
              "| --- | --- | ---: | --- | --- | ---: | ---: | --- |"]
    for r in timed:
        lines.append(f"| {r['backend']} | {r['mask']} | {r['length']} | {r['passes']} | "
                     f"{r['competitor']} | {float(r['ms']):.1f} | "
                     f"{float(r['first_s']):.1f} | {r['note']} |")
    if first:
        lines += ["", "## First training step: memory", "",
                  "Peak resident memory the first causal training step of the layer adds "
                  "(forward + backward, compilation included), one fresh process each.", "",
                  "| backend | layer | mode | MiB | seconds |", "| --- | --- | --- | ---: | ---: |"]
        for r in first:
            lines.append(f"| {r['backend']} | {r['competitor']} | {r['passes'][18:]} | "
                         f"{float(r['mib']):.0f} | {float(r['first_s']):.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in BACKENDS if any(r["backend"] == b for r in rows)]
    fig, axes = plt.subplots(len(backends), 1, figsize=(7, 3.2 * len(backends)),
                             squeeze=False)
    for ax, b in zip(axes[:, 0], backends):
        for mask in MASKS:
            for name, style in (("attnkit", "-o"), ("flex", ":^"), ("keras", "--s")):
                pts = sorted((int(r["length"]), float(r["ms"])) for r in rows
                             if r["backend"] == (b if name != "flex" else "torch")
                             and r["mask"] == mask and r["competitor"] == name
                             and r["passes"] == "fwd")
                if pts and (name != "flex" or b == "torch"):
                    ax.plot(*zip(*pts), style, label=f"{name} {mask}", markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{b}: forward, ms per call")
        ax.set_xlabel("L")
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--lengths", default="1024,4096,8192,16384")
    parser.add_argument("--backward-lengths", default="1024,4096")
    parser.add_argument("--layer-length", type=int, default=4096,
                        help="L of the layer's training step (0: no layer step)")
    parser.add_argument("--masks", default=",".join(MASKS), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true",
                        help="only the first-call memory of the layers")
    parser.add_argument("--timed-only", action="store_true",
                        help="skip the first-call memory of the layers")
    parser.add_argument("--merge", help="a masks.csv whose rows to keep beside these")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",") if x]
    backward = [int(x) for x in args.backward_lengths.split(",") if x]
    if args.worker and args.memory_case:
        competitor, mode = args.memory_case.split(":")
        first_call_memory(args.worker, competitor, mode, args.layer_length,
                          lambda row: print("ROW " + json.dumps(row), flush=True))
        return 0
    if args.worker:
        measure(args.worker, lengths, backward, args.repeats,
                lambda row: print("ROW " + json.dumps(row), flush=True), args.layer_length,
                [m for m in args.masks.split(",") if m])
        return 0
    rows = []
    root = str(Path(__file__).resolve().parents[1])
    for backend in [b for b in args.backends.split(",") if b]:
        env = dict(os.environ, KERAS_BACKEND=backend,
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        common = ["--masks", args.masks, "--lengths", args.lengths, "--backward-lengths", args.backward_lengths,
                  "--repeats", str(args.repeats), "--layer-length", str(args.layer_length)]
        jobs = [[]] if not args.memory_only else []
        if not args.timed_only:
            jobs += [["--memory-case", f"{c}:{m}"] for c in MEMORY_CASES
                     for m in ("compiled", "eager")]
        for extra in jobs:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", backend,
                 *common, *extra], env=env, stdout=subprocess.PIPE, text=True)
            for line in proc.stdout:
                if line.startswith("ROW "):
                    rows.append(json.loads(line[4:]))
                    r = rows[-1]
                    print(f"{backend} {r['mask']} L={r['length']} {r['passes']} "
                          f"{r['competitor']}: {r['ms']:.1f} ms, {r['mib']:.0f} MiB", flush=True)
            if proc.wait() != 0:
                print(f"{backend}: a worker failed ({' '.join(extra) or 'timed cases'})",
                      flush=True)
    if args.merge:
        with open(args.merge, newline="") as f:
            kept = [dict(r, length=int(r["length"]), ms=float(r["ms"]),
                         first_s=float(r["first_s"]), mib=float(r["mib"]))
                    for r in csv.DictReader(f)]
        rows = [r for r in kept if not any(
            n["backend"] == r["backend"] and n["passes"] == r["passes"]
            and n["competitor"] == r["competitor"] and n["mask"] == r["mask"]
            and n["length"] == r["length"] for n in rows)] + rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "masks.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "masks.md").write_text(markdown(rows))
    plot(rows, out / "masks.png")
    print(f"wrote {out}/masks.csv, masks.md, masks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
