"""Attention heatmaps (matplotlib, the `plot` extra)."""

import numpy as np


def plot_attention(weights, x_labels, y_labels, *, ax=None, title=None,
                   path=None):
    """Draws attention weights as a heatmap.

    Args:
        weights: `(len(y_labels), len(x_labels))`, e.g. output characters
            (rows) against input characters (columns).
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
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(x_labels)), [repr(c)[1:-1] or " " for c in x_labels])
    ax.set_yticks(range(len(y_labels)), list(y_labels))
    ax.tick_params(axis="x", labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    if path is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    return fig
