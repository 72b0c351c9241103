"""TFLite via litert-torch. Input NHWC float32 raw pixels 0..255 (the layout Android/iOS apps feed)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..common import UserError, atomic_path


def export_tflite(pixel_model_nhwc: nn.Module, img_size: int, path: Path) -> None:
    try:
        import litert_torch
    except ImportError:
        raise UserError("TFLite export needs litert-torch: pip install 'skipnet-deploy[export]'") from None
    x = torch.rand(1, img_size, img_size, 3) * 255
    # The input permute is folded into the first convolution by the converter: no TRANSPOSE op remains.
    edge = litert_torch.convert(pixel_model_nhwc.eval(), (x,))
    with atomic_path(path) as tmp:
        edge.export(str(tmp))
