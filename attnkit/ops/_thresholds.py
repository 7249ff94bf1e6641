"""Every measured constant of the core in one place (the one about how
PyTorch's kernel is called lives with that call, in `attnkit._backends`).

Each was measured with `make bench` (the benchmarks/ folder) on 2-core CPUs,
side by side in one run; the documentation's Benchmarks page has the tables.
"""

# When `implementation=None` goes chunked, per backend: from this many keys
# on, or wherever the dense path would hold a (B, N, T, S) float32 tensor of
# more than 64 MiB (2^24 elements): past that the blocks' memory (T * block)
# matters more than the last few percent of speed. On JAX the blocks win
# from 1024 keys (XLA:CPU maps fresh pages for every large buffer).
# PyTorch takes its SDPA kernel whenever it can (it holds no (T, S) scores
# for plain and causal attention), and the blocks past 2^24 elements when it
# cannot. `implementation="chunked"` asks for the blocks at any size.
CHUNK_FROM_KEYS = {"tensorflow": 8192, "jax": 1024, "torch": 4096}
CHUNK_THRESHOLD = {"tensorflow": 1 << 24, "jax": 1 << 24, "torch": 1 << 24}

# A sliding window, documents (segment ids) or a block mask leave most
# blocks empty at length: the chunked path skips them and wins over every
# dense path from this many keys, whatever the size (window 256, L = 2048:
# see the Benchmarks page's mask tables).
SPARSE_CHUNK_FROM_KEYS = 2048

# Where every key is visible and every logit finite, the framework's softmax
# replaces the masked one on the math path: one fused kernel on TensorFlow
# (1.5x faster forward+backward at L = 1024) and PyTorch. On JAX (XLA:CPU) it
# wins up to this many score elements (2x forward at L = 128, B = 64) and
# loses past it (1.5x slower forward at L = 1024, B = 8).
FRAMEWORK_SOFTMAX_MAX_ELEMENTS = {"jax": 1 << 24}

# The chunked path's default block sizes. 512 x 256 against 1024 x 512 at
# L = 4096, B = 1, N = 8, H = 64, causal, forward + backward: the same time
# or less on every backend, and about half the memory (each (B, N, t, s)
# temporary is 4 MiB instead of 16; PyTorch 240 -> 90 MiB, TensorFlow
# 200 -> 90 MiB). Relative attention takes smaller query blocks: only
# blocks within the saturation distance of the diagonal build a (t, s, R)
# one-hot, and smaller blocks leave fewer pairs in those (Shaw, L = 2048,
# clip 16: 1.2-2x faster than 1024 x 512 on every backend).
DEFAULT_BLOCKS = {"query": 512, "key": 256}
RELATIVE_BLOCKS = {"query": 256, "key": 256}
