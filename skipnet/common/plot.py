"""matplotlib for the toolkit's plots (an optional extra): one way to get it, and one way to save."""

from __future__ import annotations

import os

from .errors import UserError
from .io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), or a UserError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'skipnet-deploy[plot]'") from None
    return plt


def save_png(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG at ``path``, whole or not at all, and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    pyplot().close(fig)
