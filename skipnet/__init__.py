"""SkipNet Deploy: train SkipNet with Bias Loss, quantize, export to phones, and measure it.

Public API (imported lazily so that `import skipnet` stays cheap):
    create_model, list_models, load_checkpoint  - skipnet.models
    BiasLoss                                     - skipnet.training
    load                                         - skipnet.runtime (one predictor over run dirs and exported models)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

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


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Registers the registry's published models (skipnet.models.hub.register_timm) with timm right
    after timm is imported, so that `timm.create_model("skipnet_m")` works after `import skipnet`
    without making every `import skipnet` pay for importing timm (seconds); timm has no plugin
    discovery of its own. A library that only asks whether timm is installed
    (`importlib.util.find_spec("timm")`) passes through here too: the finder stays until timm has
    really been loaded."""

    _busy = False

    def find_spec(self, name, path, target=None):
        if name != "timm" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec("timm")  # the real finders (this one declines while busy)
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module, run=run):
                run(module)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                from .models.hub import register_timm

                register_timm()

            spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    from .models.hub import register_timm

    register_timm()
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
