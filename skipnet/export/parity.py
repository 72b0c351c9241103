"""Parity: does the exported model, in its real runtime, still predict what the PyTorch model predicted?"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# Float exports: logits within this and the same top-1 everywhere. int8: top-1 agreement at least this.
FLOAT_MAX_ABS_DIFF = 1e-3
INT8_MIN_AGREEMENT = 0.97
# A QAT file against the fake-quantised model it was trained as (the same graph and scales), where
# the file mirrors it op by op in the same integer arithmetic (its record's qat_exact); a runtime
# that rounds in places of its own is held to the int8 criterion.
QAT_MIN_AGREEMENT = 0.99
# Logits are compared as log-probabilities (log-softmax), so a file that outputs probabilities
# (TFLite) compares like one that outputs logits; below this floor both count as equal (a
# probability under 1e-20 is 0 to any client, and float32 softmax underflows further down).
LOG_PROB_FLOOR = float(np.log(1e-20))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.asarray(logits, np.float32)).double().log_softmax(1).numpy()
    return np.maximum(x, LOG_PROB_FLOOR)


@torch.inference_mode()
def parity_report(
    pixel_model_nhwc: nn.Module, backend, pixels: np.ndarray, labels: np.ndarray, precision: str
) -> dict[str, Any]:
    """Compare on ``pixels`` (uint8 N x H x W x 3 real validation images)."""
    ref = pixel_model_nhwc.eval()(torch.from_numpy(pixels)).float().numpy()
    got = np.concatenate([backend.logits(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    report = {
        "images": int(len(pixels)),
        "precision": precision,
        "max_abs_logit_diff": float(np.abs(_log_softmax(ref) - _log_softmax(got)).max()),
        "top1_agreement": agree,
        "torch_top1": float((ref.argmax(1) == labels).mean()),
        "exported_top1": float((got.argmax(1) == labels).mean()),
    }
    if precision == "float32":
        report["passed"] = report["max_abs_logit_diff"] <= FLOAT_MAX_ABS_DIFF and agree == 1.0
        report["criterion"] = f"max |logit diff| (as log-softmax) <= {FLOAT_MAX_ABS_DIFF} and 100% top-1 agreement"
    else:
        report["passed"] = agree >= INT8_MIN_AGREEMENT
        report["criterion"] = f"top-1 agreement >= {INT8_MIN_AGREEMENT:.0%}"
    return report


def qat_verdict(report: dict[str, Any], qat: dict[str, Any], exact: bool) -> dict[str, Any]:
    """A QAT file is checked against the fake-quantised model it was fine-tuned as: fine-tuning
    changes some answers on purpose, so agreement with the run's float model is reported, not required."""
    report = dict(
        report,
        qat={
            k: qat[k]
            for k in (
                "fake_quant_agreement",
                "max_logit_diff_steps",
                "float_top1",
                "fake_quant_top1",
                "int8_top1",
                "holdout",
            )
        },
    )
    least = QAT_MIN_AGREEMENT if exact else INT8_MIN_AGREEMENT  # exact: the backend record's qat_exact
    report["passed"] = qat["fake_quant_agreement"] >= least
    report["criterion"] = (
        f"top-1 agreement with the fake-quantised model it was trained as >= "
        f"{least:.0%} (agreement with the run's float model is reported, not required)"
    )
    return report
