"""Parity: does the exported model, in its real runtime, still predict what the PyTorch model predicted?"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# Float exports: logits within this and the same top-1 everywhere. int8: top-1 agreement at least this.
FLOAT_MAX_ABS_DIFF = 1e-3
INT8_MIN_AGREEMENT = 0.97


@torch.inference_mode()
def parity_report(pixel_model_nhwc: nn.Module, backend, pixels: np.ndarray, labels: np.ndarray,
                  precision: str) -> dict[str, Any]:
    """Compare on ``pixels`` (uint8 N x H x W x 3 real validation images)."""
    ref = pixel_model_nhwc.eval()(torch.from_numpy(pixels)).float().numpy()
    got = np.concatenate([backend.logits(pixels[i:i + 64]) for i in range(0, len(pixels), 64)])
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    report = {
        "images": int(len(pixels)),
        "precision": precision,
        "max_abs_logit_diff": float(np.abs(ref - got).max()),
        "top1_agreement": agree,
        "torch_top1": float((ref.argmax(1) == labels).mean()),
        "exported_top1": float((got.argmax(1) == labels).mean()),
    }
    if precision == "float32":
        report["passed"] = report["max_abs_logit_diff"] <= FLOAT_MAX_ABS_DIFF and agree == 1.0
        report["criterion"] = f"max |logit diff| <= {FLOAT_MAX_ABS_DIFF} and 100% top-1 agreement"
    else:
        report["passed"] = agree >= INT8_MIN_AGREEMENT
        report["criterion"] = f"top-1 agreement >= {INT8_MIN_AGREEMENT:.0%}"
    return report
