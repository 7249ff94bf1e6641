"""CachedMultiHeadAttention: KerasHub's cached attention layer, on attnkit.

Shape legend: B batch, T query length, S key length (S_max with a cache),
N query heads, K key/value heads, H key head dim, D features.
"""

import contextlib
import sys

import keras

from attnkit.layers.multi_head.multi_head_attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="attnkit")
class CachedMultiHeadAttention(MultiHeadAttention):
    """attnkit's `MultiHeadAttention` with the call of KerasHub's
    `keras_hub.layers.CachedMultiHeadAttention`.

    The constructor is `MultiHeadAttention`'s (keras's arguments and
    attnkit's). `call(query, value, key=None, attention_mask=None,
    cache=None, cache_update_index=None, return_attention_scores=False,
    training=None)` has KerasHub's order and meaning: without a cache, plain
    attention; with a cache `(B, 2, S_max, K, H)` and no index, the cached
    keys and values are read as they are; with an index, this call's keys
    and values are written there first. It returns `output`,
    `(output, scores)`, `(output, cache)` or `(output, scores, cache)`.

    Example:

        >>> layer = attnkit.layers.CachedMultiHeadAttention(num_heads=2, key_dim=4)
        >>> x = keras.random.normal((1, 3, 8))
        >>> cache = keras.ops.zeros((1, 2, 5, 2, 4))
        >>> y, cache = layer(x[:, :1], x[:, :1], cache=cache, cache_update_index=0)
        >>> tuple(y.shape), tuple(cache.shape)
        ((1, 1, 8), (1, 2, 5, 2, 4))
    """

    def call(self, query, value, key=None, attention_mask=None, cache=None,
             cache_update_index=None, return_attention_scores=False, training=None):
        return super().call(
            query, value, key=key, attention_mask=attention_mask,
            return_attention_scores=return_attention_scores, training=training,
            cache=cache, cache_update_index=cache_update_index)

    def compute_output_spec(self, query, value, key=None, attention_mask=None,
                            cache=None, cache_update_index=None,
                            return_attention_scores=False, training=None):
        return super().compute_output_spec(
            query, value, key=key, attention_mask=attention_mask,
            return_attention_scores=return_attention_scores, cache=cache,
            cache_update_index=cache_update_index)


@contextlib.contextmanager
def substitute_keras_attention():
    """Layers built inside run on attnkit: keras's `MultiHeadAttention` and,
    where KerasHub is imported, its `CachedMultiHeadAttention`.

    Code that builds its layers from `keras.layers.MultiHeadAttention` (as
    KerasHub's BERT, GPT-2, OPT, BART, ViT and Transformer layers do) gets
    attnkit's `MultiHeadAttention`; KerasHub's modules that import
    `CachedMultiHeadAttention` get attnkit's. Both have the same weights in
    the same order as what they replace. Everything is put back on exit;
    layers made inside stay attnkit's. Layers that make their attention in
    `build()` (KerasHub's `TransformerEncoder` and `TransformerDecoder`) do
    so at their first call or `build`: do that inside the block too (a
    model built from them, as `GPT2Backbone`, builds them at once).

    Example:

        >>> with attnkit.layers.substitute_keras_attention():
        ...     layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
        >>> type(layer).__module__
        'attnkit.layers.multi_head.multi_head_attention'
    """
    from keras.src import layers as keras_src_layers

    swaps = [(keras.layers, "MultiHeadAttention", MultiHeadAttention),
             (keras_src_layers, "MultiHeadAttention", MultiHeadAttention)]
    hub = sys.modules.get("keras_hub.src.layers.modeling.cached_multi_head_attention")
    if hub is not None:
        original = hub.CachedMultiHeadAttention
        for name, module in list(sys.modules.items()):
            if name.startswith("keras_hub") and \
                    getattr(module, "CachedMultiHeadAttention", None) is original:
                swaps.append((module, "CachedMultiHeadAttention", CachedMultiHeadAttention))
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    try:
        for module, name, replacement in swaps:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
