"""keras's own MultiHeadAttention tests, run with attnkit's layer in its place.

The test module ships inside the installed keras wheel. Every test in it runs
here unchanged; during each one, `keras.layers.MultiHeadAttention` (the name
the module calls) is attnkit's class. This includes the tests of keras's
documented override point `_compute_attention` (called directly and
overridden in a subclass), which attnkit's layer honours.
"""

import importlib

import pytest
from keras.src import layers as keras_layers
from keras.src.layers.attention import multi_head_attention_test as upstream

import attnkit

# keras's `test_lora` builds a functional model whose dict keys differ from
# its input names, and on PyTorch reloads an optimizer keras saved without
# variables: keras warns about both with its own layer too.
pytestmark = [
    pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict:UserWarning"),
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning"),
]


class TestKerasMultiHeadAttentionSuite(upstream.MultiHeadAttentionTest):
    """keras's test case, with attnkit's class substituted for keras's."""

    def setUp(self):
        super().setUp()
        self._keras_class = keras_layers.MultiHeadAttention
        keras_layers.MultiHeadAttention = attnkit.layers.MultiHeadAttention

    def tearDown(self):
        keras_layers.MultiHeadAttention = self._keras_class
        super().tearDown()


def test_the_substitution_is_in_place():
    """The suite above really runs attnkit's class (not keras's)."""
    case = TestKerasMultiHeadAttentionSuite("test_basics")
    case.setUp()
    try:
        layer = importlib.import_module("keras.src.layers").MultiHeadAttention(2, 4)
    finally:
        case.tearDown()
    assert isinstance(layer, attnkit.layers.MultiHeadAttention)
    assert keras_layers.MultiHeadAttention is not attnkit.layers.MultiHeadAttention


def test_keras_einsum_equations_are_there_for_code_that_reads_them():
    """Code written against keras's layer (KerasHub's tests among it) reads
    `_dot_product_equation` and `_combine_equation` after build."""
    import keras

    for shape, axes in [((2, 5, 8), None), ((2, 3, 5, 8), (1,)), ((2, 3, 5, 8), (2,)),
                        ((2, 3, 4, 5, 8), (1, 3))]:
        theirs = keras.layers.MultiHeadAttention(2, 4, attention_axes=axes)
        ours = attnkit.layers.MultiHeadAttention(2, 4, attention_axes=axes)
        for layer in (theirs, ours):
            layer.build(shape, shape)
        assert (ours._dot_product_equation, ours._combine_equation) == \
            (theirs._dot_product_equation, theirs._combine_equation)
