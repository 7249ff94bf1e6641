"""Peak extra memory of one attention forward: math vs chunked vs fused.

Each case runs in a fresh process (peak RSS only grows), on the backend
named by KERAS_BACKEND. Usage:

    KERAS_BACKEND=torch .venv/bin/python benchmarks/chunked_memory.py 4096

Prints one line per implementation: MiB above the process's RSS before the
call, against the size of one float32 (B, N, L, L) score tensor.
"""

import os
import subprocess
import sys

CASE = r"""
import resource, keras, attnkit
L, impl = {L}, {impl!r}
q = keras.random.normal((1, L, 8, 64))
keras.ops.convert_to_numpy(attnkit.ops.attention(q[:, :8], q[:, :8], q[:, :8]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = attnkit.ops.attention(q, q, q, is_causal=True, implementation=impl)
float(keras.ops.convert_to_numpy(keras.ops.sum(out)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def main():
    length = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    scores_mib = 8 * length * length * 4 / 2**20
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"backend={backend} L={length} B=1 N=8 H=64; one score tensor = {scores_mib:.0f} MiB")
    for impl in ["math", "chunked", "fused"]:
        code = CASE.format(L=length, impl=impl)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = run.stdout.strip().splitlines()[-1] if run.returncode == 0 else "error: " + run.stderr.strip().splitlines()[-1]
        print(f"  {impl:8s} peak extra MiB: {line}")


if __name__ == "__main__":
    main()
