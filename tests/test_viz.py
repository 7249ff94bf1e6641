"""attnkit.app.plots: heatmaps of attention weights."""

import numpy as np
import pytest

from attnkit.app.plots import plot_attention

pytestmark = pytest.mark.backend_independent


def test_a_heatmap_is_drawn_and_saved(tmp_path):
    weights = np.eye(3)[:2]  # 2 outputs attending to 3 inputs
    fig = plot_attention(weights, list("abc"), list("xy"), title="t", path=tmp_path / "a.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abc")
    assert [t.get_text() for t in ax.get_yticklabels()] == list("xy")
    np.testing.assert_array_equal(ax.images[0].get_array(), weights)
    assert (tmp_path / "a.png").stat().st_size > 0
    with pytest.raises(ValueError, match="does not match 2 y labels by 2 x labels"):
        plot_attention(weights, list("ab"), list("xy"))


def test_an_empty_output_draws_a_labelled_panel_without_warnings(tmp_path):
    """A model that emits the end token first has nothing to plot (warnings
    are errors in the test run: matplotlib warned on the empty heatmap)."""
    fig = plot_attention(np.zeros((0, 4)), list("abcd"), [], path=tmp_path / "e.png")
    ax = fig.axes[0]
    assert not ax.images and [t.get_text() for t in ax.texts] == ["empty output"]
    assert (tmp_path / "e.png").stat().st_size > 0
