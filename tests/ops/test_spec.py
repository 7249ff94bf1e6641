"""AttentionSpec: the options a layer fixes once, checked once, taken by the
core as they are, against the float64 reference."""

import keras
import numpy as np
import pytest

import attnkit
import attnkit.ops as ak
from attnkit import _checks
from attnkit.testing import attention_reference
from tests.helpers import to_numpy

B, T, N, H = 2, 6, 2, 8


def _q(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, N, H)).astype("float32")


def test_a_spec_call_matches_the_reference():
    q = _q()
    spec = ak.AttentionSpec(sliding_window=3, logit_soft_cap=2.0, scale=0.7)
    got = ak.attention(q, q, q, is_causal=True, spec=spec)
    want, _ = attention_reference(q, q, q, is_causal=True, sliding_window=3,
                                  logit_soft_cap=2.0, scale=0.7)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_an_option_given_twice_or_a_bad_spec_is_refused():
    q = _q()
    with pytest.raises(ValueError, match="sliding_window given beside `spec`"):
        ak.attention(q, q, q, sliding_window=2, spec=ak.AttentionSpec(scale=0.5))
    with pytest.raises(ValueError, match="sliding_window"):
        ak.AttentionSpec(sliding_window=0)
    with pytest.raises(ValueError, match="normalizer"):
        ak.AttentionSpec(normalizer="softermax")
    with pytest.raises(TypeError, match="score_mod"):
        ak.AttentionSpec(score_mod="alibi")
    spec = ak.AttentionSpec(normalizer="sparsemax")
    with pytest.raises(ValueError, match="normalizer"):
        spec.replace(normalizer="bogus")
    with pytest.raises(Exception):
        spec.normalizer = "softmax"  # frozen: a spec is what was checked


def test_a_spec_saves_with_its_terms_and_in_a_functional_model(tmp_path):
    spec = ak.AttentionSpec(score_mod=ak.alibi(N), mask_mod=ak.sliding_window_mask(3))
    config = keras.saving.serialize_keras_object(spec)
    again = keras.saving.deserialize_keras_object(config)
    assert again.get_config() == spec.get_config() and isinstance(again.score_mod, ak.Alibi)
    inp = keras.Input((T, N, H))
    model = keras.Model(inp, ak.attention(inp, inp, inp, spec=spec, is_causal=True))
    path = str(tmp_path / "spec.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    q = _q(1)
    np.testing.assert_allclose(to_numpy(loaded(q)), to_numpy(model(q)), rtol=1e-6)


def test_multi_head_attention_checks_its_options_once(monkeypatch):
    layer = attnkit.layers.MultiHeadAttention(
        N, 4, sliding_window=3, logit_soft_cap=20.0, score_mod=ak.alibi(N))
    x = np.random.default_rng(2).normal(size=(B, T, 8)).astype("float32")
    layer(x, x)
    calls = []
    monkeypatch.setattr(_checks, "check_options", lambda **kw: calls.append(kw))
    out = layer(x, x, use_causal_mask=True)
    assert calls == []
    assert layer._spec.sliding_window == 3 and layer._spec.logit_soft_cap == 20.0
    assert tuple(out.shape) == (B, T, 8)


@pytest.mark.parametrize("option, value", [
    ("logit_soft_cap", 5.0), ("normalizer", "sparsemax"),
    ("weights_mod", lambda weights: weights), ("score_mod", lambda s, b, h, q, k: s * 2.0)])
def test_the_fused_kernel_refuses_what_it_cannot_run_when_the_spec_is_made(option, value):
    """One list of what the native kernels cannot compute: a spec asking
    for them is refused when made, a layer's flash_attention=True says so
    in its own words, and a call asking for them names the same option."""
    with pytest.raises(ValueError, match=f"implementation='fused'.*{option}"):
        ak.AttentionSpec(implementation="fused", **{option: value})
    with pytest.raises(ValueError, match=f"flash_attention=True.*{option}.*flash_attention=None"):
        attnkit.layers.MultiHeadAttention(num_heads=2, key_dim=4, flash_attention=True,
                                          **{"normalizer" if option == "normalizer" else
                                             option: value})
    q = np.ones((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match=f"'fused' cannot compute this call.*{option}"):
        ak.attention(q, q, q, implementation="fused", **{option: value})
    ak.AttentionSpec(**{option: value})  # the other paths run it
