"""SkipNet Deploy: train SkipNet with Bias Loss, quantize, export to phones, and measure it.

Public API (imported lazily so that `import skipnet` stays cheap):
    create_model, list_models, load_checkpoint  - skipnet.models
    BiasLoss                                     - skipnet.training
    load                                         - skipnet.runtime (one predictor over run dirs and exported models)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "skipnet.models",
    "list_models": "skipnet.models",
    "load_checkpoint": "skipnet.models",
    "BiasLoss": "skipnet.training",
    "load": "skipnet.runtime",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skipnet' has no attribute {name!r}")
