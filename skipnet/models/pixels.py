"""Raw-pixel front end: the form in which models leave PyTorch.

Exported models take raw RGB pixels (0..255) and normalise inside the graph, so an app
feeds camera pixels directly and cannot get the mean/std wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelModel(nn.Module):
    """``model`` behind ``(x / 255 - mean) / std``, folded into one multiply-add.

    ``layout="nhwc"`` takes N x H x W x 3 input (what TFLite apps feed); ``"nchw"`` N x 3 x H x W.
    ``probabilities=True`` ends in a softmax: the class scores phone classifier APIs report.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        layout: str = "nchw",
        probabilities: bool = False,
    ):
        super().__init__()
        self.probabilities = probabilities
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        self.model = model
        self.layout = layout
        mean_t = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        std_t = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw pixels in this model's layout -> the normalised NCHW tensor the wrapped model takes."""
        x = pixels.float()
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        return x * self.scale + self.shift

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(self.normalize(pixels))
        return out.softmax(-1) if self.probabilities else out
