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


def _unannotated(signature):
    return signature.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty)
                    for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty)


def test_attention_signature_is_the_promised_one():
    """The promised parameters, in order, with their kinds and defaults
    (type hints aside); anything added since is keyword-only with a default."""
    signature = _unannotated(inspect.signature(ak.attention))
    promised = len([p for p in PROMISED.strip("()").split(", ") if p != "*"])
    parameters = list(signature.parameters.values())
    head = signature.replace(parameters=parameters[:promised])
    assert str(head) == PROMISED
    for added in parameters[promised:]:
        assert added.kind is inspect.Parameter.KEYWORD_ONLY, added
        assert added.default is not inspect.Parameter.empty, added
    assert attnkit.ops.attention is ak.attention


def test_every_exported_name_exists():
    for name in ak.__all__:
        assert callable(getattr(ak, name)), name
