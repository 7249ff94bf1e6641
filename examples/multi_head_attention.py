"""A multi-head attention layer as commonly written, done with attnkit.

The common version projects with four `Dense` layers and reshapes by hand.
`attnkit.layers.MultiHeadAttention` takes keras's arguments and weights
(so keras code switches by changing the import) and adds grouped key/value
heads, positions and a decoding cache.

Run: KERAS_BACKEND=torch python examples/multi_head_attention.py
"""

import keras
from keras import ops

import attnkit


def main():
    keras.utils.set_random_seed(0)
    batch, length, embedding_dim, num_heads = 4, 12, 64, 8
    x = keras.random.normal((batch, length, embedding_dim))

    # Same weights as keras's layer, same outputs.
    theirs = keras.layers.MultiHeadAttention(num_heads, embedding_dim // num_heads)
    ours = attnkit.layers.MultiHeadAttention(num_heads, embedding_dim // num_heads)
    theirs(x, x)
    ours(x, x)
    ours.set_weights(theirs.get_weights())
    keras_out, ours_out = theirs(x, x), ours(x, x)
    print("output", tuple(ours_out.shape))

    # Beyond keras: 2 key/value heads for 8 query heads, rotary positions,
    # and decoding one token at a time with a cache.
    decoder = attnkit.layers.MultiHeadAttention(
        num_heads, embedding_dim // num_heads, num_key_value_heads=2,
        position=attnkit.layers.RotaryEmbedding())
    full = decoder(x, x, use_causal_mask=True)
    cache = ops.zeros((batch, 2, length, 2, embedding_dim // num_heads))
    steps = []
    for i in range(length):
        step = x[:, i:i + 1]
        out, cache = decoder(step, step, cache=cache, cache_update_index=i,
                             use_causal_mask=True)
        steps.append(out)
    cached = ops.concatenate(steps, axis=1)
    gap = ops.max(ops.abs(cached - full))
    print("cached decoding vs full forward, largest difference:", float(ops.convert_to_numpy(gap)))
    return {"keras": keras_out, "ours": ours_out, "full": full, "cached": cached}


if __name__ == "__main__":
    main()
