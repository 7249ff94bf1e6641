"""Attention heatmaps (matplotlib, the `plot` extra)."""

import os
from collections.abc import Sequence

import numpy as np

from attnkit.types import Tensor


def plot_attention(weights: Tensor, x_labels: Sequence[str], y_labels: Sequence[str], *,
                   ax: "matplotlib.axes.Axes | None" = None, title: str | None = None,
                   path: str | os.PathLike | None = None):
    """Draws attention weights as a heatmap.

    Args:
        weights: `(len(y_labels), len(x_labels))`, e.g. output characters
            (rows) against input characters (columns). An empty output
            or input draws a labelled empty panel.
        x_labels: labels of the attended positions (input characters).
        y_labels: labels of the attending positions (output characters).
        ax: a matplotlib Axes to draw into; a new figure when None.
        title: optional title.
        path: optional file to save the figure to (PNG by extension).

    Returns:
        The matplotlib Figure.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "plot_attention needs matplotlib: pip install 'attnkit[plot]'"
        ) from error
    weights = np.asarray(weights, dtype="float32")
    if weights.shape != (len(y_labels), len(x_labels)):
        raise ValueError(
            f"`weights` of shape {weights.shape} does not match "
            f"{len(y_labels)} y labels by {len(x_labels)} x labels."
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(x_labels) + 1.5),
                                        max(3, 0.3 * len(y_labels) + 1.2)))
    else:
        fig = ax.figure
    if weights.size:
        ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(x_labels)), [repr(c)[1:-1] or " " for c in x_labels])
        ax.set_yticks(range(len(y_labels)), list(y_labels))
    else:  # an empty output (the end token first) or input: nothing to draw
        ax.text(0.5, 0.5, "empty output" if not len(y_labels) else "empty input",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    if path is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    return fig
