"""attnkit measured side by side with keras and the frameworks' own
attention kernels, on every backend: `python -m benchmarks.attention` (from
the repository root; `make bench`).

`run(out_dir, backends, quick, suites)` starts one process per backend for
the timed suites (competitors alternate in that process, after warm-ups;
medians are reported with the machine's matmul peak measured in the same
process) and one fresh process per memory case, then writes `results.csv`,
`results.md` and `results.png` into `out_dir`. Run with some of the suites,
it keeps the other suites' rows from the `results.csv` already there.
"""

import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.attention import _report

BACKENDS = ("tensorflow", "jax", "torch")
SUITES = ("ops", "mha", "relative", "decoding", "memory")

FULL = {
    "timeout_s": 900,  # per memory case; four times that for the timed suites
    "peak_size": 2048,
    "repeats": 3,
    "ops": {"lengths": [128, 512, 1024, 2048, 4096, 8192, 16384], "tokens": 8192,
            "max_backward_length": 4096},
    "mha": {"lengths": [128, 512, 1024, 2048, 4096], "tokens": 8192,
            "max_backward_length": 4096},
    "relative": {"length": 2048, "batch": 8},
    "decoding": {"steps": 256, "units": 512, "layers": 4, "torch_compile": True},
    "memory": [
        *({"suite": "ops", "competitor": c, "length": 4096, "batch": 1, "passes": "fwd+bwd"}
          for c in ("attnkit", "attnkit:math", "attnkit:chunked", "attnkit:fused",
                    "keras.ops", "native")),
        {"suite": "ops", "competitor": "attnkit", "length": 32768, "batch": 1,
         "passes": "fwd+bwd"},
        # a custom training loop without tf.function / jit
        {"suite": "ops", "competitor": "attnkit:chunked", "length": 4096, "batch": 1,
         "passes": "fwd+bwd eager"},
        *({"suite": "relative", "competitor": c, "length": 2048, "batch": 8,
           "passes": "fwd+bwd"} for c in ("attnkit Shaw", "gather Shaw")),
        *({"suite": "relative", "competitor": c, "length": 4096, "batch": 1,
           "passes": "fwd+bwd"}
          for c in ("attnkit MHA", "attnkit MHA Shaw", "attnkit MHA T5", "attnkit MHA ALiBi")),
    ],
}

# Tiny sizes: checks that every suite runs and the report is written.
QUICK = {
    "timeout_s": 300,
    "peak_size": 256,
    "repeats": 1,
    "ops": {"lengths": [64, 128], "tokens": 256, "max_backward_length": 128},
    "mha": {"lengths": [64], "tokens": 128, "max_backward_length": 64},
    "relative": {"length": 64, "batch": 2},
    "decoding": {"steps": 8, "units": 32, "layers": 1},
    "memory": [
        {"suite": "ops", "competitor": "attnkit", "length": 256, "batch": 1,
         "passes": "fwd+bwd"},
        {"suite": "ops", "competitor": "attnkit:chunked", "length": 256, "batch": 1,
         "passes": "fwd+bwd eager"},
        {"suite": "relative", "competitor": "gather Shaw", "length": 64, "batch": 2,
         "passes": "fwd+bwd"},
    ],
}


def _worker(backend, config, log, timeout_s):
    """Runs one worker process; returns its rows (an error row if it failed)."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    if "memory" in config:
        # glibc then maps every block of 128 KiB or more on its own and
        # unmaps it when freed, so resident memory follows what is live
        # (otherwise freed blocks stay resident in per-thread arenas).
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
        # oneDNN keeps TensorFlow's large buffers resident from one run to
        # the next: every steady run then read 0-1 MiB, whatever it held.
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    # The worker imports this package: the repository root on its path.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "benchmarks.attention._worker", json.dumps(config)]
    what = config.get("memory", {}).get("competitor", "timed suites")
    rows = []
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors,
                                text=True)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:  # rows arrive as they are measured
                if line.startswith("ROW "):
                    rows.append(json.loads(line[4:]))
                    log("  " + _describe(rows[-1]))
            proc.wait()
        finally:
            timer.cancel()
        errors.seek(0)
        reason = (errors.read().strip().splitlines()[-1:] or ["(no output)"])[0]
    failed = proc.returncode != 0
    if proc.returncode == -9:
        reason = f"stopped after {timeout_s} s"
    if failed:
        log(f"  {backend}: {what} failed: {reason}")
        rows.append({"backend": backend, "suite": "error", "competitor": what,
                     "note": reason[:200]})
    return rows


def _describe(row):
    ms = "-" if row.get("ms") is None else f"{row['ms']:.1f} ms"
    memory = "" if row.get("memory_mib") is None else f", {row['memory_mib']:.0f} MiB"
    return f"{row['suite']} {row['passes']} L={row['length']} {row['competitor']}: {ms}{memory}"


def run(out_dir, backends=BACKENDS, quick=False, suites=SUITES, log=print):
    """Runs the suites; returns the rows and writes the report files."""
    config = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = _kept_rows(out_dir / "results.csv", backends, suites)
    rows, started = [], time.time()
    timed = {k: v for k, v in config.items() if k in suites and k != "memory"}
    for backend in backends:
        if timed:
            log(f"{backend}: timed suites {', '.join(timed)}")
            rows += _worker(backend, dict(timed, peak_size=config["peak_size"],
                                          repeats=config["repeats"]),
                            log, timeout_s=config["timeout_s"] * 4)
        for case in config["memory"] if "memory" in suites else ():
            log(f"{backend}: memory {case['suite']} {case['competitor']} L={case['length']}")
            rows += _worker(backend, {"memory": case}, log, timeout_s=config["timeout_s"])
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    here = _report.machine()
    elsewhere = sorted({r["machine"] or "a machine not recorded" for r in kept} - {here})
    if elsewhere:
        log(f"kept rows measured on another machine ({'; '.join(elsewhere)}): "
            "the report names each run's machine")
    rows = kept + [dict(r, run=when, machine=here) for r in rows]
    _report.write(rows, out_dir, quick=quick, seconds=time.time() - started)
    return rows


def _kept_rows(path, backends, suites):
    """Rows of an earlier `results.csv` that this run does not measure again."""
    if set(suites) == set(SUITES) or not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    timed_again = any(s in suites for s in SUITES if s != "memory")
    kept, peaks = [], []
    for row in rows:
        if row["suite"] == "error" and row["backend"] in backends:
            continue
        if row["suite"] == "peak":
            peaks.append(_report.parsed(row))
            continue
        group = "memory" if row["suite"].startswith("memory:") else row["suite"]
        if row["backend"] in backends and group in suites:
            continue  # measured again now
        kept.append(_report.parsed(row))
    # A run's matmul peak stays while any of its timed rows (whose % of
    # peak it gave) stays, or while nothing measures the peak again.
    timed_runs = {(r["backend"], r["run"]) for r in kept if not r["suite"].startswith("memory:")}
    kept += [r for r in peaks if not (timed_again and r["backend"] in backends)
             or (r["backend"], r["run"]) in timed_runs]
    return kept
