"""Matplotlib figures saved as PNG files, headless and atomically.

The analysis pictures (`tf_reid.evaluate --verification`, `tools.visualize_embeddings`,
`tools.visualize_alignment`) draw with matplotlib's Agg backend, so no display is needed, and
save through `save`, so that a reader never finds half a PNG. Matplotlib is imported on first
use: commands that draw nothing do not pay for it.
"""

from __future__ import annotations

from typing import Any

from tfrecords_builder import atomic

DPI = 100


def new_figure(width: float, height: float, columns: int = 1, rows: int = 1
               ) -> tuple[Any, Any]:
    """(figure, axes) of `width` x `height` inches (at DPI) holding rows x columns axes; axes is
    one Axes for 1 x 1, else matplotlib's array of them."""
    # A bare Figure (no pyplot) renders with Agg: no display, no global backend state.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=True)


def save(figure: Any, path: str) -> None:
    """Writes `figure` to `path` as PNG atomically (the parent folder must exist)."""
    with atomic.file(path, suffix=".png") as partial:
        figure.savefig(partial, format="png", dpi=DPI)
