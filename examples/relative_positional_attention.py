"""A relative-position attention layer as commonly written, complete.

The common version declares a `(2 * max_relative_position + 1,
embedding_dim)` table and leaves the rest "omitted for brevity". `RelativePositionalAttention` is
Shaw et al. 2018 in full (relative keys and values, clipped distances),
with masks, several heads and a decoding cache, on every Keras backend.
Because only distances matter, the same tokens shifted right (the padding
before them masked) give the same outputs.

Run: KERAS_BACKEND=tensorflow python examples/relative_positional_attention.py
"""

import keras
from keras import ops

import attnkit


def main():
    keras.utils.set_random_seed(0)
    layer = attnkit.layers.RelativePositionalAttention(
        num_heads=4, key_dim=16, clip_distance=10)
    tokens = keras.random.normal((2, 15, 64))
    out, scores = layer(tokens, tokens, return_attention_scores=True)
    print("output", tuple(out.shape), "scores", tuple(scores.shape))

    # Shift the sequence right by 5 padded, masked positions.
    shifted = ops.concatenate([ops.zeros((2, 5, 64)), tokens], axis=1)
    mask = ops.arange(20)[None, :] >= 5
    mask = ops.repeat(mask, 2, axis=0)
    moved = layer(shifted, shifted, query_mask=mask, value_mask=mask)[:, 5:]
    gap = ops.max(ops.abs(moved - out))
    print("shifted by 5, largest difference:", float(ops.convert_to_numpy(gap)))
    return {"out": out, "moved": moved, "scores": scores}


if __name__ == "__main__":
    main()
