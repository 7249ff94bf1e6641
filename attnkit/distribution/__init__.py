"""Sharding attnkit layers over many devices with `keras.distribution`.

`layout_map(mesh)` shards every attnkit attention layer's heads over the
mesh's model axis (Megatron-style: the query/key/value/gate projections by
output head, the output projection by input head, so each device computes
whole heads and one all-reduce joins them), the T5 bias table by head, the
feed-forward layers of the attnkit Transformer blocks by hidden unit, and
the self-attention caches by batch and key/value head.

Example (JAX, 8 devices as a 2 x 4 mesh):

```python
mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"])
keras.distribution.set_distribution(keras.distribution.ModelParallel(
    layout_map=attnkit.distribution.layout_map(mesh), batch_dim_name="batch"))
model = attnkit.models.build_transformer_seq2seq(...)  # created sharded
```
"""

import keras

from attnkit.types import Tensor

__all__ = ["layout_map"]


def layout_map(mesh: keras.distribution.DeviceMesh, model_axis: str = "model",
               batch_axis: str = "batch", shard_key_value: bool = True):
    """A `keras.distribution.LayoutMap` for attnkit layers on `mesh`.

    Args:
        mesh: a `keras.distribution.DeviceMesh` with a `model_axis` (and,
            for the caches, a `batch_axis`).
        model_axis: the mesh axis that heads and hidden units are split over;
            `num_heads` (and the feed-forward width) must be multiples of its
            size.
        batch_axis: the mesh axis the batch is split over (caches).
        shard_key_value: split the key/value projections and caches by
            key/value head too. Set it to False for grouped-query or
            multi-query layers whose `num_key_value_heads` is not a multiple
            of the model axis size: those are then replicated.

    Returns:
        A `LayoutMap` keyed by variable-path patterns, ready for
        `keras.distribution.ModelParallel(layout_map=...)`. Patterns match
        the weight names attnkit's layers (and keras's MultiHeadAttention,
        which shares them) use: a layer of another kind named `query`, `key`,
        `value`, `gate`, `attention_output`, `expand` or `contract` would
        match too. Shaw relative-position tables (a few kilobytes) and
        everything else stay replicated.
    """
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"`model_axis` {model_axis!r} is not an axis of the mesh "
            f"{tuple(mesh.axis_names)}.")
    batch = batch_axis if batch_axis in mesh.axis_names else None
    m = model_axis
    kv = m if shard_key_value else None
    layouts = keras.distribution.LayoutMap(mesh)
    layouts[r".*/(query|gate)/kernel"] = (None, m, None)  # (D, N, H)
    layouts[r".*/(query|gate)/bias"] = (m, None)  # (N, H)
    layouts[r".*/(key|value)/kernel"] = (None, kv, None)  # (D, K, H)
    layouts[r".*/(key|value)/bias"] = (kv, None)
    layouts[r".*/attention_output/kernel"] = (m, None, None)  # (N, Hv, D)
    layouts[r".*/t5_relative_bias[^/]*/embeddings"] = (None, m)  # (buckets, N)
    layouts[r".*/expand/kernel"] = (None, m)  # (D, F)
    layouts[r".*/expand/bias"] = (m,)
    layouts[r".*/contract/kernel"] = (m, None)  # (F, D)
    layouts[r".*/cache"] = (batch, None, None, kv, None)  # (B, 2, S_max, K, H)
    return layouts


def relayout(tensor: Tensor, path: str):
    """`tensor` placed by the current distribution's layout for `path`, if any."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return tensor
    layout = distribution.get_tensor_layout(path)
    if layout is None:
        return tensor
    return keras.distribution.distribute_tensor(tensor, layout)
