"""The benchmark report: CSV of every row, a markdown summary, a PNG plot."""

import csv
import datetime
import os
import platform
from importlib import metadata

COLUMNS = ["backend", "suite", "passes", "length", "batch", "competitor", "implementation",
           "ms", "gflops", "peak_fraction", "memory_mib", "note", "run", "machine"]
_INTS = ("length", "batch")
_FLOATS = ("ms", "gflops", "peak_fraction", "memory_mib")
BACKENDS = ("tensorflow", "jax", "torch")
# Two timings closer than this are a tie on this noisy machine.
TIE = 0.05


def machine():
    """One line naming this machine and the software measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for package in ("keras", "tensorflow-cpu", "tensorflow", "jax", "torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return f"{cpu}, {os.cpu_count()} cores; " + ", ".join(versions)


def _find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _one(rows, key, **match):
    found = [r[key] for r in _find(rows, **match) if r.get(key) is not None]
    return found[0] if found else None


_MET = {True: "yes", False: "NO", None: "not run"}


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def targets(rows):
    """[(number, target, {backend: text}, met)] from one run's rows; met is
    None where the rows hold none of a target's figures (its suite not run)."""
    out = []
    backends = [b for b in BACKENDS if _find(rows, backend=b)]

    def per_backend(fn):
        return {b: fn(b) for b in backends}

    def mha_speedup(b, length, passes):
        return _ratio(_one(rows, "ms", backend=b, suite="mha", competitor="keras MHA",
                           length=length, passes=passes),
                      _one(rows, "ms", backend=b, suite="mha", competitor="attnkit MHA",
                           length=length, passes=passes))

    at_1024 = per_backend(lambda b: mha_speedup(b, 1024, "fwd+bwd"))
    out.append((1, "MHA fwd+bwd L=1024 B=8: keras time / attnkit time (>= 1.2)",
                {b: _fmt(v) + "x" for b, v in at_1024.items()},
                all(v is not None and v >= 1.2 for v in at_1024.values())))
    lengths = sorted({r["length"] for r in _find(rows, suite="mha")})
    worst = {}
    for b in backends:
        ratios = [mha_speedup(b, n, p) for n in lengths for p in ("fwd", "fwd+bwd")]
        ratios = [r for r in ratios if r is not None]
        worst[b] = min(ratios) if ratios else None
    out.append((1, f"MHA: smallest speed-up over keras, L={lengths[0] if lengths else '-'}"
                   f"..{lengths[-1] if lengths else '-'}, fwd and fwd+bwd (>= 1.0)",
                {b: _fmt(v) + "x" for b, v in worst.items()},
                all(v is not None and v >= 1.0 for v in worst.values())))
    fraction = per_backend(lambda b: _one(rows, "peak_fraction", backend=b, suite="ops",
                                          competitor="attnkit", length=2048, passes="fwd"))
    known = sorted((v for v in fraction.values() if v is not None), reverse=True)
    met = len(known) == len(backends) and bool(known) and known[0] >= 0.70 and all(
        v >= 0.45 for v in known[1:])
    out.append((2, "ops.attention fwd L=2048: fraction of measured matmul peak "
                   "(fastest >= 70%, others >= 45%)",
                {b: _fmt(None if v is None else 100 * v, ".0f") + "%" for b, v in fraction.items()},
                met))
    memory = per_backend(lambda b: _one(rows, "memory_mib", backend=b, suite="memory:ops",
                                        competitor="attnkit:chunked", length=4096,
                                        passes="fwd+bwd"))
    out.append((3, "chunked fwd+bwd L=4096 B=1 N=8 H=64: extra MiB (<= 150)",
                {b: _fmt(v, ".0f") for b, v in memory.items()},
                all(v is not None and v <= 150 for v in memory.values())))
    long_run = per_backend(lambda b: _one(rows, "ms", backend=b, suite="memory:ops",
                                          competitor="attnkit", length=32768))
    out.append((3, "fwd+bwd L=32768 runs: seconds (MiB)",
                {b: "-" if v is None else
                 f"{v / 1e3:.0f} s ({_fmt(_one(rows, 'memory_mib', backend=b, suite='memory:ops', competitor='attnkit', length=32768), '.0f')})"
                 for b, v in long_run.items()},
                all(v is not None for v in long_run.values())))
    rel_memory = per_backend(lambda b: _ratio(
        _one(rows, "memory_mib", backend=b, suite="memory:relative", competitor="attnkit Shaw"),
        _one(rows, "memory_mib", backend=b, suite="memory:relative", competitor="gather Shaw")))
    out.append((4, "Shaw L=2048 B=8 fwd+bwd: attnkit memory / gather memory (<= 0.25)",
                {b: _fmt(v) for b, v in rel_memory.items()},
                all(v is not None and v <= 0.25 for v in rel_memory.values())))
    rel_speed = {}
    for b in backends:
        ratios = [_ratio(_one(rows, "ms", backend=b, suite="relative", competitor="gather Shaw",
                              passes=p),
                         _one(rows, "ms", backend=b, suite="relative", competitor="attnkit Shaw",
                              passes=p)) for p in ("fwd", "fwd+bwd")]
        rel_speed[b] = None if None in ratios else min(ratios)
    out.append((4, "Shaw L=2048 B=8: gather time / attnkit time, worse of fwd and fwd+bwd (>= 1)",
                {b: _fmt(v) + "x" for b, v in rel_speed.items()},
                all(v is not None and v >= 1.0 for v in rel_speed.values())))
    decode = per_backend(lambda b: _ratio(
        _one(rows, "ms", backend=b, suite="decoding", competitor="recompute"),
        _one(rows, "ms", backend=b, suite="decoding", competitor="cached")))
    out.append((5, "greedy decoding: recompute time / cached time (>= 5)",
                {b: _fmt(v, ".1f") + "x" for b, v in decode.items()},
                all(v is not None and v >= 5 for v in decode.values())))
    choice = choice_table(rows)
    picks = {b: [c for c in choice if c["backend"] == b] for b in backends}
    out.append((6, f"implementation=None is the fastest eligible path (within {TIE:.0%})",
                {b: f"{sum(c['ok'] for c in cs)}/{len(cs)}" for b, cs in picks.items()},
                all(c["ok"] for c in choice)))
    return [_unmeasured_as_none(t) for t in out]


def _unmeasured_as_none(target):
    """A target none of whose figures this run measured: "-" and met None."""
    number, text, values, met = target
    if any(any(ch.isdigit() for ch in v) for v in values.values()):
        return target
    return number, text, {b: "-" for b in values}, None


def choice_table(rows):
    """For each backend, length and pass: what None ran, and the fastest path."""
    table = []
    for r in _find(rows, suite="ops", competitor="attnkit"):
        if r.get("ms") is None:
            continue
        paths = {}
        for impl in ("math", "chunked", "fused"):
            ms = _one(rows, "ms", backend=r["backend"], suite="ops",
                      competitor=f"attnkit:{impl}", length=r["length"], passes=r["passes"])
            if ms is not None:
                paths[impl] = ms
        if not paths:
            continue
        fastest = min(paths, key=paths.get)
        picked = r["implementation"]
        slowdown = paths.get(picked, r["ms"]) / paths[fastest] - 1
        table.append(dict(backend=r["backend"], length=r["length"], passes=r["passes"],
                          picked=picked, fastest=fastest, slowdown=slowdown,
                          ok=slowdown <= TIE, paths=paths))
    return table


def parsed(row):
    """A row read back from results.csv, with numbers as numbers."""
    row = dict(row)
    for key in _INTS + _FLOATS:
        value = row.get(key)
        row[key] = None if value in (None, "") else (int if key in _INTS else float)(value)
    row["note"] = row.get("note") or ""
    row["run"] = row.get("run") or "an earlier run"
    row["machine"] = row.get("machine") or ""  # results.csv before it was recorded
    return row


def _machines_by_run(rows):
    """{run: the machine it ran on}, runs in time order."""
    found = {}
    for r in rows:
        if r.get("run"):
            found.setdefault(r["run"], r.get("machine") or "machine not recorded")
    return dict(sorted(found.items()))


def write(rows, out_dir, quick=False, seconds=None):
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "results.md").write_text(markdown(rows, quick, seconds))
    plot(rows, out_dir / "results.png")


def markdown(rows, quick=False, seconds=None):
    backends = [b for b in BACKENDS if _find(rows, backend=b)]
    lines = ["# attnkit benchmark results", ""]
    when = datetime.date.today().isoformat()
    machines = _machines_by_run(rows)  # {run: machine}
    named = sorted(set(machines.values()))
    where = (f"Machine: {named[0]}" if len(named) == 1
             else "Machines: differ between runs (listed below)")
    lines.append(f"{where}. Written {when}"
                 + (f", this run {seconds / 60:.0f} min" if seconds else "")
                 + (" (--quick: tiny sizes, not for reading)" if quick else "") + ".")
    peak_runs = sorted({r.get("run") for r in _find(rows, suite="peak")}, key=str)
    peaks = "; ".join(
        ("" if len(machines) < 2 else f"{run}: ") + ", ".join(
            f"{b} {_fmt(_one(rows, 'gflops', backend=b, suite='peak', run=run), '.0f')}"
            for b in backends)
        for run in peak_runs or [None])
    lines += [f"Measured float32 matmul peak (GFLOP/s): {peaks}."]
    if len(machines) > 1:
        runs = [run + ("" if len(named) == 1 else f" on {machine}")
                for run, machine in machines.items()]
        lines.append(f"Rows come from {len(runs)} runs ({'; '.join(runs)}): the run column "
                     "says which; every ratio below compares rows of one run.")
    lines.append("")
    errors = _find(rows, suite="error")
    for e in errors:
        lines.append(f"- FAILED on {e['backend']}: {e['competitor']}: {e['note']}")
    lines += ["## Targets", "", "| # | target | " + " | ".join(backends) + " | met |",
              "|---|---|" + "---|" * len(backends) + "---|"]
    for number, text, values, met in targets(rows):
        cells = " | ".join(values.get(b, "-") for b in backends)
        lines.append(f"| {number} | {text} | {cells} | {_MET[met]} |")
    lines += ["", "## What implementation=None picks (ops.attention, B*L = 8192)", "",
              "| backend | L | pass | None picks | fastest | None's slowdown | math ms | chunked ms | fused ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in choice_table(rows):
        ms = [_fmt(c["paths"].get(i), ".1f") for i in ("math", "chunked", "fused")]
        lines.append(f"| {c['backend']} | {c['length']} | {c['passes']} | {c['picked']} | "
                     f"{c['fastest']} | {100 * c['slowdown']:.0f}% | " + " | ".join(ms) + " |")
    lines += ["", "## Timings (medians)", "",
              "| backend | suite | pass | L | B | competitor | ran | ms | GFLOP/s | % peak | note "
              "| run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["suite"] in ("ops", "mha", "relative", "decoding"):
            pct = None if r.get("peak_fraction") is None else 100 * r["peak_fraction"]
            lines.append(
                f"| {r['backend']} | {r['suite']} | {r['passes']} | {r['length']} | "
                f"{r['batch']} | {r['competitor']} | {r['implementation']} | "
                f"{_fmt(r.get('ms'), '.1f')} | {_fmt(r.get('gflops'), '.0f')} | "
                f"{_fmt(pct, '.0f')} | {r.get('note', '')} | {r.get('run', '')} |")
    lines += ["", "## Peak extra memory (fresh process per case)", "",
              "| backend | case | pass | L | B | competitor | extra MiB | seconds | note | run |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["suite"].startswith("memory:"):
            lines.append(
                f"| {r['backend']} | {r['suite'][7:]} | {r['passes']} | {r['length']} | "
                f"{r['batch']} | {r['competitor']} | {_fmt(r.get('memory_mib'), '.0f')} | "
                f"{_fmt(None if r.get('ms') is None else r['ms'] / 1e3, '.1f')} | {r.get('note', '')} | "
                f"{r.get('run', '')} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    """GFLOP/s against L, one panel per backend stacked (readable at a page's
    width), one colour per competitor, solid forward and dashed forward +
    backward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in BACKENDS if _find(rows, backend=b, suite="ops")]
    names = sorted({r["competitor"] for r in _find(rows, suite="ops")})
    colors = {name: plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(i)
              for i, name in enumerate(names)}
    fig, axes = plt.subplots(max(1, len(backends)), 1,
                             figsize=(7.5, 3.2 * max(1, len(backends))), squeeze=False)
    for ax, b in zip(axes[:, 0], backends):
        peak = _one(rows, "gflops", backend=b, suite="peak")
        for name in names:
            for passes, style in (("fwd", "-"), ("fwd+bwd", "--")):
                pts = sorted((r["length"], r["gflops"]) for r in _find(
                    rows, backend=b, suite="ops", competitor=name, passes=passes)
                    if r.get("gflops") is not None)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", markersize=3, color=colors[name],
                            label=f"{name} {passes}")
        if peak:
            ax.axhline(peak, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{b} (grey: matmul peak)", fontsize=10)
        ax.set_ylabel("GFLOP/s")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes[-1, 0].set_xlabel("sequence length L (B*L = 8192, 8 heads of 64)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
