"""AttentionSpec: what an attention layer fixes once, validated once.

Shape legend: B batch, N query heads, T query length, S key length.
"""

import dataclasses
from collections.abc import Callable

from attnkit import _checks
from attnkit.ops import _fused
from attnkit.ops.terms import deserialize_term
from attnkit.ops.terms import register
from attnkit.ops.terms import serialize_term

_TERMS = ("score_mod", "mask_mod", "weights_mod")


@register
@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """The options of `attnkit.ops.attention` that a layer fixes when it is
    built, checked once, and taken by the core as they are.

    A layer builds its spec in its constructor and passes it to every call
    as `spec=`; what changes from call to call (the tensors, masks and
    biases, `is_causal`, `q_offset`, `training`, the dropout `seed`,
    `return_weights`, documents and block masks) stays a call argument.
    An option given both in the spec and to the call is refused. A spec
    saves with keras (`get_config`) and its terms with it.

    Args:
        scale: multiplies `q . k`; None is `1 / sqrt(H)`.
        sliding_window: the band of visible positions, or None.
        score_mod: `score_mod(scores, b, h, q_idx, kv_idx)`, or None.
        mask_mod: `mask_mod(b, h, q_idx, kv_idx) -> bool`, or None.
        weights_mod: `weights_mod(weights)` after the normalizer, or None.
        logit_soft_cap: `c` of `c * tanh(s / c)`, or None.
        dropout_rate: dropout on the weights in training.
        implementation: None, `"math"`, `"fused"` or `"chunked"`.
        normalizer: `"softmax"`, `"sparsemax"` or `"entmax15"`.

    Example:

        >>> spec = attnkit.ops.AttentionSpec(sliding_window=4, logit_soft_cap=30.0)
        >>> q = keras.random.normal((2, 6, 2, 8))
        >>> out = attnkit.ops.attention(q, q, q, is_causal=True, spec=spec)
        >>> tuple(out.shape)
        (2, 6, 2, 8)
    """

    scale: float | None = None
    sliding_window: int | None = None
    score_mod: Callable | None = None
    mask_mod: Callable | None = None
    weights_mod: Callable | None = None
    logit_soft_cap: float | None = None
    dropout_rate: float = 0.0
    implementation: str | None = None
    normalizer: str = "softmax"

    def __post_init__(self):
        for name in _TERMS:
            object.__setattr__(self, name, deserialize_term(getattr(self, name)))
        _checks.check_options(
            scale=self.scale, q_offset=0, sliding_window=self.sliding_window,
            score_mod=self.score_mod, mask_mod=self.mask_mod, weights_mod=self.weights_mod,
            logit_soft_cap=self.logit_soft_cap, dropout_rate=self.dropout_rate,
            implementation=self.implementation, normalizer=self.normalizer)
        if self.implementation == "fused":
            refusals = _fused.option_refusals(
                normalizer=self.normalizer, weights_mod=self.weights_mod,
                score_mod=self.score_mod, logit_soft_cap=self.logit_soft_cap)
            if refusals:
                raise ValueError(
                    "implementation='fused' runs the backend's native kernel, which cannot "
                    f"compute {'; '.join(refusals)}. Leave implementation=None: attnkit "
                    "then runs these on its chunked or math path (attnkit.ops.explain says "
                    "which).")

    def replace(self, **changes):
        """A copy with `changes`, checked."""
        return dataclasses.replace(self, **changes)

    def options(self):
        """The spec as keyword arguments of `attnkit.ops.attention`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def get_config(self):
        config = self.options()
        for name in _TERMS:
            config[name] = serialize_term(config[name], name)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


DEFAULTS = {f.name: f.default for f in dataclasses.fields(AttentionSpec)}
