"""A dot-product attention layer as commonly written, done with attnkit: one
decoder step attends over its own encoder states.

The common version multiplies a rank-2 query `(B, D)` by keys `(B, S, D)`
with `tf.matmul(..., transpose_b=True)`, which broadcasts the query against
every batch row: each row's context mixes the whole batch. attnkit's layers read a
rank-2 query as one decoder step per batch row, on any Keras backend.

Run: KERAS_BACKEND=jax python examples/dot_product_attention.py
"""

import keras

import attnkit


def main():
    keras.utils.set_random_seed(0)
    query = keras.random.normal((10, 64))      # batch 10, one decoder step of 64
    key = keras.random.normal((10, 20, 64))    # 20 encoder states per batch row
    value = keras.random.normal((10, 20, 64))
    layer = attnkit.layers.DotProductAttention("dot")  # the unscaled q . k of that layer
    context, weights = layer(query, value, key, return_attention_scores=True)
    print("context", tuple(context.shape))     # (10, 64): one context per batch row
    print("weights", tuple(weights.shape))     # (10, 20): row b over its own keys
    return {"query": query, "key": key, "value": value,
            "context": context, "weights": weights}


if __name__ == "__main__":
    main()
