"""One benchmark process: `python -m benchmarks.attention._worker CONFIG_JSON`.

Runs on the backend named by KERAS_BACKEND and prints one `ROW {json}` line
per result. With a `memory` key it measures that one case (it should be the
only thing this process does, since peak memory only grows).
"""

import json
import sys

import keras


def _emit(row):
    row = dict(row, backend=keras.backend.backend())
    print("ROW " + json.dumps(row), flush=True)


def main(config):
    from benchmarks.attention import _cases
    from benchmarks.attention import _harness

    if "memory" in config:
        case = config["memory"]
        if case["competitor"] == "native" and _cases.native_attention() is None:
            return  # TensorFlow has no attention kernel of its own
        first, steady, seconds = _cases.memory_case(**case)
        _emit(dict(case, suite="memory:" + case["suite"], implementation=case["competitor"],
                   ms=seconds * 1e3, gflops=None, peak_fraction=None, memory_mib=steady,
                   note=f"first run, compilation included: {first:.0f} MiB"))
        return
    peak = _harness.matmul_peak_gflops(config["peak_size"])
    _emit(dict(suite="peak", competitor="matmul", implementation="matmul",
               length=config["peak_size"], batch=1, passes="fwd", ms=None, gflops=peak,
               peak_fraction=1.0, memory_mib=None, note="float32 n x n matmul"))
    if "ops" in config:
        ops_cfg = config["ops"]
        for row in _cases.ops_suite(ops_cfg["lengths"], ops_cfg["tokens"],
                                    ops_cfg["max_backward_length"], config["repeats"], peak):
            _emit(row)
    if "mha" in config:
        mha = config["mha"]
        for row in _cases.mha_suite(mha["lengths"], mha["tokens"], mha["max_backward_length"],
                                    config["repeats"], peak):
            _emit(row)
    if "relative" in config:
        rel = config["relative"]
        for row in _cases.relative_suite(rel["length"], rel["batch"], config["repeats"], peak):
            _emit(row)
    if "decoding" in config:
        dec = config["decoding"]
        for row in _cases.decoding_suite(dec["steps"], dec["units"], dec["layers"],
                                         config["repeats"], dec.get("torch_compile", False)):
            _emit(row)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
