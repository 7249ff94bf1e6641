"""The names and signatures promised to users stay as promised."""

import inspect

import attnkit
import attnkit.ops as ak

PROMISED = (
    "(query, key, value, *, bias=None, mask=None, scale=None, "
    "is_causal=False, q_offset=0, sliding_window=None, score_mod=None, "
    "mask_mod=None, logit_soft_cap=None, dropout_rate=0.0, seed=None, "
    "training=False, return_weights=False, implementation=None, normalizer='softmax')"
)


def test_attention_signature_is_the_promised_one():
    assert str(inspect.signature(ak.attention)) == PROMISED
    assert attnkit.ops.attention is ak.attention


def test_every_exported_name_exists():
    for name in ak.__all__:
        assert callable(getattr(ak, name)), name
