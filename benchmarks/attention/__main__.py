"""`python -m benchmarks.attention [--backends ...] [--suites ...] [--quick]
[--out DIR]`: attnkit against keras and the frameworks' kernels."""

import argparse
import sys

from benchmarks import attention


def _names(flag, text, allowed, parser):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or set(names) - set(allowed):
        parser.error(f"{flag} takes {', '.join(allowed)}; got {text!r}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch",
                        help="comma-separated, run one after another")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--suites", default="ops,mha,relative,decoding,memory",
                        help="comma-separated; the other suites' rows are kept from "
                             "the results.csv already in --out")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every case runs (seconds)")
    args = parser.parse_args(argv)
    backends = _names("--backends", args.backends, attention.BACKENDS, parser)
    suites = _names("--suites", args.suites, attention.SUITES, parser)
    rows = attention.run(args.out, backends=backends, quick=args.quick, suites=suites,
                         log=lambda line: print(line, flush=True))
    print(f"wrote {args.out}/results.csv, results.md, results.png")
    return 1 if any(r["suite"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
